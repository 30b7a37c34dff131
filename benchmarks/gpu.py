"""GPU figures for sparse training, on random data shaped like the paper's datasets.

Printed, with the device name: (1) time per training step of dense and RigL (ΔT = 100,
sparsity 0.9 ERK; RigL's update replaces one step in ΔT) for WRN-22-2 on CIFAR-shaped
(3, 32, 32) batches and ResNet-50 on ImageNet-shaped (3, 224, 224) ones; target RigL <=
1.05x dense. (2) One RigL update of all ResNet-50 masked layers; target <= 20 ms.
(3) Throughput (steps/s, summed) of 1, 2, 4 and 8 small trials (WRN-22-2, batch 128)
packed as separate processes on one GPU, as resources.gpus = 1/k packs them; target at 8
>= 4x a single trial's. On a machine without CUDA it says so and exits 0.

    python benchmarks/gpu.py [--steps 300] [--resnet-batch 64] [--pack 1,2,4,8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainers import methods
from trainers.config import MethodConfig, TrainConfig, TrialConfig
from trainers.models import build_model, masked_layer_names
from trainers.sparsity import erk


def _setup(model_name: str, batch: int, method: str, delta_t: int = 100):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = build_model(model_name).to(dev)
    shape, classes = ((3, 32, 32), 10) if model_name == "wrn22_2" else ((3, 224, 224), 1000)
    x = torch.randn(batch, *shape, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    updater = None
    if method == "rigl":
        params = dict(model.named_parameters())
        weights = {n: params[n] for n in masked_layer_names(model)}
        sparsities = erk({n: tuple(w.shape) for n, w in weights.items()}, 0.9)
        cfg = TrialConfig(
            delta_t=delta_t, method=MethodConfig(name="rigl"), train=TrainConfig(steps=10**6)
        )
        updater = methods.get("rigl").updater(cfg, weights, sparsities)
    return model, x, y, optimizer, updater


def step_time(model_name: str, batch: int, method: str, steps: int) -> float:
    """Seconds per iteration over ``steps`` iterations (after 20 warm-up ones)."""
    model, x, y, optimizer, updater = _setup(model_name, batch, method)
    weights = updater.weights if updater is not None else {}

    def iteration(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        if updater is not None and i % 100 == 0:
            updater.update(i, {n: w.grad for n, w in weights.items()}, optimizer)
            return
        optimizer.step()

    for i in range(1, 21):
        iteration(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        iteration(i)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def update_time(repeats: int = 10) -> float:
    """Median seconds of one RigL update of every masked ResNet-50 layer."""
    model, x, y, optimizer, updater = _setup("resnet50", 16, "rigl", delta_t=1)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    grads = {n: w.grad.clone() for n, w in updater.weights.items()}
    times = []
    for i in range(repeats + 2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        updater.update(i, grads, optimizer)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def _packed_trial(seconds: float, barrier, results) -> None:
    model, x, y, optimizer, _ = _setup("wrn22_2", 128, "dense")
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.cuda.synchronize()
    barrier.wait()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        steps += 1
    torch.cuda.synchronize()
    results.put(steps / (time.perf_counter() - start))


def packed_throughput(k: int, seconds: float = 20.0) -> float:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_packed_trial, args=(seconds, barrier, results)) for _ in range(k)]
    for p in procs:
        p.start()
    rates = [results.get(timeout=seconds + 180) for _ in procs]  # a crashed one: Empty
    for p in procs:
        p.join(60)
    return sum(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--wrn-batch", type=int, default=128)
    parser.add_argument("--resnet-batch", type=int, default=64)
    parser.add_argument("--pack", default="1,2,4,8")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device on this machine; nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(0)}")
    for name, batch in (("wrn22_2", args.wrn_batch), ("resnet50", args.resnet_batch)):
        dense = step_time(name, batch, "dense", args.steps)
        rigl = step_time(name, batch, "rigl", args.steps)
        print(
            f"{name} batch {batch}: dense {dense * 1e3:.2f} ms/step, RigL (ΔT=100) "
            f"{rigl * 1e3:.2f} ms/step, ratio {rigl / dense:.3f} (target <= 1.05)"
        )
    print(f"one RigL update of all ResNet-50 layers: {update_time() * 1e3:.1f} ms (target <= 20)")
    single = None
    for k in (int(v) for v in args.pack.split(",")):
        rate = packed_throughput(k)
        single = single or rate
        print(f"{k} packed WRN-22-2 trials: {rate:.1f} steps/s in all, {rate / single:.2f}x one")
    return 0


if __name__ == "__main__":
    sys.exit(main())

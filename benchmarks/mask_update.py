"""Wall time of one full RigL topology update over every masked layer of ResNet-50.

Side by side, in the same run: one dense training step of the same model (forward,
backward, SGD step) for scale. Target: the update takes at most 1.0 s on a 2-core CPU.

    python benchmarks/mask_update.py [--repeats 5] [--batch 16] [--sparsity 0.8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainers import methods
from trainers.config import MethodConfig, TrainConfig, TrialConfig
from trainers.models import build_model, masked_layer_names
from trainers.sparsity import erk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sparsity", type=float, default=0.8)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("resnet50")
    params = dict(model.named_parameters())
    names = masked_layer_names(model)
    weights = {n: params[n] for n in names}
    sparsities = erk({n: tuple(w.shape) for n, w in weights.items()}, args.sparsity)
    cfg = TrialConfig(
        delta_t=1,
        alpha=0.3,
        seed=0,
        method=MethodConfig(name="rigl"),
        train=TrainConfig(steps=10**6),
    )
    updater = methods.get("rigl").updater(cfg, weights, sparsities)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch, 3, 224, 224)
    y = torch.randint(0, 1000, (args.batch,))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    train_step()  # warm-up; also creates momentum buffers and gradients
    grads = {n: w.grad.clone() for n, w in weights.items()}
    update_times, step_times = [], []
    for step in range(args.repeats):
        start = time.perf_counter()
        updater.update(step, grads, optimizer)
        update_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        train_step()
        step_times.append(time.perf_counter() - start)

    total = sum(w.numel() for w in weights.values())
    print(
        f"ResNet-50, {len(weights)} masked layers, {total:,} maskable weights, ERK "
        f"sparsity {args.sparsity}, drop fraction {updater.drop_fraction(0):.2f}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"rigl topology update      median {statistics.median(update_times):.3f} s  "
        f"(min {min(update_times):.3f} s, target <= 1.0 s)"
    )
    print(
        f"dense train step (b={args.batch})  median {statistics.median(step_times):.3f} s  "
        f"(min {min(step_times):.3f} s)"
    )
    print(
        f"update / dense step       {statistics.median(update_times) / statistics.median(step_times):.2f}"
    )


if __name__ == "__main__":
    main()

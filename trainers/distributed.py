"""Data parallelism for one trial: N processes (ranks) in one torch.distributed group.

What the loop gets from here (``current()`` returns None for a single process, and then
nothing below runs, so the single-worker path is exactly today's):

* **Data**: ``train.batch_size`` is the *global* batch B. Every rank draws the same global
  batch from the same seeded stream and keeps its contiguous slice of B / N samples, so the
  stream's state is identical on every rank (rank 0's checkpoint restores them all) and
  the trial sees the data in the order a single worker would.
* **Gradients**: after each backward the gradients are averaged over ranks (one
  all-reduce per device and dtype), before clipping, the optimizer step and any topology
  update. With a loss that is a mean over the local batch, the average is the gradient of
  the mean over the global batch: RigL's grow scores read the all-reduced dense gradient.
* **Topology**: every rank runs the same update on identical inputs: the same weights
  (broadcast from rank 0 at the start, then changed by identical steps), the same
  all-reduced gradient (an all-reduce leaves bit-identical results on every rank) and the
  updater's own seeded generator (SET's random growth, tie-breaking), so the drop/grow
  decision and the optimizer-state reset happen identically everywhere without sending
  masks. ``check_masks`` proves it after every update: a CRC-32 of every layer's mask is
  gathered from all ranks and any difference stops the trial with ``MaskMismatchError``
  naming the layer and the ranks.
"""

from __future__ import annotations

import contextlib
import socket
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from trainers.data.base import Batch, BatchStream


class MaskMismatchError(RuntimeError):
    """Ranks of one trial hold different masks; the message names the layers and ranks."""


class PeerLostError(RuntimeError):
    """A collective failed: another rank of the trial died or its connection broke.

    The trial's own code did not fail here, so a launcher retries the attempt as for a
    lost worker. (Gloo and NCCL report a lost peer as a plain RuntimeError.)"""


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failure of the collective ``what`` into a PeerLostError."""
    try:
        yield
    except RuntimeError as exc:
        raise PeerLostError(f"{what} across the trial's ranks failed: {exc}") from exc


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the trial's process group."""

    rank: int
    world_size: int
    device: torch.device
    """Where collectives run: the current CUDA device under NCCL, else the CPU."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports to the tracker and writes checkpoints."""
        return self.rank == 0

    def shard(self, stream: BatchStream) -> BatchStream:
        """This rank's slice of each global batch of ``stream``."""
        return ShardedStream(stream, self.rank, self.world_size)

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.detach().to(self.device)
            with collective("broadcast"):
                dist.broadcast(buf, src=0)
            if buf is not t:
                t.copy_(buf)

    @torch.no_grad()
    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (one all-reduce per device/dtype)."""
        groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
            with collective("all-reduce"):
                dist.all_reduce(flat)
            flat.div_(self.world_size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def mean(self, value: float) -> float:
        """The mean of a Python float over ranks (e.g. the loss of the global batch)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        with collective("all-reduce"):
            dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def check_masks(self, masks: Mapping[str, torch.Tensor], step: int) -> None:
        """Raise MaskMismatchError (on every rank) unless all ranks hold the same masks."""
        names = list(masks)
        local = torch.tensor([mask_checksum(masks[n]) for n in names], dtype=torch.int64)
        local = local.to(self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        with collective("all-gather"):
            dist.all_gather(gathered, local)
        table = torch.stack(gathered).cpu()
        differ = (table != table[0]).any(dim=0)
        if bool(differ.any()):
            lines = [
                f"  {names[i]}: ranks {[r for r in range(self.world_size) if table[r, i] != table[0, i]]}"
                f" differ from rank 0 (CRC-32 by rank: {table[:, i].tolist()})"
                for i in torch.nonzero(differ).flatten().tolist()
            ]
            raise MaskMismatchError(
                f"masks differ across the {self.world_size} ranks after the topology update "
                f"at step {step}; the trial is stopped:\n" + "\n".join(lines)
            )

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank (other ranks pass None)."""
        size = torch.tensor([len(data) if self.is_main and data else 0], device=self.device)
        with collective("broadcast"):
            dist.broadcast(size, src=0)
        if not size.item():
            return b""
        if self.is_main and data:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        else:
            buf = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        with collective("broadcast"):
            dist.broadcast(buf, src=0)
        return bytes(buf.cpu().numpy().tobytes())


def mask_checksum(mask: torch.Tensor) -> int:
    """CRC-32 of a mask's bits in row-major order, its element count in the high bits."""
    bits = mask.detach().to("cpu", torch.bool).numpy().reshape(-1)
    return zlib.crc32(np.packbits(bits).tobytes()) ^ (bits.size << 32)


class ShardedStream:
    """Rank ``rank`` of ``world_size``'s contiguous slice of each batch of ``stream``.

    The underlying stream yields global batches; its state is the state of this stream,
    identical on every rank, so any rank's checkpoint resumes all of them exactly.
    """

    def __init__(self, stream: BatchStream, rank: int, world_size: int) -> None:
        self._stream, self._rank, self._world = stream, rank, world_size

    def next_batch(self) -> Batch:
        x, y = self._stream.next_batch()
        n = len(y) // self._world
        if n * self._world != len(y):
            raise ValueError(f"a batch of {len(y)} does not split over {self._world} ranks")
        lo, hi = self._rank * n, (self._rank + 1) * n
        return x[lo:hi], y[lo:hi]

    def state_dict(self) -> dict:
        return self._stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._stream.load_state_dict(state)


def current() -> DataParallel | None:
    """This process's DataParallel if it is one of several in a process group, else None."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_group(rank: int, world_size: int, port: int, *, timeout_s: float = 300.0) -> str:
    """Join the trial's process group at 127.0.0.1:``port``; returns the backend.

    NCCL when there is a CUDA device per rank (rank r uses cuda:r), gloo otherwise. A rank
    that waits longer than ``timeout_s`` for its peers (one died) raises instead of hanging.
    """
    backend = "nccl" if torch.cuda.device_count() >= world_size else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return backend

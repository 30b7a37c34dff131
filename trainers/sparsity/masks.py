"""Masks with exact counts (SPEC §1, §3).

Every mask of a layer with N entries and sparsity s has exactly ``N - floor(s N)`` ones;
nothing is Bernoulli-sampled. Positions come from a seeded generator, so identical seeds
give bit-identical masks in every process of a trial.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch


def num_zeros(sparsity: float, numel: int) -> int:
    """floor(s * N), robust to binary rounding (0.29 * 100 is 28.999... in floating point)."""
    return math.floor(round(sparsity * numel, 9))


def num_active(sparsity: float, numel: int) -> int:
    """N - floor(s * N): the number of ones in a mask of sparsity s."""
    return numel - num_zeros(sparsity, numel)


def realised_sparsity(sparsity: float, numel: int) -> float:
    """The sparsity a mask of target ``sparsity`` really has: 1 - (N - floor(sN)) / N."""
    return 1.0 - num_active(sparsity, numel) / numel if numel else 0.0


def random_mask(
    shape: tuple[int, ...],
    sparsity: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A bool mask of ``shape`` with exactly N - floor(sN) ones at seeded random positions."""
    numel = math.prod(shape)
    order = torch.randperm(numel, generator=generator)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[order[: num_active(sparsity, numel)]] = True
    return mask.view(shape).to(device)


def random_masks(
    shapes: Mapping[str, tuple[int, ...]],
    sparsities: Mapping[str, float],
    seed: int,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """One random mask per layer of ``sparsities``, drawn in order from one generator."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: random_mask(tuple(shapes[name]), s, generator, device)
        for name, s in sparsities.items()
    }


def select(
    scores: torch.Tensor, k: int, *, largest: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Flat bool mask of the k largest (or smallest) entries of a flat tensor.

    See ``select_indices`` for the selection and its tie-breaking.
    """
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[select_indices(scores, k, largest=largest, generator=generator)] = True
    return chosen


def select_indices(
    scores: torch.Tensor, k: int, *, largest: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Indices (int64, in no particular order) of the k largest (or smallest) entries.

    The k-th value is found with one partial top-k (never a full sort); entries strictly
    beyond it are taken, and the rest of the k come from the entries tied with it:
    chosen by a seeded permutation of the tied set, or lowest index first without a
    generator. Identical inputs and generator states give identical selections on every
    rank.
    """
    n = scores.numel()
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    if k >= n:
        return torch.arange(n, device=scores.device)
    # Take one more than asked: when the (k+1)-th value is strictly worse than the k-th,
    # nothing outside the top k ties with it and top-k's own indices are the answer,
    # sparing several full passes over ``scores`` (the common case). torch.topk (a
    # partial selection, unsorted) is at least as fast as kthvalue here for every k.
    values, indices = _top(scores, k + 1, largest)
    last_two, at = torch.topk(values, 2, largest=not largest)  # (k+1)-th, k-th
    if last_two[0] != last_two[1]:
        keep = torch.ones(k + 1, dtype=torch.bool, device=scores.device)
        keep[at[0]] = False
        return indices[keep]
    threshold = last_two[1]
    beyond = (scores > threshold if largest else scores < threshold).nonzero().view(-1)
    tied = (scores == threshold).nonzero().view(-1)
    missing = k - beyond.numel()
    if missing < tied.numel():
        order = (
            torch.randperm(tied.numel(), generator=generator).to(tied.device)
            if generator is not None
            else torch.arange(tied.numel(), device=tied.device)
        )
        tied = tied[order[:missing]]
    return torch.cat([beyond, tied])


_SAMPLE = 4096


def _top(scores: torch.Tensor, m: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The m largest (or smallest) entries as torch.topk(sorted=False) gives them, faster
    on large CPU tensors: ranking only the entries beyond a sampled threshold when m is
    a small part of n, and steering around a slow path of the CPU kernel."""
    n = scores.numel()
    if scores.device.type == "cpu" and n >= 16 * _SAMPLE and m <= n // 8:
        found = _top_beyond_sampled_threshold(scores, m, largest)
        if found is not None:
            return found
    return _topk(scores, m, largest)


def _top_beyond_sampled_threshold(
    scores: torch.Tensor, m: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exact top m among the entries at or beyond a threshold estimated from a sample.

    Every entry left out is strictly worse than every candidate, so once there are at
    least m candidates the top m are among them. The sample comes from a generator
    seeded by n alone: the result is a function of ``scores`` and consumes no caller's
    random state. None when the estimate was too strict (then rank everything).
    """
    n = scores.numel()
    positions = torch.randint(n, (_SAMPLE,), generator=torch.Generator().manual_seed(n))
    # Aim for about twice m candidates, with slack for the sampling error.
    rank = min(_SAMPLE, math.ceil(2 * m * _SAMPLE / n) + 32)
    sample = torch.topk(scores[positions], rank, largest=largest, sorted=False).values
    if largest:
        candidates = (scores >= sample.min()).nonzero().view(-1)
    else:
        candidates = (scores <= sample.max()).nonzero().view(-1)
    if candidates.numel() < m:
        return None
    values, inner = _topk(scores[candidates], m, largest)
    return values, candidates[inner]


def _topk(scores: torch.Tensor, m: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(scores, m, sorted=False), steered past a slow path of the CPU kernel.

    On CPU, torch.topk uses a heap-based partial sort when 64·m <= n and nth_element
    otherwise; for m between ~n/256 and n/64 the heap is up to twice as slow as
    nth_element over the whole tensor (measured, torch 2.14, 235k entries: m = 2000
    takes 1.3 ms, m = 3700 takes 0.9 ms). There, take the top n/64 + 1 with
    nth_element and the top m of those.
    """
    n = scores.numel()
    if scores.device.type == "cpu" and n // 256 < m and 64 * m <= n:
        values, indices = torch.topk(scores, n // 64 + 1, largest=largest, sorted=False)
        values, inner = torch.topk(values, m, largest=largest, sorted=False)
        return values, indices[inner]
    return torch.topk(scores, m, largest=largest, sorted=False)


def mask_checksum(masks: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over layer names, shapes and mask bits: equal iff the masks are identical."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().to("cpu", torch.bool).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(mask.shape)).encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


def sparsity_of(mask: torch.Tensor) -> float:
    """Fraction of zeros of a mask (the realised sparsity)."""
    return 1.0 - int(mask.sum()) / mask.numel()

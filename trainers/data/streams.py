"""Seeded, resumable batch streams over in-memory tensors and byte corpora."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainers.data.base import Batch, seeded_generator

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a permutation of range(n), int64 (n,)."""
    return torch.randperm(n, generator=seeded_generator(seed, "order", epoch))


class EpochOrder:
    """Where a stream stands in an endless run of epochs, each a seeded permutation of
    range(n). A batch that reaches the end of an epoch is completed from the next one, so
    every sample is seen once per epoch and every batch is full."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"cannot draw batches from an empty split (n={n})")
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_permutation(self.n, self.seed, epoch))
        return self._cached[1]

    def take(self, k: int) -> torch.Tensor:
        """The next k sample indices, int64 (k,); advances the position."""
        parts = []
        while k > 0:
            chunk = self.permutation(self.epoch)[self.position : self.position + k]
            parts.append(chunk)
            k -= len(chunk)
            self.advance(len(chunk))
        return torch.cat(parts)

    def advance(self, k: int) -> None:
        self.position += k
        self.epoch += self.position // self.n
        self.position %= self.n

    def upcoming(self) -> Iterator[tuple[int, int, int]]:
        """(epoch, position, sample index) from the current position on, forever, without
        advancing it; the start is fixed when this is called, not when iteration begins."""
        n, seed = self.n, self.seed

        def walk(epoch: int, position: int) -> Iterator[tuple[int, int, int]]:
            while True:
                perm = epoch_permutation(n, seed, epoch).tolist()
                for pos in range(position, n):
                    yield epoch, pos, perm[pos]
                epoch, position = epoch + 1, 0

        return walk(self.epoch, self.position)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._cached = None


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, C, H, W) in [0, 255] -> float32 ((x / 255) - mean) / std per channel;
    mean and std are float32 (C,)."""
    x = images.to(torch.float32).div_(255)
    return x.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def pad_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation, batch-wise: zero-pad each side by `pad` pixels, take
    a random crop of the original size, then flip horizontally with probability 0.5.

    images: (B, C, H, W), any dtype (uint8 before normalisation, so the padding is black as
    in torchvision's RandomCrop(32, padding=4)). Draws from `generator` in a fixed order:
    row offsets (B,), column offsets (B,), flips (B,).
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    return padded[
        torch.arange(b)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


Normalize = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images (B, C, H, W) -> the float batch the model sees."""


class ImageStream:
    """Training batches from images held in memory: uint8 (N, C, H, W) and int64 labels (N,).

    Each batch takes the next `batch_size` indices of the epoch order and normalises them
    with `normalize`; `augment` (if given) runs with the stream's own generator on the uint8
    pixels before that, or on the normalised ones with `augment_first=False` (the
    reference's order for CIFAR-10). The state is the order position and the augmentation
    generator's state, so resume is bit-exact.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalize: Normalize,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
        *,
        augment_first: bool = True,
    ) -> None:
        self._images, self._labels = images, labels
        self._normalize = normalize
        self._batch_size = batch_size
        self._augment = augment
        self._augment_first = augment_first
        self._order = EpochOrder(len(labels), seed)
        self._augment_rng = seeded_generator(seed, "augment")

    def next_batch(self) -> Batch:
        idx = self._order.take(self._batch_size)
        x = self._images[idx]
        if self._augment is not None and self._augment_first:
            x = self._augment(x, self._augment_rng)
        x = self._normalize(x)
        if self._augment is not None and not self._augment_first:
            x = self._augment(x, self._augment_rng)
        return x, self._labels[idx]

    def state_dict(self) -> dict:
        return {**self._order.state_dict(), "augment_rng": self._augment_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._order.load_state_dict(state)
        self._augment_rng.set_state(state["augment_rng"])


def image_eval_batches(
    images: torch.Tensor, labels: torch.Tensor, normalize: Normalize, batch_size: int
) -> Iterator[Batch]:
    """Consecutive batches over in-memory uint8 images, normalised, in stored order."""
    for start in range(0, len(labels), batch_size):
        yield normalize(images[start : start + batch_size]), labels[start : start + batch_size]


def _windows(corpus: np.ndarray, starts: np.ndarray, seq_len: int) -> Batch:
    idx = starts[:, None] + np.arange(seq_len + 1)
    w = torch.from_numpy(np.asarray(corpus[idx], dtype=np.int64))
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class WindowStream:
    """Training batches of byte windows from a uint8 corpus (n,) (an array or np.memmap).

    Each sample is seq_len + 1 consecutive bytes at an offset drawn uniformly from
    [0, n - seq_len) by the stream's generator: inputs are the first seq_len bytes, targets
    the next byte at each position; both int64 (B, seq_len). The state is the generator's.
    """

    def __init__(self, corpus: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        self._corpus = corpus
        self._seq_len = seq_len
        self._batch_size = batch_size
        self._rng = seeded_generator(seed, "windows")

    def next_batch(self) -> Batch:
        high = len(self._corpus) - self._seq_len
        starts = torch.randint(0, high, (self._batch_size,), generator=self._rng)
        return _windows(self._corpus, starts.numpy(), self._seq_len)

    def state_dict(self) -> dict:
        return {"rng": self._rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._rng.set_state(state["rng"])


def num_eval_windows(n: int, seq_len: int, max_windows: int) -> int:
    """How many non-overlapping windows (stride seq_len) `window_eval_batches` yields."""
    return min((n - 1) // seq_len, max_windows)


def window_eval_batches(
    corpus: np.ndarray, seq_len: int, max_windows: int, batch_size: int
) -> Iterator[Batch]:
    """Consecutive windows from the start of the corpus with stride seq_len, so the targets
    cover each predicted byte once; at most `max_windows` of them."""
    count = num_eval_windows(len(corpus), seq_len, max_windows)
    for first in range(0, count, batch_size):
        starts = np.arange(first, min(first + batch_size, count)) * seq_len
        yield _windows(corpus, starts, seq_len)

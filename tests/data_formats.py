"""Writers of the datasets' real on-disk formats (MNIST IDX, CIFAR-10 python and binary,
ImageFolder, WikiText), small, for the data tests, and the contract every training stream keeps."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainers.data import DataBundle


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as in the MNIST distribution: big-endian magic (0x08 = uint8, then the number of
    dimensions; 2051 for images, 2049 for labels), one big-endian uint32 per dimension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, rng: np.random.Generator, n_train: int = 12, n_test: int = 5):
    raw = root / "MNIST" / "raw"
    splits = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        splits[prefix] = (images, labels)
    return splits


def py2_pickle(obj: dict) -> bytes:
    """Protocol-2 pickle whose dict keys are Python 2 byte strings (SHORT_BINSTRING), as in
    the CIFAR-10 python batches: encoding="bytes" gives b'data', encoding="latin1" 'data'."""
    raw = pickle.dumps(obj, protocol=2)
    ops = list(pickletools.genops(raw))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(raw)
        if op.name == "BINUNICODE" and arg in obj:
            key = arg.encode("latin1")
            out += b"U" + bytes([len(key)]) + key
        else:
            out += raw[pos:end]
    return bytes(out)


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def cifar_arrays(rng: np.random.Generator, per_batch: int = 6, n_test: int = 4):
    """Pixel rows (N, 3072) and labels (N,) for five training batches and the test batch."""
    batches = [
        (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        for n in [per_batch] * 5 + [n_test]
    ]
    return batches[:5], batches[5]


def write_cifar_python(root: Path, train, test) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = [(f"data_batch_{i + 1}", b) for i, b in enumerate(train)] + [("test_batch", test)]
    for name, (data, labels) in files:
        entry = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
        }
        (folder / name).write_bytes(py2_pickle(entry))
    meta = {"label_names": CIFAR_NAMES, "num_cases_per_batch": len(train[0][1]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))


def write_cifar_binary(root: Path, train, test) -> None:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    files = [(f"data_batch_{i + 1}.bin", b) for i, b in enumerate(train)]
    for name, (data, labels) in [*files, ("test_batch.bin", test)]:
        (folder / name).write_bytes(np.concatenate([labels[:, None], data], axis=1).tobytes())


def write_image_folder(root: Path, rng: np.random.Generator, counts: dict[str, int]) -> None:
    for i, (cls, n) in enumerate(sorted(counts.items())):
        (root / cls).mkdir(parents=True)
        for j in range(n):
            pixels = rng.integers(0, 256, (12 + j, 16 + i, 3), dtype=np.uint8)
            ext = "png" if j % 2 else "jpg"
            Image.fromarray(pixels).save(root / cls / f"{cls}_{j}.{ext}")


def write_wikitext(folder: Path, rng: np.random.Generator, n_train=3000, n_valid=500):
    folder.mkdir(parents=True, exist_ok=True)
    train = rng.integers(0, 256, n_train, dtype=np.uint8).tobytes()
    valid = rng.integers(0, 256, n_valid, dtype=np.uint8).tobytes()
    (folder / "wiki.train.raw").write_bytes(train)
    (folder / "wiki.valid.raw").write_bytes(valid)
    return train, valid


def normalized(pixels: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(pixels).float() / 255
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def standardized(pixels: np.ndarray) -> torch.Tensor:
    """tf.image.per_image_standardization in numpy (float64): per image, subtract the mean
    and divide by max(population std, 1 / sqrt(number of elements))."""
    x = pixels.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    std = np.maximum(x.std(axis=axes, keepdims=True), 1 / np.sqrt(np.prod(x.shape[1:])))
    return torch.from_numpy((x - x.mean(axis=axes, keepdims=True)) / std).float()


def draw(stream, k):
    return [stream.next_batch() for _ in range(k)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def check_stream_contract(bundle: DataBundle, batch_size: int, before: int, after: int):
    """Equal seeds agree, different seeds differ, and resume from a saved state is exact."""
    a, b = bundle.train_stream(batch_size, seed=3), bundle.train_stream(batch_size, seed=3)
    assert same(draw(a, 2), draw(b, 2))
    other = draw(bundle.train_stream(batch_size, seed=4), 2)
    assert not same(draw(bundle.train_stream(batch_size, seed=3), 2), other)

    stream = bundle.train_stream(batch_size, seed=7)
    draw(stream, before)
    state = roundtrip(stream.state_dict())
    uninterrupted = draw(stream, after)
    resumed = bundle.train_stream(batch_size, seed=7)
    resumed.load_state_dict(state)
    assert same(draw(resumed, after), uninterrupted)

"""trainers.data: the embedded datasets, the readers of real on-disk formats (written small
into tmp_path), and the seeded streams that must resume exactly."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.config import ConfigError, DataConfig
from trainers.data import DATASETS, DataBundle, DataError, build_data
from trainers.data.images import mnist5k_arrays, mnist5k_split
from trainers.data.streams import EpochOrder, num_eval_windows, pad_crop_flip
from trainers.data.text import pydoc_corpus

# --- writers of the real on-disk formats -------------------------------------------------


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


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k() -> DataBundle:
    return build_data(DataConfig(name="mnist5k"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def cifar_root(tmp_path, rng):
    train, test = cifar_arrays(rng)
    write_cifar_binary(tmp_path, train, test)
    return tmp_path, train, test


@pytest.fixture
def imagenet_root(tmp_path, rng):
    write_image_folder(tmp_path / "train", rng, {"n01": 3, "n02": 4})
    write_image_folder(tmp_path / "val", rng, {"n01": 2, "n02": 1})
    return tmp_path


# --- mnist5k ----------------------------------------------------------------------------


def test_mnist5k_sizes_shapes_dtypes(mnist5k):
    assert (mnist5k.name, mnist5k.kind, mnist5k.num_classes) == ("mnist5k", "image", 10)
    assert mnist5k.input_shape == (1, 28, 28)
    assert (mnist5k.train_size, mnist5k.eval_size) == (4000, 1000)
    x, y = mnist5k.train_stream(batch_size=32, seed=0).next_batch()
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert x.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert x.max().item() <= (1 - 0.1307) / 0.3081 + 1e-5


def test_mnist5k_split_is_fixed_disjoint_and_balanced():
    train, eval_ = mnist5k_split()
    assert len(set(train.tolist()) | set(eval_.tolist())) == 5000
    assert not set(train.tolist()) & set(eval_.tolist())
    # Pinned: any change to the split would silently change every reported number.
    assert train[:5].tolist() == [398, 3833, 4836, 4572, 636]
    assert eval_[:5].tolist() == [3344, 114, 1816, 1594, 957]
    images, labels = mnist5k_arrays()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.arange(10).repeat_interleave(500))
    counts = np.bincount(labels.numpy()[eval_], minlength=10)
    assert counts.tolist() == [101, 106, 92, 100, 101, 101, 113, 94, 90, 102]
    assert all(360 <= c <= 440 for c in np.bincount(labels.numpy()[train]))
    assert mnist5k_arrays() is mnist5k_arrays()


def test_mnist5k_eval_is_the_eval_split_in_fixed_order(mnist5k):
    first = list(mnist5k.eval_batches(300))
    assert [len(y) for _, y in first] == [300, 300, 300, 100]
    second = list(mnist5k.eval_batches(300))
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )
    images, labels = mnist5k_arrays()
    _, eval_ = mnist5k_split()
    assert torch.equal(torch.cat([y for _, y in first]), labels[eval_])
    expected = normalized(images[eval_[:300]].numpy(), (0.1307,), (0.3081,))
    assert torch.allclose(first[0][0], expected, atol=1e-6)


# --- streams ------------------------------------------------------------------------------


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


def test_mnist5k_stream_contract_across_epoch_boundaries(mnist5k):
    # 4,000 / 300 is not whole: batches straddle epochs both before and after the save.
    check_stream_contract(mnist5k, batch_size=300, before=14, after=14)


def test_epoch_order_visits_every_sample_once_per_epoch():
    order = EpochOrder(10, seed=5)
    drawn = torch.cat([order.take(7) for _ in range(10)])
    epochs = drawn.view(7, 10)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(10))
    assert len({tuple(e.tolist()) for e in epochs}) > 1
    assert (order.epoch, order.position) == (7, 0)
    small = EpochOrder(3, seed=0)
    larger_than_n = small.take(8)
    assert sorted(larger_than_n[:3].tolist()) == sorted(larger_than_n[3:6].tolist()) == [0, 1, 2]
    assert (small.epoch, small.position) == (2, 2)


def test_state_dict_holds_only_plain_values(mnist5k):
    state = mnist5k.train_stream(8, seed=0).state_dict()
    allowed = (int, float, str, list, torch.Tensor)
    assert all(isinstance(v, allowed) for v in state.values())


# --- MNIST from disk ----------------------------------------------------------------------


def test_mnist_reads_idx_files(tmp_path, rng):
    splits = write_mnist(tmp_path, rng)
    bundle = build_data(DataConfig(name="mnist", root=str(tmp_path)))
    assert (bundle.train_size, bundle.eval_size, bundle.input_shape) == (12, 5, (1, 28, 28))
    ((x, y),) = bundle.eval_batches(64)
    images, labels = splits["t10k"]
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert torch.allclose(x, normalized(images[:, None], (0.1307,), (0.3081,)), atol=1e-6)
    check_stream_contract(bundle, batch_size=5, before=3, after=4)


def test_mnist_malformed_files_name_the_path(tmp_path, rng):
    write_mnist(tmp_path, rng)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="mnist", root=str(tmp_path)))
    assert f"cannot read {path}" in str(err.value)


def test_mnist_labels_in_place_of_images_is_an_error(tmp_path, rng):
    write_mnist(tmp_path, rng)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: ValueError"):
        build_data(DataConfig(name="mnist", root=str(tmp_path)))


def test_mnist_root_without_files_names_the_missing_paths(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="mnist", root=str(tmp_path)))
    assert str(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in str(err.value)
    assert "Expected layout" in str(err.value)


# --- CIFAR-10 from disk -------------------------------------------------------------------


def test_cifar_python_and_binary_versions_read_the_same_data(tmp_path, rng):
    train, test = cifar_arrays(rng)
    write_cifar_python(tmp_path / "py", train, test)
    write_cifar_binary(tmp_path / "bin", train, test)
    blob = (tmp_path / "py" / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert b"data" in pickle.loads(blob, encoding="bytes")
    bundles = [
        build_data(DataConfig(name="cifar10", root=str(tmp_path / v), augment=False))
        for v in ("py", "bin")
    ]
    for bundle in bundles:
        assert (bundle.train_size, bundle.eval_size, bundle.input_shape) == (30, 4, (3, 32, 32))
        ((x, y),) = bundle.eval_batches(10)
        assert torch.equal(y, torch.from_numpy(test[1].astype(np.int64)))
        # Standardised per image, as the reference's input_fn (data_helper.py).
        expected = standardized(test[0].reshape(-1, 3, 32, 32))
        assert torch.allclose(x, expected, atol=1e-5)
    streams = [b.train_stream(7, seed=0) for b in bundles]
    assert same(draw(streams[0], 5), draw(streams[1], 5))


def test_cifar_augmented_stream_contract(cifar_root):
    root, _, _ = cifar_root
    bundle = build_data(DataConfig(name="cifar10", root=str(root), augment=True))
    check_stream_contract(bundle, batch_size=8, before=5, after=6)


def test_augmentation_changes_pixels_not_shapes_or_labels(cifar_root):
    root = str(cifar_root[0])
    plain = build_data(DataConfig(name="cifar10", root=root, augment=False))
    augmented = build_data(DataConfig(name="cifar10", root=root, augment=True))
    ((xp, yp),) = draw(plain.train_stream(30, seed=1), 1)
    ((xa, ya),) = draw(augmented.train_stream(30, seed=1), 1)
    assert xa.shape == xp.shape == (30, 3, 32, 32) and xa.dtype == torch.float32
    assert torch.equal(ya, yp)
    assert not torch.equal(xa, xp)
    assert same(list(augmented.eval_batches(8)), list(plain.eval_batches(8)))


def test_pad_crop_flip_matches_torchvision_functional(rng):
    from torchvision.transforms import functional as TF

    images = torch.from_numpy(rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8))
    generator = torch.Generator().manual_seed(0)
    replay = torch.Generator().manual_seed(0)
    out = pad_crop_flip(images, generator)
    dy = torch.randint(0, 9, (16,), generator=replay)
    dx = torch.randint(0, 9, (16,), generator=replay)
    flip = torch.rand(16, generator=replay) < 0.5
    for i in range(16):
        ref = TF.crop(TF.pad(images[i], [4]), int(dy[i]), int(dx[i]), 32, 32)
        assert torch.equal(out[i], TF.hflip(ref) if flip[i] else ref)
    assert 0 < int(flip.sum()) < 16


def test_cifar_record_size_is_checked(cifar_root):
    root, _, _ = cifar_root
    bad = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="cifar10", root=str(root)))
    assert str(bad) in str(err.value) and "3073" in str(err.value)


def test_cifar_without_either_version_names_both(tmp_path):
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert str(tmp_path / "cifar-10-batches-bin") in str(err.value)


# --- ImageNet (ImageFolder) ------------------------------------------------------------------


def test_imagenet_folder_bundle(imagenet_root):
    bundle = build_data(DataConfig(name="imagenet", root=str(imagenet_root)))
    assert (bundle.num_classes, bundle.train_size, bundle.eval_size) == (2, 7, 3)
    assert bundle.input_shape == (3, 224, 224)
    x, y = bundle.train_stream(4, seed=0).next_batch()
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    batches = list(bundle.eval_batches(2))
    assert [len(y) for _, y in batches] == [2, 1]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 1]
    check_stream_contract(bundle, batch_size=3, before=2, after=3)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_imagenet_batches_do_not_depend_on_workers(imagenet_root):
    batches = []
    for workers in (0, 1):
        cfg = DataConfig(name="imagenet", root=str(imagenet_root), num_workers=workers)
        batches.append(draw(build_data(cfg).train_stream(3, seed=2), 3))
    assert same(*batches)


def test_imagenet_val_classes_must_match(imagenet_root):
    (imagenet_root / "val" / "n03").mkdir()
    Image.new("RGB", (8, 8)).save(imagenet_root / "val" / "n03" / "a.png")
    with pytest.raises(DataError, match="class folders"):
        build_data(DataConfig(name="imagenet", root=str(imagenet_root)))


def test_imagenet_missing_val_names_the_path(tmp_path, rng):
    write_image_folder(tmp_path / "train", rng, {"n01": 1})
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="imagenet", root=str(tmp_path)))
    assert str(tmp_path / "val") in str(err.value)


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [True, False])
def test_wikitext_windows(tmp_path, rng, nested):
    train, valid = write_wikitext(tmp_path / "wikitext-103-raw" if nested else tmp_path, rng)
    bundle = build_data(DataConfig(name="wikitext103", root=str(tmp_path), seq_len=16))
    assert (bundle.kind, bundle.num_classes, bundle.input_shape) == ("text", 256, (16,))
    assert bundle.train_size == 3000 - 16
    x, y = bundle.train_stream(8, seed=0).next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        assert bytes([*row_x.tolist(), row_y[-1].item()]) in train

    assert bundle.eval_size == (500 - 1) // 16
    batches = list(bundle.eval_batches(10))
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    n = bundle.eval_size * 16
    assert bytes(xs.flatten().tolist()) == valid[:n]
    assert bytes(ys.flatten().tolist()) == valid[1 : n + 1]


def test_wikitext_stream_contract(tmp_path, rng):
    write_wikitext(tmp_path, rng)
    bundle = build_data(DataConfig(name="wikitext103", root=str(tmp_path), seq_len=16))
    check_stream_contract(bundle, batch_size=4, before=3, after=3)


def test_wikitext_file_too_short_names_the_path(tmp_path, rng):
    write_wikitext(tmp_path, rng, n_valid=10)
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="wikitext103", root=str(tmp_path), seq_len=16))
    assert str(tmp_path / "wiki.valid.raw") in str(err.value)


def test_eval_windows_are_capped():
    assert num_eval_windows(10**6, 128, 1000) == 1000
    assert num_eval_windows(129, 128, 1000) == 1


def test_pydoc_text_is_embedded_and_split_90_10():
    bundle = build_data(DataConfig(name="pydoc_text", seq_len=64))
    corpus = pydoc_corpus()
    corpus.tobytes().decode("utf-8")
    assert len(corpus) > 300_000
    n_eval = round(len(corpus) * 0.1)
    assert bundle.train_size == len(corpus) - n_eval - 64
    assert bundle.eval_size == (n_eval - 1) // 64
    (x, y), *_ = bundle.eval_batches(4)
    eval_bytes = corpus[len(corpus) - n_eval :].tobytes()
    assert bytes(x.flatten().tolist()) == eval_bytes[: 4 * 64]
    check_stream_contract(bundle, batch_size=4, before=2, after=3)


def test_pydoc_text_seq_len_longer_than_eval_split_is_a_config_error():
    with pytest.raises(ConfigError, match="data.seq_len"):
        build_data(DataConfig(name="pydoc_text", seq_len=10**6))


# --- errors ---------------------------------------------------------------------------------


def test_registry_names():
    assert set(DATASETS) == {"mnist5k", "mnist", "cifar10", "imagenet", "wikitext103", "pydoc_text"}


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        build_data(DataConfig(name="svhn"))
    message = str(err.value)
    assert "data.name" in message and "'svhn'" in message and "mnist5k" in message


DISK = ["mnist", "cifar10", "imagenet", "wikitext103"]


@pytest.mark.parametrize("name", DISK)
def test_unset_root_is_a_data_error_with_the_layout(name):
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name=name, root=None))
    assert "data.root" in str(err.value) and "Expected layout" in str(err.value)


@pytest.mark.parametrize("name", DISK)
def test_absent_root_names_the_path(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name=name, root=str(root)))
    assert str(root) in str(err.value) and "Expected layout" in str(err.value)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py"),
        ("imagenet", "train"),
        ("wikitext103", "wikitext-103-raw/wiki.train.raw"),
    ],
)
def test_empty_root_names_the_missing_path(tmp_path, name, expected):
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name=name, root=str(tmp_path)))
    assert str(tmp_path / expected) in str(err.value)

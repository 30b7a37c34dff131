"""trainers.data: the embedded datasets, the readers of real on-disk formats (written small
into tmp_path), and the seeded streams that must resume exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.data_formats import (
    check_stream_contract,
    cifar_arrays,
    draw,
    normalized,
    same,
    standardized,
    write_cifar_binary,
    write_cifar_python,
    write_mnist,
)
from trainers.config import DataConfig
from trainers.data import DataBundle, DataError, build_data
from trainers.data.images import mnist5k_arrays, mnist5k_split
from trainers.data.streams import EpochOrder, pad_crop_flip

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

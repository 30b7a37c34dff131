"""CIFAR-10 input as the reference's (google-research/rigl, rigl/cifar_resnet/
data_helper.py): per-image standardisation, then mirror padding, random crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.config import DataConfig
from trainers.data import build_data
from trainers.data.base import seeded_generator
from trainers.data.images import mirror_pad_crop_flip, per_image_standardization
from trainers.data.streams import EpochOrder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def cifar_root(tmp_path, rng):
    """CIFAR-10's binary version, 5 training batches of 6 images and a test batch of 4:
    records of a label byte and 3,072 pixel bytes (as tests/unit/test_data.py writes it)."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    train = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        n = 4 if name.startswith("test") else 6
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], data], axis=1).tobytes())
        train.append((data, labels))
    return tmp_path, train[:5], train[5]


def test_per_image_standardization_by_hand():
    # One 1x2x2 image [0, 2, 4, 6]: mean 3, population std sqrt(5); a constant image has
    # std 0 and is divided by the floor 1 / sqrt(4) = 0.5 instead.
    images = torch.tensor([[[[0, 2], [4, 6]]], [[[7, 7], [7, 7]]]], dtype=torch.uint8)
    out = per_image_standardization(images)
    expected = torch.tensor([-3.0, -1.0, 1.0, 3.0]) / 5**0.5
    torch.testing.assert_close(out[0].flatten(), expected)
    assert torch.equal(out[1], torch.zeros(1, 2, 2))
    assert out.dtype == torch.float32


def test_mirror_pad_crop_flip_matches_numpy_symmetric_padding(rng):
    # The reference pads with x[:4][::-1] and x[-4:][::-1]: the border pixel repeats, which
    # is numpy's "symmetric" mode (torch's "reflect" would skip it).
    images = torch.from_numpy(rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    out = mirror_pad_crop_flip(images, torch.Generator().manual_seed(0))
    replay = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 9, (16,), generator=replay)
    dx = torch.randint(0, 9, (16,), generator=replay)
    flip = torch.rand(16, generator=replay) < 0.5
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode="symmetric")
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        expected = crop[:, :, ::-1] if flip[i] else crop
        assert np.array_equal(out[i].numpy(), expected)
    assert 0 < int(flip.sum()) < 16
    assert {0, 8} <= set(dy.tolist()) | set(dx.tolist())  # the widest offsets were drawn


def test_cifar_training_batches_are_standardized_before_they_are_cropped(cifar_root):
    # The reference standardises the whole 32x32 image, then pads and crops: a batch is the
    # augmentation of the standardised images, not the standardisation of the crops.
    root, train, _ = cifar_root
    bundle = build_data(DataConfig(name="cifar10", root=str(root), augment=True))
    images = torch.from_numpy(np.concatenate([pixels for pixels, _ in train]))
    images = images.reshape(-1, 3, 32, 32)[EpochOrder(30, 5).take(30)]
    x, _ = bundle.train_stream(30, seed=5).next_batch()
    expected = mirror_pad_crop_flip(
        per_image_standardization(images), seeded_generator(5, "augment")
    )
    assert torch.equal(x, expected)
    assert not torch.equal(
        x, per_image_standardization(mirror_pad_crop_flip(images, seeded_generator(5, "augment")))
    )

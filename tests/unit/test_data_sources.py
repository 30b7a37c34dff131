"""trainers.data: ImageNet folders, the text corpora, and the errors that name what is
missing or malformed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data_formats import (
    check_stream_contract,
    draw,
    same,
    write_image_folder,
    write_wikitext,
)
from trainers.config import ConfigError, DataConfig
from trainers.data import DATASETS, DataError, build_data
from trainers.data.streams import num_eval_windows
from trainers.data.text import pydoc_corpus


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def imagenet_root(tmp_path, rng):
    write_image_folder(tmp_path / "train", rng, {"n01": 3, "n02": 4})
    write_image_folder(tmp_path / "val", rng, {"n01": 2, "n02": 1})
    return tmp_path


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

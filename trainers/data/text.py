"""Byte-level text corpora (vocabulary 256): WikiText-103 from disk and an embedded corpus."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from trainers.config import ConfigError, DataConfig
from trainers.data.base import DataBundle, DataError, require_files, require_root
from trainers.data.streams import WindowStream, num_eval_windows, window_eval_batches

VOCAB = 256
# Eval reads at most this many windows (1,000 x 128 bytes by default, about 12% of
# wiki.valid.raw), so an eval pass stays short.
MAX_EVAL_WINDOWS = 1000
PYDOC_EVAL_FRACTION = 0.1

WIKITEXT_DIR = "wikitext-103-raw"
WIKITEXT_FILES = ("wiki.train.raw", "wiki.valid.raw")
WIKITEXT_LAYOUT = f"""\
  <root>/{WIKITEXT_DIR}/wiki.train.raw   raw UTF-8 text, about 540 MB
  <root>/{WIKITEXT_DIR}/wiki.valid.raw   raw UTF-8 text, about 1.1 MB
  (or both files directly in <root>)"""


def text_bundle(name: str, train: np.ndarray, eval_: np.ndarray, seq_len: int) -> DataBundle:
    """A bundle over two uint8 byte corpora; train_size counts the distinct training windows
    (offsets), eval_size the eval windows."""
    return DataBundle(
        name=name,
        kind="text",
        num_classes=VOCAB,
        input_shape=(seq_len,),
        train_size=len(train) - seq_len,
        eval_size=num_eval_windows(len(eval_), seq_len, MAX_EVAL_WINDOWS),
        _make_stream=lambda batch_size, seed: WindowStream(train, seq_len, batch_size, seed),
        _eval_batches=lambda batch_size: window_eval_batches(
            eval_, seq_len, MAX_EVAL_WINDOWS, batch_size
        ),
    )


def _map_bytes(path: Path, seq_len: int) -> np.ndarray:
    # A read-only memory map rather than np.fromfile: concurrent trials on one node share
    # the page cache instead of each holding a 540 MB copy.
    size = path.stat().st_size
    if size < seq_len + 1:
        raise DataError(
            f"wikitext103: {path} has {size} bytes, fewer than data.seq_len + 1 = "
            f"{seq_len + 1}\nExpected layout:\n{WIKITEXT_LAYOUT}"
        )
    return np.memmap(path, dtype=np.uint8, mode="r")


def build_wikitext103(cfg: DataConfig) -> DataBundle:
    """WikiText-103 raw, byte-level: random windows of wiki.train.raw for training, the
    first MAX_EVAL_WINDOWS non-overlapping windows of wiki.valid.raw for eval."""
    root = require_root(cfg.root, "wikitext103", WIKITEXT_LAYOUT)
    folder = root / WIKITEXT_DIR
    if not (folder / WIKITEXT_FILES[0]).is_file() and (root / WIKITEXT_FILES[0]).is_file():
        folder = root
    train_path, valid_path = (folder / f for f in WIKITEXT_FILES)
    require_files([train_path, valid_path], "wikitext103", WIKITEXT_LAYOUT)
    return text_bundle(
        "wikitext103",
        _map_bytes(train_path, cfg.seq_len),
        _map_bytes(valid_path, cfg.seq_len),
        cfg.seq_len,
    )


@functools.cache
def pydoc_corpus() -> np.ndarray:
    """The topic help texts that ship with Python (`pydoc_data.topics.topics`, joined with
    newlines in sorted key order) as UTF-8 bytes: uint8 (about 470,000,)."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def build_pydoc_text(cfg: DataConfig) -> DataBundle:
    """The embedded English corpus for smoke runs: the first 90% of `pydoc_corpus()` trains,
    the last 10% evaluates."""
    corpus = pydoc_corpus()
    cut = len(corpus) - round(len(corpus) * PYDOC_EVAL_FRACTION)
    train, eval_ = corpus[:cut], corpus[cut:]
    if len(eval_) < cfg.seq_len + 1:
        raise ConfigError(
            f"data.seq_len={cfg.seq_len!r} is not allowed: pydoc_text's eval "
            f"split has {len(eval_)} bytes, so at most {len(eval_) - 1}"
        )
    return text_bundle("pydoc_text", train, eval_, cfg.seq_len)

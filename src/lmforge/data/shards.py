"""Reading a prepared dataset: the directory ``lmforge prepare`` writes and training memory-maps.

data/shakespeare-char/
  train.bin    flat token ids, uint16 when the vocabulary fits (<= 65,536 ids), else uint32
  val.bin      the same for the validation split
  meta.json    tokenizer, dtype, token and document counts, sources with sha256, split rule
  tokenizer/   the tokenizer the ids came from

>>> data = load_prepared("data/shakespeare-char")
>>> data.split("train")[:8]              # np.memmap: nothing is read until sliced
memmap([20, 49, 58, 59, 60,  3, 17, 49], dtype=uint16)
>>> data.tokenizer.decode(data.split("train")[:8].tolist())
'First Ci'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.errors import DataError

if TYPE_CHECKING:
    from lmforge.tokenizers import Tokenizer

FORMAT_VERSION = 1
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "val")
_MAKE_ONE = "create one with `lmforge prepare --data SRC --tokenizer KIND --out DIR`"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids 0..65535, so a vocabulary of up to 65,536 ids; larger ones need uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class PreparedDataset:
    """A prepared dataset directory: ``.meta``, ``.split(name)`` and the (lazily loaded) ``.tokenizer``."""

    path: Path
    meta: dict[str, Any] = field(repr=False)

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / self.meta["tokenizer"]["path"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        from lmforge.tokenizers import load_tokenizer

        return load_tokenizer(self.tokenizer_dir)

    def num_tokens(self, name: str) -> int:
        self._check_name(name)
        return int(self.meta[f"{name}_tokens"])

    def split(self, name: str) -> np.memmap:
        """The token ids of split ``name`` (train or val), memory-mapped read-only."""
        self._check_name(name)
        path = self.path / f"{name}.bin"
        if not path.is_file():
            raise DataError(f"{path} is missing, so {self.path} is incomplete; re-run `lmforge prepare`")
        expected = self.num_tokens(name) * self.dtype.itemsize
        size = path.stat().st_size
        if size != expected:
            raise DataError(
                f"{path} holds {size:,} bytes but meta.json promises {self.num_tokens(name):,} {self.dtype.name} "
                f"tokens ({expected:,} bytes); the dataset is damaged, re-run `lmforge prepare`"
            )
        if size == 0:
            return np.zeros(0, dtype=self.dtype)  # mmap cannot map an empty file
        return np.memmap(path, dtype=self.dtype, mode="r")

    def _check_name(self, name: str) -> None:
        if name not in SPLITS:
            raise DataError(f"no split {name!r} in a prepared dataset; the splits are {', '.join(SPLITS)}")


def read_meta(path: Path, make_one: str = _MAKE_ONE) -> tuple[Path, Any]:
    """(meta.json's path, its parsed JSON) of a prepared directory, LM or seq2seq; a missing
    directory, a missing or damaged meta.json is one ``DataError`` (``make_one`` says how to make one)."""
    if not path.exists():
        raise DataError(f"{path} does not exist; {make_one}")
    meta_path = path / META_FILE
    if not path.is_dir() or not meta_path.is_file():
        raise DataError(f"{path} is not a prepared dataset (no meta.json); {make_one}")
    try:
        return meta_path, json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{meta_path} is damaged ({error}); re-run `lmforge prepare`") from None


def load_prepared(directory: str | Path) -> PreparedDataset:
    """Open a directory written by ``lmforge prepare``; anything else is a one-line ``DataError``."""
    path = Path(directory)
    meta_path, meta = read_meta(path)
    if isinstance(meta, dict) and meta.get("task", "lm") != "lm":
        raise DataError(
            f"{path} is a {meta['task']} dataset (source/target pairs, from `lmforge prepare --task "
            f"{meta['task']}`), not a language-model one; train an encoder-decoder model on it, or "
            "prepare the text without --task for a language model"
        )
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{meta_path} has format_version {version!r}; this lmforge reads version {FORMAT_VERSION} "
            "(re-run `lmforge prepare`, or upgrade lmforge)"
        )
    missing = [key for key in ("tokenizer", "dtype", "train_tokens", "val_tokens") if key not in meta]
    if missing or "path" not in meta.get("tokenizer", {}):
        raise DataError(
            f"{meta_path} lacks {', '.join(missing) or 'tokenizer.path'}; re-run `lmforge prepare`"
        )
    return PreparedDataset(path, meta)

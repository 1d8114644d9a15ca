"""Reading a prepared seq2seq dataset: the directory ``lmforge prepare --task seq2seq`` writes.

data/reverse/
  train.source.bin   the train sources' ids, one pair after another (uint16 when the vocabulary
                     has at most 65,536 ids, else uint32); no start or end token, the batches add them
  train.source.idx   int64 offsets, one more than the pairs: pair i's source is bin[idx[i]:idx[i+1]]
  train.target.bin   the targets, the same way (and train.target.idx)
  val.source.bin ... the same four files for the validation split
  val.pairs.jsonl    the validation pairs as text, {"source": ..., "target": ...} per line: the
                     references BLEU and chrF compare with (decoding ids need not give the text back)
  meta.json          "task": "seq2seq", pair and token counts, the longest source and target, the
                     sources with sha256, the fields, the split rule, the tokenizers and the target's
                     start/end/pad ids
  tokenizer/         one tokenizer for both sides (the default); or source_tokenizer/ and
                     target_tokenizer/ when the sides have their own

>>> data = load_seq2seq("data/reverse")       # prepare --data 'builtin:reverse?length=8-16' --tokenizer char
>>> val = data.pairs("val")
>>> len(val), val.sources[0][:4], val.targets[0][:4]     # np.memmap views: read when touched
(500, memmap([9, 6, 4, 7], dtype=uint16), memmap([8, 9, 4, 7], dtype=uint16))
>>> data.target_tokenizer.decode(val.targets[0].tolist()), data.texts("val")[0]
('ghcfjfedhefceh', ('hecfehdefjfchg', 'ghcfjfedhefceh'))

A language-model dataset (train.bin, val.bin) and a seq2seq one are told apart by meta.json's
"task"; each loader refuses the other kind with one line saying which it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.data.shards import META_FILE, SPLITS, read_meta
from lmforge.errors import DataError
from lmforge.fileio import OutputKind

if TYPE_CHECKING:
    from lmforge.tokenizers import Tokenizer

FORMAT_VERSION = 1
TASK = "seq2seq"
SIDES = ("source", "target")
SHARED_TOKENIZER_DIR = "tokenizer"
SIDE_TOKENIZER_DIRS = {"source": "source_tokenizer", "target": "target_tokenizer"}
VAL_TEXTS = "val.pairs.jsonl"
OFFSET_DTYPE = np.dtype("<i8")
_MAKE_ONE = "create one with `lmforge prepare --task seq2seq --data PAIRS --tokenizer KIND --out DIR`"

SEQ2SEQ_OUTPUT = OutputKind(
    "prepared seq2seq dataset",
    META_FILE,
    frozenset(
        {META_FILE, VAL_TEXTS, SHARED_TOKENIZER_DIR, *SIDE_TOKENIZER_DIRS.values()}
        | {f"{split}.{side}.{ext}" for split in SPLITS for side in SIDES for ext in ("bin", "idx")}
    ),
)


def dataset_task(directory: str | Path) -> str | None:
    """``"seq2seq"`` or ``"lm"`` for a prepared dataset directory, None when it is not one
    (or its meta.json cannot be read): what a command asks before choosing a loader."""
    try:
        meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    return str(meta.get("task", "lm"))


class TokenRows:
    """A ragged array: row i is ``ids[offsets[i]:offsets[i + 1]]`` (a view, nothing copied)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    @cached_property
    def lengths(self) -> np.ndarray:
        """Every row's length, int64."""
        return np.diff(np.asarray(self.offsets, dtype=np.int64))


@dataclass
class PairSplit:
    """The token ids of one split's pairs: ``sources[i]`` and ``targets[i]`` are pair i."""

    sources: TokenRows
    targets: TokenRows

    def __len__(self) -> int:
        return len(self.sources)


@dataclass
class Seq2SeqDataset:
    """A prepared seq2seq directory: ``.meta``, ``.pairs(split)``, ``.texts(split)`` and the tokenizers."""

    path: Path
    meta: dict[str, Any] = field(repr=False)

    @property
    def shared_tokenizer(self) -> bool:
        return bool(self.meta["tokenizers"]["shared"])

    def _tokenizer(self, side: str) -> Tokenizer:
        from lmforge.tokenizers import load_tokenizer

        return load_tokenizer(self.path / self.meta["tokenizers"][side]["path"])

    @cached_property
    def source_tokenizer(self) -> Tokenizer:
        return self._tokenizer("source")

    @cached_property
    def target_tokenizer(self) -> Tokenizer:
        """The source tokenizer itself when shared, so ``is`` tells a caller they are one."""
        return self.source_tokenizer if self.shared_tokenizer else self._tokenizer("target")

    @property
    def target_ids(self) -> dict[str, int]:
        """{"start", "end", "pad"}: the decoder's first input, the end of a target, the padding."""
        return dict(self.meta["target_ids"])

    def num_pairs(self, split: str) -> int:
        self._check_split(split)
        return int(self.meta[f"{split}_pairs"])

    def _rows(self, split: str, side: str) -> TokenRows:
        count = self.num_pairs(split)
        dtype = np.dtype(self.meta[f"{side}_dtype"])
        tokens = int(self.meta[f"{split}_{side}_tokens"])
        ids_path, idx_path = (self.path / f"{split}.{side}.{ext}" for ext in ("bin", "idx"))
        for path, expected in (
            (ids_path, tokens * dtype.itemsize),
            (idx_path, (count + 1) * OFFSET_DTYPE.itemsize),
        ):
            if not path.is_file():
                raise DataError(f"{path} is missing, so {self.path} is incomplete; re-run `lmforge prepare`")
            if path.stat().st_size != expected:
                raise DataError(
                    f"{path} holds {path.stat().st_size:,} bytes but meta.json promises {expected:,}; the "
                    "dataset is damaged, re-run `lmforge prepare`"
                )
        offsets = np.memmap(idx_path, dtype=OFFSET_DTYPE, mode="r")
        ids = np.memmap(ids_path, dtype=dtype, mode="r") if tokens else np.zeros(0, dtype=dtype)
        return TokenRows(ids, offsets)

    def pairs(self, split: str) -> PairSplit:
        """The token ids of split ``split`` (train or val), memory-mapped read-only."""
        return PairSplit(self._rows(split, "source"), self._rows(split, "target"))

    def texts(self, split: str = "val") -> list[tuple[str, str]]:
        """(source, target) texts of the validation pairs, in the order of ``pairs("val")``."""
        self._check_split(split)
        if split != "val":
            raise DataError("a prepared seq2seq dataset keeps the text of its val split only")
        path = self.path / VAL_TEXTS
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            texts = [(str(record["source"]), str(record["target"])) for record in records]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path} cannot be read ({error}); re-run `lmforge prepare`") from None
        if len(texts) != self.num_pairs(split):
            raise DataError(
                f"{path} holds {len(texts)} pairs, meta.json {self.num_pairs(split)}; re-run prepare"
            )
        return texts

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise DataError(f"no split {split!r} in a prepared dataset; the splits are {', '.join(SPLITS)}")


def load_seq2seq(directory: str | Path) -> Seq2SeqDataset:
    """Open a directory written by ``lmforge prepare --task seq2seq``; anything else is one ``DataError``."""
    path = Path(directory)
    meta_path, meta = read_meta(path, _MAKE_ONE)
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} is not a JSON object; re-run `lmforge prepare`")
    if meta.get("task", "lm") != TASK:
        raise DataError(
            f"{path} is a language-model dataset (one token stream, train.bin/val.bin), not source/target "
            f"pairs; a seq2seq model trains on pairs: {_MAKE_ONE}"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this lmforge reads seq2seq "
            f"version {FORMAT_VERSION} (re-run `lmforge prepare`, or upgrade lmforge)"
        )
    needed = ("tokenizers", "target_ids", "source_dtype", "target_dtype", "train_pairs", "val_pairs")
    missing = [key for key in needed if key not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks {', '.join(missing)}; re-run `lmforge prepare`")
    return Seq2SeqDataset(path, meta)

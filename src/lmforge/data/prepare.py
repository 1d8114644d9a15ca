"""Tokenize a corpus once into flat train/val token files (the layout is in ``shards.py``).

    prepare_dataset(["input.txt"], "char", "data/shakespeare-char")
      input.txt (1 document, 1,115,394 characters)
        -> train.bin = ids of text[:1,003,854]                        (the first 90%)
           val.bin   = ids of text[1,003,854:] + [<|endoftext|>]     (the last 10%, as nanoGPT)

Every document is followed by the tokenizer's ``document_separator_id`` (eos, else sep), so a
model sees where one text ends and the next begins. The split is deterministic:

* ``documents``: when ``val_fraction`` of the documents is at least one document, a draw
  seeded by ``seed`` picks ``round(n * val_fraction)`` whole documents for validation, every set
  of that many equally likely; no document straddles the split, and each split keeps the corpus
  order. The draw is selection sampling (Knuth's Algorithm S): document i of n goes to
  validation with probability (still needed) / (still to come), decided as it streams past, so
  no list of the n documents is ever held.
* ``position``: otherwise (a single document such as tiny Shakespeare, or a handful), the
  concatenated text is cut at character ``int(chars * (1 - val_fraction))``; the text after the
  cut is validation, as nanoGPT does, so figures compare. The separator goes where the
  document really ends, so train.bin does not end with one when the cut falls inside a document.

Two passes over the sources: the first counts documents and characters (and trains the tokenizer
when given a kind), the second encodes and streams ids to disk, so memory stays bounded by one
batch and one document whatever the corpus size (measured: ``benchmarks/prepare_memory.py``;
training a tokenizer here is the exception, its word or pair counts grow with the vocabulary
seen). Long documents are cut into ~64 KB pieces where cutting cannot change the ids, and the
pieces are encoded in batches on worker threads (``encoding.BatchEncoder``: the tokenizer's own
``encode_batch`` on every core, or an exact faster path for byte-level BPE on ASCII text).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lmforge import __version__
from lmforge.data.builtin import python_version
from lmforge.data.corpora import Errors, Source, describe_source, resolve_sources, source_documents
from lmforge.data.encoding import CUT_RULES, BatchEncoder, chunk_text
from lmforge.data.shards import (
    FORMAT_VERSION,
    META_FILE,
    TOKENIZER_DIR,
    PreparedDataset,
    load_prepared,
    token_dtype,
)
from lmforge.errors import DataError, UserInputError
from lmforge.fileio import DATASET_OUTPUT, atomic_directory, atomic_write_json, check_output_dir
from lmforge.tokenizers import KINDS, Tokenizer, load_tokenizer, train_tokenizer

__all__ = ["CUT_RULES", "PreparedDataset", "chunk_text", "load_prepared", "prepare_dataset", "token_dtype"]

BATCH_CHARS = 1 << 20  # text per encode_batch call: keeps every core busy and memory bounded
IN_FLIGHT = 2  # batches being encoded at once


class _SplitFile:
    """One output split: ids appended to a binary file, counted as they go."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.handle: BinaryIO = path.open("wb")
        self.dtype = dtype
        self.tokens = 0
        self.documents = 0

    def write(self, id_lists: list[list[int]]) -> None:
        count = sum(len(ids) for ids in id_lists)
        if count:
            array = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=self.dtype, count=count)
            self.handle.write(array.tobytes())
            self.tokens += count


class _Pipeline:
    """Queue (text piece, split, ends a document), encode in batches, write ids in corpus order.

    Most of ``encode_batch`` runs in the tokenizer's Rust core without the GIL, so batches go to
    worker threads: while one is being encoded the next is read and cut and the one before is
    written, and with ``IN_FLIGHT`` batches at once a batch's last long piece never leaves a
    core idle.
    """

    def __init__(self, tokenizer: Tokenizer, progress: Any, pool: ThreadPoolExecutor) -> None:
        self.encoder = BatchEncoder(tokenizer)
        self.separator = tokenizer.document_separator_id
        self.progress = progress
        self.pool = pool
        self.pending: list[tuple[str, _SplitFile, bool]] = []
        self.pending_chars = 0
        self.in_flight: deque[tuple[Future[list[list[int]]], list[tuple[_SplitFile, bool]], int]] = deque()

    def add(self, text: str, split: _SplitFile, ends_document: bool) -> None:
        """Queue ``text`` for ``split``; the separator follows it when it ends its document."""
        pieces = chunk_text(text, self.encoder.rule)
        for i, piece in enumerate(pieces):
            self.pending.append((piece, split, ends_document and i == len(pieces) - 1))
            self.pending_chars += len(piece)
        split.documents += 1
        if self.pending_chars >= BATCH_CHARS:
            self._submit()

    def finish(self) -> None:
        """Encode what is queued and write everything still in flight."""
        self._submit()
        while self.in_flight:
            self._write_oldest()

    def _submit(self) -> None:
        if not self.pending:
            return
        texts = [piece for piece, _, _ in self.pending]
        targets = [(split, ends) for _, split, ends in self.pending]
        self.in_flight.append(
            (self.pool.submit(self.encoder.encode_batch, texts), targets, self.pending_chars)
        )
        self.pending, self.pending_chars = [], 0
        while len(self.in_flight) > IN_FLIGHT:
            self._write_oldest()

    def _write_oldest(self) -> None:
        future, targets, chars = self.in_flight.popleft()
        by_split: dict[int, tuple[_SplitFile, list[list[int]]]] = {}
        for (split, ends), ids in zip(targets, future.result()):
            lists = by_split.setdefault(id(split), (split, []))[1]
            lists.append(ids)
            if ends and self.separator is not None:
                lists.append([self.separator])
        for split, lists in by_split.values():
            split.write(lists)
        self.progress.update(chars)


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress_bar(total_chars: int, show: bool) -> Iterator[Any]:
    """A tqdm bar over characters on stderr, or a stand-in (tqdm is not even imported then)."""
    if not show:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(
        total=total_chars, unit="char", unit_scale=True, desc="tokenizing", file=sys.stderr, leave=False
    ) as bar:
        yield bar


def _resolve_tokenizer(
    tokenizer: str | Path | Tokenizer, vocab_size: int | None, options: dict
) -> Tokenizer | str:
    """A loaded tokenizer, or the kind to train; options for training only apply to a kind."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if Path(tokenizer).exists():
        given = [
            name
            for name, value in {"vocab_size": vocab_size, **options}.items()
            if value not in (None, False, {})
        ]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise UserInputError(
                f"{flags} only apply when --tokenizer names a kind to train; {tokenizer} is an existing tokenizer"
            )
        return load_tokenizer(tokenizer)
    if str(tokenizer) in KINDS:
        return str(tokenizer)
    raise UserInputError(
        f"--tokenizer {tokenizer}: no such directory, and not a kind to train ({', '.join(KINDS)})"
    )


class _SelectionSampler:
    """Exactly ``k`` of ``n`` documents, every k-subset equally likely, decided one document at a
    time in corpus order with O(1) memory (Knuth, TAOCP vol. 2, 3.4.2, Algorithm S)."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        self.rng, self.left, self.needed = random.Random(seed), n, k

    def __call__(self) -> bool:
        """Whether the next document is picked; call once per document, in order."""
        picked = self.rng.random() * self.left < self.needed
        self.left -= 1
        self.needed -= picked
        return picked


def _plan_split(documents: int, chars: int, val_fraction: float, seed: int) -> dict:
    """The split rule as metadata, plus (under ``_val``) the sampler that picks validation documents."""
    if documents * val_fraction >= 1:
        num_val = min(round(documents * val_fraction), documents - 1)
        return {
            "rule": "documents",
            "val_fraction": val_fraction,
            "seed": seed,
            "_val": _SelectionSampler(documents, num_val, seed),
        }
    cut = int(chars * (1 - val_fraction))
    if cut == 0 or cut == chars:
        raise DataError(
            f"the corpus has {chars} characters in {documents} document{'s' if documents != 1 else ''}, too little "
            f"to hold out --val-fraction {val_fraction} and keep both splits non-empty; give more text"
        )
    return {"rule": "position", "val_fraction": val_fraction, "seed": seed, "cut_character": cut}


def prepare_dataset(
    specs: Sequence[str],
    tokenizer: str | Path | Tokenizer,
    out: str | Path,
    *,
    vocab_size: int | None = None,
    tokenizer_options: dict | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    text_field: str = "text",
    errors: Errors = "strict",
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict:
    """Tokenize the sources ``specs`` into ``out``; returns the metadata written to meta.json.

    Args:
        specs: sources as ``corpora`` reads them (files, directories, globs, .jsonl, builtin:NAME).
        tokenizer: a ``Tokenizer``, a tokenizer directory, or a kind (``KINDS``) to train on the corpus.
        out: the directory to create; written to a temporary name and renamed when complete.
        vocab_size: and ``tokenizer_options`` (``train_tokenizer`` keywords): when training.
        val_fraction: the share held out for validation, strictly between 0 and 1.
        seed: seeds the document shuffle (``documents`` rule).
        progress: a progress bar on stderr; None shows one when stderr is a terminal.
    """
    start = time.perf_counter()
    if not 0 < val_fraction < 1:
        raise UserInputError(
            f"--val-fraction must be strictly between 0 and 1 (training reports validation loss); got {val_fraction}"
        )
    listed = [specs] if isinstance(specs, (str, Path)) else list(specs)
    inputs = [spec for spec in listed if isinstance(spec, (str, Path)) and Path(spec).exists()]
    if isinstance(tokenizer, (str, Path)) and Path(tokenizer).exists():
        inputs.append(tokenizer)
    check_output_dir(out, overwrite, inputs, DATASET_OUTPUT)  # refuse now, not after tokenizing
    options = {key: value for key, value in (tokenizer_options or {}).items() if value is not None}
    sources = resolve_sources(specs)
    resolved = _resolve_tokenizer(tokenizer, vocab_size, options)
    read = _Reader(sources, text_field, errors)

    # Pass 1: count documents and characters; train the tokenizer on the same read when asked.
    train_start = time.perf_counter()
    if isinstance(resolved, str):
        texts = read.counting()
        tok = train_tokenizer(resolved, texts, vocab_size, **options)
        for _ in texts:  # a trainer that stopped early still leaves the counts complete
            pass
    else:
        tok = resolved
        for _ in read.counting():
            pass
    train_seconds = time.perf_counter() - train_start if isinstance(resolved, str) else 0.0
    split = _plan_split(read.documents, read.chars, val_fraction, seed)
    is_val = split.pop("_val", None)
    dtype = token_dtype(tok.vocab_size)

    show = (sys.stderr.isatty() if progress is None else progress) and read.chars >= BATCH_CHARS
    with (
        atomic_directory(out, overwrite=overwrite, inputs=inputs, kind=DATASET_OUTPUT) as tmp,
        _progress_bar(read.chars, show) as bar,
        ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="lmforge-encode") as pool,
    ):
        train, val = _SplitFile(tmp / "train.bin", dtype), _SplitFile(tmp / "val.bin", dtype)
        try:
            # Pass 2: encode each document, or its two parts, and stream the ids to its split.
            pipeline = _Pipeline(tok, bar, pool)
            cut, position, index = split.get("cut_character"), 0, 0
            for index, text in enumerate(read.texts()):  # noqa: B007 - index is checked after the loop
                if cut is None:
                    pipeline.add(text, val if is_val() else train, ends_document=True)
                elif position + len(text) <= cut:
                    pipeline.add(text, train, ends_document=True)
                elif position >= cut:
                    pipeline.add(text, val, ends_document=True)
                else:  # the cut falls inside this document: it counts in both splits
                    pipeline.add(text[: cut - position], train, ends_document=False)
                    pipeline.add(text[cut - position :], val, ends_document=True)
                position += len(text)
            pipeline.finish()
        finally:
            train.handle.close()
            val.handle.close()
        if index + 1 != read.documents:
            raise DataError(
                "the sources changed while being read (a different number of documents); run again"
            )
        for name, part in (("train", train), ("val", val)):
            if part.tokens == 0:
                raise DataError(
                    f"the {name} split came out empty; give more text or choose another --val-fraction"
                )
        tok.save(tmp / TOKENIZER_DIR)
        described = [describe_source(source, text_field=text_field) for source in sources]
        for entry, count in zip(described, read.per_source):
            entry["documents"] = count
        elapsed = time.perf_counter() - start
        meta = {
            "format_version": FORMAT_VERSION,
            "lmforge_version": __version__,
            "python_version": python_version(),
            "tokenizer": {
                "kind": tok.kind,
                "path": TOKENIZER_DIR,
                "vocab_size": tok.vocab_size,
                "special_tokens": tok.special_tokens,
                "special_ids": tok.special_ids,
                "trained_here": isinstance(resolved, str),
            },
            "document_separator": _separator_meta(tok),
            "dtype": dtype.name,
            "train_tokens": train.tokens,
            "val_tokens": val.tokens,
            "documents": read.documents,
            "train_documents": train.documents,
            "val_documents": val.documents,
            "characters": read.chars,
            "text_bytes": read.bytes,
            "sources": described,
            "text_field": text_field,
            "errors": errors,
            "split": split,
            "elapsed_seconds": round(elapsed, 3),
            "tokenizer_train_seconds": round(train_seconds, 3),
            "text_mb_per_s": round(read.bytes / 1e6 / max(elapsed - train_seconds, 1e-9), 3),
        }
        atomic_write_json(tmp / META_FILE, meta)
    return meta


class _Reader:
    """The documents' texts, source by source; ``counting()`` also tallies them for the split plan."""

    def __init__(self, sources: list[Source], text_field: str, errors: Errors) -> None:
        self.sources, self.text_field, self.errors = sources, text_field, errors
        self.per_source: list[int] = []
        self.chars = self.bytes = 0

    @property
    def documents(self) -> int:
        return sum(self.per_source)

    def texts(self) -> Iterator[str]:
        for source in self.sources:
            for document in source_documents(source, text_field=self.text_field, errors=self.errors):
                yield document.text

    def counting(self) -> Iterator[str]:
        for source in self.sources:
            self.per_source.append(0)
            for document in source_documents(source, text_field=self.text_field, errors=self.errors):
                self.per_source[-1] += 1
                self.chars += len(document.text)
                self.bytes += len(document.text.encode("utf-8"))
                yield document.text


def _separator_meta(tok: Tokenizer) -> dict:
    separator = tok.document_separator_id
    if separator is None:
        return {"id": None, "token": None, "rule": "none: the tokenizer has neither eos nor sep"}
    return {"id": separator, "token": tok.id_to_token(separator), "rule": "appended after every document"}


def describe(meta: dict) -> str:
    """Three lines a person reads after ``lmforge prepare``."""
    tok = meta["tokenizer"]
    total = meta["train_tokens"] + meta["val_tokens"]
    split = meta["split"]
    if split["rule"] == "documents":
        rule = (
            f"{meta['val_documents']:,} of {meta['documents']:,} documents held out "
            f"(seeded draw, seed {split['seed']})"
        )
    else:
        rule = f"the last {split['val_fraction']:.0%} of the text (from character {split['cut_character']:,})"
    trained = f", trained in {meta['tokenizer_train_seconds']:.1f} s" if tok["trained_here"] else ""
    return "\n".join(
        [
            f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens ({meta['dtype']}) from "
            f"{meta['text_bytes'] / 1e6:.2f} MB of text in {meta['documents']:,} document"
            f"{'s' if meta['documents'] != 1 else ''}",
            f"  tokenizer: {tok['kind']}, {tok['vocab_size']:,} ids{trained}; "
            f"{meta['text_bytes'] / max(total, 1):.2f} bytes/token",
            f"  split:     {rule}",
            f"  speed:     {meta['text_mb_per_s']:.2f} MB/s of text, {meta['elapsed_seconds']:.2f} s in all",
        ]
    )

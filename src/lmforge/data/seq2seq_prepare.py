"""Tokenize source/target pairs once into a prepared seq2seq dataset (the layout is in
``seq2seq_shards.py``).

    prepare_seq2seq(["builtin:reverse?length=8-16"], "char", "data/reverse")
      5,000 pairs "hdbaefc" -> "cfeabdh"
        -> 4,500 train pairs: train.source.bin/.idx, train.target.bin/.idx
           500 val pairs:     val.source.bin/.idx, val.target.bin/.idx, val.pairs.jsonl
           tokenizer/         one char tokenizer trained on the train sources and targets

The split is deterministic: ``round(n * val_fraction)`` pairs (at least one, and at least one
left to train on), drawn by ``random.Random(seed)``, go to validation; each split keeps the
corpus order. Pairs that name a group (``builtin:stdlib-signatures``: their module) are split by
group instead, whole groups to validation, so validation measures generalisation to unseen
groups. A tokenizer trained here (``tokenizer`` a kind, not a directory) sees the train split
only, as a model does: text of the validation split alone is unseen by both.

One tokenizer for both sides by default (a shared vocabulary: copy, reverse and sort need it,
and it lets a model tie its embeddings); ``target_tokenizer`` gives the target its own (two
languages with different scripts). The target tokenizer must have an end token
(``seq2seq_batches.target_special_ids``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge import __version__
from lmforge.data.builtin import python_version
from lmforge.data.corpora import Errors
from lmforge.data.pairs import (
    DEFAULT_SOURCE_FIELD,
    DEFAULT_TARGET_FIELD,
    Pair,
    describe_pairs,
    read_pairs,
    resolve_pairs,
)
from lmforge.data.prepare import _resolve_tokenizer
from lmforge.data.seq2seq_batches import target_special_ids
from lmforge.data.seq2seq_shards import (
    FORMAT_VERSION,
    OFFSET_DTYPE,
    SEQ2SEQ_OUTPUT,
    SHARED_TOKENIZER_DIR,
    SIDE_TOKENIZER_DIRS,
    TASK,
    VAL_TEXTS,
)
from lmforge.data.seq2seq_tasks import group_noun
from lmforge.data.shards import META_FILE, token_dtype
from lmforge.errors import DataError, UserInputError
from lmforge.fileio import atomic_directory, atomic_write_json, atomic_write_text, check_output_dir
from lmforge.tokenizers import Tokenizer, train_tokenizer


def split_pairs(
    pairs: Sequence[Pair], val_fraction: float, seed: int, group_noun: str = "group"
) -> tuple[list[Pair], list[Pair], dict]:
    """(train, val, the split rule as metadata): by group when the pairs have groups (what a group
    is, e.g. "module", goes in the metadata as ``group``), else by pair."""
    if not 0 < val_fraction < 1:
        raise UserInputError(
            f"--val-fraction must be strictly between 0 and 1 (training reports validation loss); got {val_fraction}"
        )
    grouped = any(pair.group is not None for pair in pairs)
    units = list(dict.fromkeys(pair.group for pair in pairs)) if grouped else list(range(len(pairs)))
    noun = "groups" if grouped else "pairs"
    if len(units) < 2:
        raise DataError(
            f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''} in {len(units)} {noun[:-1]}: too few to hold "
            "out a validation split and keep one to train on; give more pairs"
        )
    num_val = min(max(round(len(units) * val_fraction), 1), len(units) - 1)
    held_out = set(random.Random(seed).sample(units, num_val))
    train, val = [], []
    for index, pair in enumerate(pairs):
        (val if (pair.group if grouped else index) in held_out else train).append(pair)
    rule = {
        "rule": noun,
        "val_fraction": val_fraction,
        "seed": seed,
        noun: len(units),
        f"val_{noun}": num_val,
    }
    if grouped:
        rule["group"] = group_noun
    return train, val, rule


def _tokenizer_meta(tok: Tokenizer, path: str, trained_here: bool) -> dict:
    return {
        "kind": tok.kind,
        "path": path,
        "vocab_size": tok.vocab_size,
        "special_tokens": tok.special_tokens,
        "special_ids": tok.special_ids,
        "trained_here": trained_here,
    }


def _encode(tok: Tokenizer, pairs: Sequence[Pair], side: str) -> list[list[int]]:
    encoded = tok.encode_batch([getattr(pair, side) for pair in pairs])
    for pair, ids in zip(pairs, encoded):
        if not ids:
            raise DataError(
                f"{pair.origin}: the {side} {getattr(pair, side)!r:.60} encodes to no tokens with this "
                "tokenizer; give a tokenizer that covers its characters"
            )
    return encoded


def _write_rows(directory: Path, stem: str, rows: list[list[int]], dtype: np.dtype) -> int:
    """``stem.bin`` (the ids, one row after another) and ``stem.idx`` (offsets); the token count."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=OFFSET_DTYPE)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((i for row in rows for i in row), dtype=dtype, count=int(offsets[-1]))
    (directory / f"{stem}.bin").write_bytes(ids.tobytes())
    (directory / f"{stem}.idx").write_bytes(offsets.tobytes())
    return int(offsets[-1])


def prepare_seq2seq(
    specs: Sequence[str] | str,
    tokenizer: str | Path | Tokenizer,
    out: str | Path,
    *,
    target_tokenizer: str | Path | Tokenizer | None = None,
    vocab_size: int | None = None,
    target_vocab_size: int | None = None,
    tokenizer_options: dict | None = None,
    source_field: str = DEFAULT_SOURCE_FIELD,
    target_field: str = DEFAULT_TARGET_FIELD,
    val_fraction: float = 0.1,
    seed: int = 0,
    errors: Errors = "strict",
    overwrite: bool = False,
) -> dict:
    """Tokenize the pairs of ``specs`` into ``out``; returns the metadata written to meta.json.

    Args:
        specs: a .jsonl or .tsv file, two parallel text files, or a builtin task (``pairs.py``).
        tokenizer: a ``Tokenizer``, a tokenizer directory, or a kind to train: the shared one,
            or the source side's when ``target_tokenizer`` is given.
        out: the directory to create; written to a temporary name and renamed when complete.
        target_tokenizer: the target side's own tokenizer (or kind); None shares ``tokenizer``.
        vocab_size: and ``target_vocab_size`` (default: ``vocab_size``) and ``tokenizer_options``
            (``train_tokenizer`` keywords): when training.
        source_field: and ``target_field``: the fields of a .jsonl file.
        val_fraction: the share of pairs (or groups) held out for validation.
        seed: seeds the validation draw.
    """
    start = time.perf_counter()
    if target_vocab_size is not None and target_tokenizer is None:
        raise UserInputError(
            "--target-vocab-size only applies with --target-tokenizer (a separate target tokenizer)"
        )
    listed = [specs] if isinstance(specs, (str, Path)) else list(specs)
    inputs = [spec for spec in listed if Path(spec).exists()]
    inputs += [t for t in (tokenizer, target_tokenizer) if isinstance(t, (str, Path)) and Path(t).exists()]
    check_output_dir(out, overwrite, inputs, SEQ2SEQ_OUTPUT)  # refuse now, not after tokenizing
    options = {key: value for key, value in (tokenizer_options or {}).items() if value is not None}
    source = resolve_pairs(listed, source_field, target_field)
    resolved = {"source": _resolve_tokenizer(tokenizer, vocab_size, options)}
    if target_tokenizer is not None:
        resolved["target"] = _resolve_tokenizer(
            target_tokenizer, target_vocab_size if target_vocab_size is not None else vocab_size, options
        )
    pairs = read_pairs(source, source_field, target_field, errors)
    train, val, split = split_pairs(pairs, val_fraction, seed, group_noun(source.specs[0]))

    train_start = time.perf_counter()
    tokenizers: dict[str, Tokenizer] = {}
    for side, given in resolved.items():
        if isinstance(given, Tokenizer):
            tokenizers[side] = given
            continue
        sides = ("source", "target") if target_tokenizer is None else (side,)
        texts = [getattr(pair, name) for name in sides for pair in train]
        size = vocab_size if side == "source" or target_vocab_size is None else target_vocab_size
        tokenizers[side] = train_tokenizer(given, texts, size, **options)
    train_seconds = time.perf_counter() - train_start
    tokenizers.setdefault("target", tokenizers["source"])
    ids = target_special_ids(tokenizers["target"])  # before encoding: no end token is an error
    dtypes = {side: token_dtype(tok.vocab_size) for side, tok in tokenizers.items()}

    shared = target_tokenizer is None
    with atomic_directory(out, overwrite=overwrite, inputs=inputs, kind=SEQ2SEQ_OUTPUT) as tmp:
        counts: dict[str, int] = {}
        longest: dict[str, int] = {}
        for split_name, split_pairs_ in (("train", train), ("val", val)):
            for side in ("source", "target"):
                rows = _encode(tokenizers[side], split_pairs_, side)
                counts[f"{split_name}_{side}_tokens"] = _write_rows(
                    tmp, f"{split_name}.{side}", rows, dtypes[side]
                )
                longest[side] = max(longest.get(side, 0), max(len(row) for row in rows))
        lines = (json.dumps({"source": p.source, "target": p.target}, ensure_ascii=False) for p in val)
        atomic_write_text(tmp / VAL_TEXTS, "".join(line + "\n" for line in lines))
        paths = (
            {"source": SHARED_TOKENIZER_DIR, "target": SHARED_TOKENIZER_DIR}
            if shared
            else SIDE_TOKENIZER_DIRS
        )
        for side in ("source",) if shared else ("source", "target"):
            tokenizers[side].save(tmp / paths[side])
        described = describe_pairs(source, pairs, source_field, target_field)
        elapsed = time.perf_counter() - start
        meta = {
            "format_version": FORMAT_VERSION,
            "task": TASK,
            "lmforge_version": __version__,
            "python_version": python_version(),
            "tokenizers": {
                "shared": shared,
                **{
                    side: _tokenizer_meta(tokenizers[side], paths[side], isinstance(resolved.get(side), str))
                    for side in ("source", "target")
                },
            },
            "target_ids": {"start": ids.start, "end": ids.end, "pad": ids.pad},
            "source_dtype": dtypes["source"].name,
            "target_dtype": dtypes["target"].name,
            "train_pairs": len(train),
            "val_pairs": len(val),
            **counts,
            "longest_source": longest["source"],
            "longest_target": longest["target"],
            "sources": [described],
            "fields": {"source": source_field, "target": target_field} if source.kind == "jsonl" else None,
            "errors": errors,
            "split": split,
            "elapsed_seconds": round(elapsed, 3),
            "tokenizer_train_seconds": round(train_seconds, 3)
            if any(isinstance(r, str) for r in resolved.values())
            else 0.0,
        }
        if shared:
            meta["tokenizers"]["target"]["trained_here"] = meta["tokenizers"]["source"]["trained_here"]
        atomic_write_json(tmp / META_FILE, meta)
    return meta


def describe_seq2seq(meta: dict) -> str:
    """The lines a person reads after ``lmforge prepare --task seq2seq``."""
    toks = meta["tokenizers"]
    split = meta["split"]
    unit = split["rule"]
    noun = f"{split['group']}s" if "group" in split else unit
    held = f"{split[f'val_{unit}']:,} of {split[unit]:,} {noun} held out (seeded draw, seed {split['seed']})"
    if toks["shared"]:
        tok = toks["source"]
        tokenizer_line = (
            f"  tokenizer: {tok['kind']}, {tok['vocab_size']:,} ids, shared by sources and targets"
        )
    else:
        tokenizer_line = (
            f"  tokenizers: source {toks['source']['kind']} ({toks['source']['vocab_size']:,} ids), "
            f"target {toks['target']['kind']} ({toks['target']['vocab_size']:,} ids)"
        )
    if meta["tokenizer_train_seconds"]:
        tokenizer_line += f"; trained in {meta['tokenizer_train_seconds']:.1f} s"
    return "\n".join(
        [
            f"{meta['train_pairs']:,} train + {meta['val_pairs']:,} val pairs from {meta['sources'][0]['spec']}",
            f"  tokens:    {meta['train_source_tokens']:,} source + {meta['train_target_tokens']:,} target (train); "
            f"longest source {meta['longest_source']:,}, longest target {meta['longest_target']:,}",
            tokenizer_line,
            f"  split:     {held}",
        ]
    )

"""``lmforge tokenizer train | encode | decode``: make a tokenizer and see how it splits text.

A word tokenizer trained (lowercased) on tiny Shakespeare, which has no "transformers" either:

    $ lmforge tokenizer encode --tokenizer tok/word "Henry is givin' a lectrue on transformers"
    henry(117) is(20) <unk>(1) '(7) a(15) <unk>(1) on(58) <unk>(1)
    8 tokens, 3 unknown (word tokenizer, 11,469 ids)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from lmforge.bounds import FREE_TEXT, NON_NEGATIVE, OUT_DIR, POSITIVE, SOURCES, TOKENIZER_DIR, Bounds, Text
from lmforge.commands._json import print_json
from lmforge.fileio import TOKENIZER_OUTPUT, atomic_directory, check_output_dir

if TYPE_CHECKING:
    from lmforge.tokenizers import Tokenizer


def train(
    *,
    kind: Literal["char", "word", "bpe", "wordpiece", "unigram"],
    data: Annotated[list[str], SOURCES],
    out: Annotated[Path, OUT_DIR],
    vocab_size: Annotated[int | None, Bounds(positive=True, at_most=1_000_000)] = None,
    overwrite: bool = False,
    lowercase: bool = False,
    min_frequency: Annotated[int | None, POSITIVE] = None,
    byte_fallback: bool | None = None,
    special: Annotated[list[str] | None, Text(what="NAME=TOKEN")] = None,
    text_field: Annotated[str, Text(what="a field name")] = "text",
    errors: Literal["strict", "replace"] = "strict",
    as_json: bool = False,
) -> None:
    """Train a tokenizer on text files and save it to a directory.

    char: one id per character (unknown ones become <unk>, or bytes with --byte-fallback).
    word: one id per word seen in training; other words become <unk>.
    bpe: GPT-2 byte-level BPE, never <unk>. wordpiece: BERT, ## continues a word.
    unigram: SentencePiece, ▁ marks a space.

    Args:
        kind: the tokenizer family.
        data: text sources: files, directories, globs, .jsonl, .parquet/.csv/.arrow files, corpus
            names (lmforge corpora), https:// URLs, hf:NAME[:CONFIG][@SPLIT], builtin:stdlib-docs.
        out: the directory to write (tokenizer.json and lmforge_tokenizer.json).
        vocab_size: total ids, special tokens included (default: every character or word seen
            for char and word, 8000 for bpe, wordpiece and unigram).
        overwrite: replace --out if it already exists.
        lowercase: lowercase text before training and encoding.
        min_frequency: drop characters (char), words (word) or merges (bpe, wordpiece) seen fewer
            times.
        byte_fallback: char only: spell unseen characters as UTF-8 byte tokens <0xNN> instead of
            <unk>, so any text decodes back exactly (bpe always does this).
        special: NAME=TOKEN overrides of the default special tokens, NAME one of pad, bos, eos,
            unk, mask, cls, sep; NAME= drops one.
        text_field: the field (.jsonl) or column (hf:, .parquet, .csv, .arrow) holding the text.
        errors: what to do with bytes that are not UTF-8: stop (strict) or use U+FFFD (replace).
        as_json: print one JSON object instead of a summary.

    Examples:
        lmforge tokenizer train --kind bpe --vocab-size 8000 --data builtin:stdlib-docs --out tok/bpe
        lmforge tokenizer train --kind char --data tinyshakespeare --out tok/char
        lmforge tokenizer train --kind word --lowercase --min-frequency 2 --data my_notes.txt --out tok/word
        lmforge tokenizer train --kind wordpiece --data my_docs.jsonl --special 'mask=<mask>' --out tok/wp
    """
    from lmforge.data.corpora import iter_texts
    from lmforge.tokenizers import parse_special, train_tokenizer

    overrides = parse_special(special or [])
    check_output_dir(out, overwrite, kind=TOKENIZER_OUTPUT)  # fail before a long training run, not after it
    stats = _TextStats(iter_texts(data, text_field=text_field, errors=errors))
    start = time.perf_counter()
    tokenizer = train_tokenizer(
        kind,
        stats,
        vocab_size,
        special_tokens=overrides,
        lowercase=lowercase,
        min_frequency=min_frequency,
        byte_fallback=byte_fallback,
        show_progress=sys.stderr.isatty() and not as_json,
    )
    seconds = time.perf_counter() - start
    inputs = [spec for spec in data if Path(spec).exists()]
    with atomic_directory(out, overwrite=overwrite, inputs=inputs, kind=TOKENIZER_OUTPUT) as tmp:
        tokenizer.save(tmp)

    result = {
        "kind": kind,
        "vocab_size": tokenizer.vocab_size,
        "special_tokens": tokenizer.special_tokens,
        "special_ids": tokenizer.special_ids,
        "out": str(out),
        "documents": stats.documents,
        "characters": stats.characters,
        "seconds": round(seconds, 3),
    }
    if as_json:
        print_json(result)
        return
    documents = f"{stats.documents:,} document{'s' if stats.documents != 1 else ''}"
    print(f"trained a {kind} tokenizer on {stats.characters:,} characters ({documents}) in {seconds:.2f} s")
    print(f"  vocabulary:     {tokenizer.vocab_size:,} ids")
    print(f"  special tokens: {_describe_specials(tokenizer)}")
    print(f"  saved to:       {out}/ (tokenizer.json, lmforge_tokenizer.json)")
    print(f'try: lmforge tokenizer encode --tokenizer {out} "Henry is givin\' a lectrue"')


def encode(
    text: Annotated[str, FREE_TEXT], *, tokenizer: Annotated[Path, TOKENIZER_DIR], as_json: bool = False
) -> None:
    """Show how TEXT splits into tokens: each piece with its id.

    Args:
        text: the text to encode.
        tokenizer: a tokenizer directory written by `lmforge tokenizer train`.
        as_json: print {"ids": [...], "tokens": [...]} instead.

    Examples:
        lmforge tokenizer encode --tokenizer tok/bpe "Henry is givin' a lectrue"
        lmforge tokenizer encode --tokenizer tok/bpe --json "Hello" | jq .ids
    """
    from lmforge.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ids = tok.encode(text)
    tokens = tok.tokens(ids)
    if as_json:
        print_json({"ids": ids, "tokens": tokens})
        return
    print(" ".join(f"{_show(piece)}({i})" for piece, i in zip(tokens, ids)))
    counts = f"{len(ids):,} tokens"
    if tok.unk_id is not None:
        counts += f", {ids.count(tok.unk_id):,} unknown"
    print(f"{counts} ({tok.kind} tokenizer, {tok.vocab_size:,} ids)")


def decode(
    ids: Annotated[list[int], NON_NEGATIVE],
    *,
    tokenizer: Annotated[Path, TOKENIZER_DIR],
    skip_special_tokens: bool = False,
    as_json: bool = False,
) -> None:
    """Turn token IDs back into text.

    Args:
        ids: the token ids.
        tokenizer: a tokenizer directory written by `lmforge tokenizer train`.
        skip_special_tokens: leave special tokens such as <|endoftext|> out of the text.
        as_json: print {"text": ...} instead.

    Examples:
        lmforge tokenizer decode --tokenizer tok/bpe 39 1164 318
    """
    from lmforge.tokenizers import load_tokenizer

    text = load_tokenizer(tokenizer).decode(ids, skip_special_tokens=skip_special_tokens)
    print(json.dumps({"text": text}, ensure_ascii=False) if as_json else text)


def _show(piece: str) -> str:
    """A piece as a person can read it: quoted when it is or holds whitespace."""
    return piece if piece.isprintable() and not any(c.isspace() for c in piece) else repr(piece)


def _describe_specials(tok: Tokenizer) -> str:
    """``bos,eos=<|endoftext|>(0)  pad=<pad>(1)``: tokens shared by several names shown once."""
    by_token: dict[str, list[str]] = {}
    for name, token in tok.special_tokens.items():
        by_token.setdefault(token, []).append(name)
    return "  ".join(
        f"{','.join(names)}={token}({tok.token_to_id(token)})" for token, names in by_token.items()
    )


class _TextStats:
    """Pass texts through, counting documents and characters for the summary."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.documents = 0
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.documents += 1
            self.characters += len(text)
            yield text

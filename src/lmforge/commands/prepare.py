"""``lmforge prepare``: tokenize a corpus into train/val token files that training memory-maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import OUT_DIR, POSITIVE, SEED, SOURCES, Bounds, Text
from lmforge.commands._json import print_json


def prepare(
    *,
    data: Annotated[list[str], SOURCES],
    tokenizer: Annotated[str, Text(what="a tokenizer directory or a kind")],
    out: Annotated[Path, OUT_DIR],
    vocab_size: Annotated[int | None, Bounds(positive=True, at_most=1_000_000)] = None,
    val_fraction: Annotated[float, Bounds(positive=True, below=1.0)] = 0.1,
    seed: Annotated[int, SEED] = 0,
    text_field: Annotated[str, Text(what="a field name")] = "text",
    errors: Literal["strict", "replace"] = "strict",
    lowercase: bool = False,
    min_frequency: Annotated[int | None, POSITIVE] = None,
    byte_fallback: bool | None = None,
    special: Annotated[list[str] | None, Text(what="NAME=TOKEN")] = None,
    overwrite: bool = False,
    progress: bool | None = None,
    as_json: bool = False,
) -> dict:
    """Tokenize a corpus into DIR/train.bin, DIR/val.bin, DIR/meta.json and DIR/tokenizer/.

    Given a tokenizer kind instead of a directory, trains that tokenizer on the corpus first.
    Each document is followed by the end-of-text (or [SEP]) token. With enough documents, a
    seeded draw holds out whole documents for validation, decided as they stream past (memory
    stays the same whatever the corpus size); a single document (one text file,
    such as tiny Shakespeare) keeps its last --val-fraction of characters for validation, as
    nanoGPT does. Token files are uint16 when the vocabulary has at most 65,536 ids, else uint32.

    Args:
        data: sources: text files (one document each), directories (every .txt/.md inside,
            one document per file), globs, .jsonl files (one document per line), .parquet/.csv/.arrow
            files (one per row), a corpus name such as tinyshakespeare (lmforge corpora lists them),
            an https:// URL (downloaded once; optional #sha256=HEX), hf:NAME[:CONFIG][@SPLIT] (a
            Hugging Face dataset), or builtin:stdlib-docs (the standard library's docstrings, 1.7 MB).
        tokenizer: a tokenizer directory, or a kind to train here: char, word, bpe, wordpiece, unigram.
        out: the dataset directory to create.
        vocab_size: vocabulary size when training a tokenizer (special tokens included).
        val_fraction: share of the corpus held out for validation, strictly between 0 and 1.
        seed: seeds the document shuffle that picks the validation documents.
        text_field: the field (.jsonl) or column (hf:, .parquet, .csv, .arrow) holding the text.
        errors: bytes that are not UTF-8: stop and say where (strict), or read them as U+FFFD (replace).
        lowercase: lowercase the text (when training a tokenizer).
        min_frequency: drop rarer characters, words or merges (when training a tokenizer).
        byte_fallback: char tokenizer: unseen characters become UTF-8 byte tokens instead of <unk>.
        special: special-token overrides NAME=TOKEN (names: pad bos eos unk mask cls sep).
        overwrite: replace an existing --out directory.
        progress: show a progress bar on large inputs (default: when stderr is a terminal).
        as_json: print the metadata (meta.json plus "out") as one JSON object.

    Examples:
        lmforge prepare --data tinyshakespeare --tokenizer char --out data/shakespeare-char
        lmforge prepare --data builtin:stdlib-docs --tokenizer tok/bpe --out data/stdlib-bpe
        lmforge prepare --data my_posts.jsonl --text-field body --tokenizer tok/bpe --out data/posts
        lmforge prepare --data 'my_notes/**/*.md' --tokenizer wordpiece --val-fraction 0.05 --out data/notes
        lmforge prepare --data hf:wikitext:wikitext-2-raw-v1@train --tokenizer bpe --out data/wikitext
    """
    from lmforge.data.prepare import describe, prepare_dataset
    from lmforge.tokenizers import parse_special

    options = {"lowercase": lowercase, "min_frequency": min_frequency, "byte_fallback": byte_fallback}
    if special:
        options["special_tokens"] = parse_special(special)
    meta = prepare_dataset(
        data,
        tokenizer,
        out,
        vocab_size=vocab_size,
        tokenizer_options=options,
        val_fraction=val_fraction,
        seed=seed,
        text_field=text_field,
        errors=errors,
        overwrite=overwrite,
        progress=False if as_json else progress,
    )
    if as_json:
        print_json({"out": str(out), **meta})
    else:
        print(f"prepared {out}/: {describe(meta)}")
        print(f"next: lmforge pretrain --data {out} --out runs/NAME --max-time 60")
    return meta

"""``lmforge prepare``: tokenize a corpus into train/val token files that training memory-maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import OUT_DIR, POSITIVE, SEED, SOURCES, Bounds, Text
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError


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
    task: Literal["lm", "seq2seq"] = "lm",
    source_field: Annotated[str, Text(what="a field name")] = "source",
    target_field: Annotated[str, Text(what="a field name")] = "target",
    target_tokenizer: Annotated[str | None, Text(what="a tokenizer directory or a kind")] = None,
    target_vocab_size: Annotated[int | None, Bounds(positive=True, at_most=1_000_000)] = None,
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

    With --task seq2seq, writes source/target pairs for an encoder-decoder model instead (DIR/
    train.source.bin, train.target.bin, ...): from one .jsonl file (--source-field, --target-field),
    one .tsv file (source<TAB>target), two parallel text files (--data SOURCES TARGETS, line i
    with line i) or a built-in task: builtin:stdlib-signatures (a function's signature -> the
    first line of its docstring, split by module), builtin:copy, builtin:reverse, builtin:sort
    (random letters; options as 'builtin:reverse?length=8-16,size=5000,alphabet=10,seed=0').
    One tokenizer is trained on sources and targets of the train split, unless --target-tokenizer
    gives the target its own.

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
        task: lm (one token stream, for a language model) or seq2seq (source/target pairs).
        source_field: seq2seq, .jsonl: the field holding the source text.
        target_field: seq2seq, .jsonl: the field holding the target text.
        target_tokenizer: seq2seq: a separate tokenizer (directory or kind) for the targets.
        target_vocab_size: seq2seq: the target tokenizer's vocabulary size (default: --vocab-size).
        overwrite: replace an existing --out directory.
        progress: show a progress bar on large inputs (default: when stderr is a terminal).
        as_json: print the metadata (meta.json plus "out") as one JSON object.

    Examples:
        lmforge prepare --data tinyshakespeare --tokenizer char --out data/shakespeare-char
        lmforge prepare --data builtin:stdlib-docs --tokenizer tok/bpe --out data/stdlib-bpe
        lmforge prepare --data my_posts.jsonl --text-field body --tokenizer tok/bpe --out data/posts
        lmforge prepare --data 'my_notes/**/*.md' --tokenizer wordpiece --val-fraction 0.05 --out data/notes
        lmforge prepare --data hf:wikitext:wikitext-2-raw-v1@train --tokenizer bpe --out data/wikitext
        lmforge prepare --task seq2seq --data 'builtin:reverse?length=8-16' --tokenizer char --out data/reverse
        lmforge prepare --task seq2seq --data builtin:stdlib-signatures --tokenizer bpe --vocab-size 2000 --out data/signatures
        lmforge prepare --task seq2seq --data my_pairs.jsonl --source-field en --target-field fr --tokenizer bpe --out data/en-fr
        lmforge prepare --task seq2seq --data my_train.en my_train.fr --tokenizer bpe --target-tokenizer bpe --out data/en-fr
    """
    from lmforge.data.prepare import describe, prepare_dataset
    from lmforge.tokenizers import parse_special

    options = {"lowercase": lowercase, "min_frequency": min_frequency, "byte_fallback": byte_fallback}
    if special:
        options["special_tokens"] = parse_special(special)
    seq2seq_only = {
        "--source-field": source_field != "source",
        "--target-field": target_field != "target",
        "--target-tokenizer": target_tokenizer is not None,
        "--target-vocab-size": target_vocab_size is not None,
    }
    if task == "seq2seq":
        return _prepare_seq2seq(
            data,
            tokenizer,
            out,
            target_tokenizer=target_tokenizer,
            vocab_size=vocab_size,
            target_vocab_size=target_vocab_size,
            tokenizer_options=options,
            source_field=source_field,
            target_field=target_field,
            text_field=text_field,
            val_fraction=val_fraction,
            seed=seed,
            errors=errors,
            overwrite=overwrite,
            as_json=as_json,
        )
    given = [flag for flag, is_given in seq2seq_only.items() if is_given]
    if given:
        raise UserInputError(
            f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --task seq2seq"
        )
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


def _prepare_seq2seq(
    data: list[str], tokenizer: str, out: Path, *, text_field: str, as_json: bool, **options
) -> dict:
    from lmforge.data.seq2seq_prepare import describe_seq2seq, prepare_seq2seq

    if text_field != "text":
        raise UserInputError(
            "--text-field names the text of a language-model corpus; pairs use --source-field and --target-field"
        )
    meta = prepare_seq2seq(data, tokenizer, out, **options)
    if as_json:
        print_json({"out": str(out), **meta})
    else:
        print(f"prepared {out}/: {describe_seq2seq(meta)}")
        print(f"next: lmforge pretrain --data {out} --model seq2seq-nano --out runs/NAME --max-time 60")
    return meta

"""prepare_dataset and load_prepared: the token files decode back to the corpus, split as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lmforge.data import builtin, encoding
from lmforge.data.encoding import CUT_RULES, BatchEncoder, chunk_text
from lmforge.data.prepare import load_prepared, prepare_dataset, token_dtype
from lmforge.errors import DataError, OutputExistsError, TokenizerError, UserInputError
from lmforge.tokenizers import train_tokenizer

EOT = "<|endoftext|>"

# Indented code, blank lines, runs of spaces and trailing whitespace: the places where a naive
# cut after any newline changes what byte-level BPE produces.
TRICKY = "".join(
    f"Paragraph {i} says  something,\n    indented {i * 7} lines\n\n\n  and\t more.  \n"
    f"def f{i}(x):\n    return x  # done\n\nAll:\nSpeak, speak.\n"
    for i in range(60)
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, texts: list[str]) -> Path:
    return write(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def ids(directory: Path, split: str) -> list[int]:
    return load_prepared(directory).split(split).tolist()


def decoded(directory: Path, split: str) -> str:
    data = load_prepared(directory)
    return data.tokenizer.decode(data.split(split).tolist())


def siblings(path: Path) -> list[str]:
    """Everything beside ``path`` in its parent, so a leftover temporary directory shows."""
    return sorted(p.name for p in path.parent.iterdir())


# --- what the files hold ---------------------------------------------------------------------------


def test_char_ids_are_the_hand_computed_ones(tmp_path):
    corpus = write(tmp_path / "in.txt", "hello\nworld\n")
    meta = prepare_dataset([str(corpus)], "char", tmp_path / "out", val_fraction=0.25)
    # vocabulary: <|endoftext|>=0 (bos, eos), <unk>=1, then characters by code point:
    # \n=2 d=3 e=4 h=5 l=6 o=7 r=8 w=9. 12 characters, cut at int(12 * 0.75) = 9.
    assert ids(tmp_path / "out", "train") == [5, 4, 6, 6, 7, 2, 9, 7, 8]  # "hello\nwor"
    assert ids(tmp_path / "out", "val") == [6, 3, 2, 0]  # "ld\n" + separator
    assert meta["dtype"] == "uint16" and (tmp_path / "out/train.bin").stat().st_size == 9 * 2
    assert meta["split"] == {"rule": "position", "val_fraction": 0.25, "seed": 0, "cut_character": 9}
    assert meta["document_separator"]["token"] == EOT


def test_single_document_validation_is_its_last_fraction_as_in_nanogpt(tmp_path):
    text = "".join(f"Line {i}: the quick brown fox.\n" for i in range(400))
    corpus = write(tmp_path / "in.txt", text)
    meta = prepare_dataset([str(corpus)], "char", tmp_path / "out")
    cut = int(len(text) * 0.9)  # nanoGPT: data[:int(n * 0.9)] / data[int(n * 0.9):]
    assert decoded(tmp_path / "out", "train") == text[:cut]
    assert decoded(tmp_path / "out", "val") == text[cut:] + EOT
    assert (meta["train_tokens"], meta["val_tokens"]) == (cut, len(text) - cut + 1)


def test_documents_split_holds_out_whole_documents_each_followed_by_the_separator(tmp_path):
    texts = [f"document {i:02d} about {'cats' if i % 2 else 'dogs'}.\nIt ends here." for i in range(20)]
    corpus = write_jsonl(tmp_path / "docs.jsonl", texts)
    meta = prepare_dataset([str(corpus)], "char", tmp_path / "out", val_fraction=0.25, seed=3)
    train, val = decoded(tmp_path / "out", "train"), decoded(tmp_path / "out", "val")
    assert train.endswith(EOT) and val.endswith(EOT)
    train_docs, val_docs = train.split(EOT)[:-1], val.split(EOT)[:-1]
    assert len(val_docs) == 5 and len(train_docs) == 15  # round(20 * 0.25)
    assert sorted(train_docs + val_docs) == sorted(texts)  # every document whole, none twice
    assert train_docs == [t for t in texts if t in train_docs]  # corpus order kept in each split
    assert meta["split"] == {"rule": "documents", "val_fraction": 0.25, "seed": 3}
    assert (meta["train_documents"], meta["val_documents"], meta["documents"]) == (15, 5, 20)


def test_documents_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    corpus = write_jsonl(tmp_path / "docs.jsonl", [f"text number {i}" for i in range(30)])
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare_dataset([str(corpus)], "char", tmp_path / name, seed=seed)
    read = {name: (tmp_path / name / "val.bin").read_bytes() for name in "abc"}
    assert read["a"] == read["b"]
    assert (tmp_path / "a/train.bin").read_bytes() == (tmp_path / "b/train.bin").read_bytes()
    assert read["a"] != read["c"]


def test_too_few_documents_for_the_fraction_fall_back_to_a_position_cut(tmp_path):
    # 3 documents * 0.1 < 1 whole document: cut the concatenated text instead
    texts = ["a" * 50, "b" * 50, "c" * 50]
    corpus = write_jsonl(tmp_path / "docs.jsonl", texts)
    meta = prepare_dataset([str(corpus)], "char", tmp_path / "out")
    assert meta["split"]["rule"] == "position" and meta["split"]["cut_character"] == 135
    assert decoded(tmp_path / "out", "train") == f"{'a' * 50}{EOT}{'b' * 50}{EOT}{'c' * 35}"
    assert decoded(tmp_path / "out", "val") == "c" * 15 + EOT
    assert (meta["train_documents"], meta["val_documents"]) == (3, 1)  # the cut one counts in both


def test_dtype_is_uint16_while_ids_fit_else_uint32():
    assert token_dtype(256) == np.uint16
    assert token_dtype(65_536) == np.uint16  # ids 0..65535
    assert token_dtype(65_537) == np.uint32


def test_vocabulary_past_65536_ids_is_stored_as_uint32_without_wrapping(tmp_path):
    text = " ".join(f"w{i}" for i in range(66_000))
    corpus = write(tmp_path / "in.txt", text)
    tokenizer = train_tokenizer("word", [text])
    assert tokenizer.vocab_size > 65_536
    meta = prepare_dataset([str(corpus)], tokenizer, tmp_path / "out")
    assert meta["dtype"] == "uint32"
    cut = meta["split"]["cut_character"]
    data = load_prepared(tmp_path / "out")
    assert data.split("train").dtype == np.uint32 and data.split("train").max() >= 65_536
    assert data.split("train").tolist() == tokenizer.encode(text[:cut])
    assert data.split("val").tolist() == tokenizer.encode(text[cut:]) + [tokenizer.eos_id]


# --- chunked encoding is exact -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece", "char"])
def test_chunked_encoding_equals_whole_text_encoding(kind):
    tokenizer = train_tokenizer(kind, [TRICKY], {"bpe": 400, "unigram": 200, "wordpiece": 200}.get(kind))
    pieces = chunk_text(TRICKY, CUT_RULES[kind], chunk_chars=300)
    assert len(pieces) > 10 and "".join(pieces) == TRICKY
    chunked = [i for piece_ids in tokenizer.encode_batch(pieces) for i in piece_ids]
    assert chunked == tokenizer.encode(TRICKY)


@pytest.mark.parametrize(("kind", "naive"), [("bpe", r"(?<=\n)"), ("unigram", r"(?<=\S\n)(?=\S)")])
def test_a_naive_cut_would_change_the_ids(kind, naive):
    """The text above is hard enough: cutting after any newline (bpe) or at newlines (unigram) differs."""
    tokenizer = train_tokenizer(kind, [TRICKY], {"bpe": 400, "unigram": 200}[kind])
    pieces = chunk_text(TRICKY, re.compile(naive), chunk_chars=300)
    chunked = [i for piece_ids in tokenizer.encode_batch(pieces) for i in piece_ids]
    assert chunked != tokenizer.encode(TRICKY)


def test_prepare_cuts_long_documents_and_still_matches_whole_encoding(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "CHUNK_CHARS", 300)
    tokenizer = train_tokenizer("bpe", [TRICKY], 400)
    batches = []
    original = BatchEncoder.encode_batch
    monkeypatch.setattr(
        BatchEncoder, "encode_batch", lambda self, texts: batches.append(len(texts)) or original(self, texts)
    )
    corpus = write(tmp_path / "in.txt", TRICKY)
    meta = prepare_dataset([str(corpus)], tokenizer, tmp_path / "out")
    assert sum(batches) > 10  # the document really was cut
    cut = meta["split"]["cut_character"]
    assert ids(tmp_path / "out", "train") == tokenizer.encode(TRICKY[:cut])
    assert ids(tmp_path / "out", "val") == tokenizer.encode(TRICKY[cut:]) + [tokenizer.document_separator_id]


# --- bad input: a clear error and nothing written ------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_must_be_strictly_between_0_and_1(tmp_path, fraction):
    corpus = write(tmp_path / "in.txt", "some text " * 20)
    with pytest.raises(UserInputError, match="strictly between 0 and 1"):
        prepare_dataset([str(corpus)], "char", tmp_path / "out", val_fraction=fraction)
    assert not (tmp_path / "out").exists()


def test_corpus_too_small_for_a_validation_split(tmp_path):
    corpus = write(tmp_path / "in.txt", "a")  # int(1 * 0.9) = 0 characters left for training
    with pytest.raises(DataError, match="too little"):
        prepare_dataset([str(corpus)], "char", tmp_path / "out", val_fraction=0.1)
    assert siblings(tmp_path / "out") == ["in.txt"]


def test_existing_output_is_refused_and_kept_unless_overwrite(tmp_path):
    corpus = write(tmp_path / "in.txt", "some text " * 20)
    write(tmp_path / "theirs/keep.txt", "precious")
    for overwrite in (False, True):  # someone else's files: never, --overwrite or not
        with pytest.raises(OutputExistsError, match="not a prepared dataset .keep.txt."):
            prepare_dataset([str(corpus)], "char", tmp_path / "theirs", overwrite=overwrite)
    assert (tmp_path / "theirs/keep.txt").read_text() == "precious"
    prepare_dataset([str(corpus)], "char", tmp_path / "out")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_dataset([str(corpus)], "char", tmp_path / "out")
    prepare_dataset([str(corpus)], "char", tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "meta.json",
        "tokenizer",
        "train.bin",
        "val.bin",
    ]


def test_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    corpus = write(tmp_path / "in.txt", "some text " * 20)
    tokenizer = train_tokenizer("char", ["some text"])

    def broken(self, texts):
        raise TokenizerError("boom")

    monkeypatch.setattr(type(tokenizer), "encode_batch", broken)
    with pytest.raises(TokenizerError, match="boom"):
        prepare_dataset([str(corpus)], tokenizer, tmp_path / "out")
    assert siblings(tmp_path / "out") == ["in.txt"]  # no out/, no .out.*.tmp


def test_undecodable_second_source_fails_before_anything_is_written(tmp_path):
    good = write(tmp_path / "good.txt", "fine text " * 10)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"bad\.txt: byte offset 3"):
        prepare_dataset([str(good), str(bad)], "char", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    meta = prepare_dataset([str(good), str(bad)], "char", tmp_path / "out", errors="replace")
    assert "\ufffd" in decoded(tmp_path / "out", "train") + decoded(tmp_path / "out", "val")
    assert meta["errors"] == "replace"


def test_training_options_with_an_existing_tokenizer_are_refused(tmp_path):
    corpus = write(tmp_path / "in.txt", "some text " * 20)
    train_tokenizer("char", ["some text"]).save(tmp_path / "tok")
    with pytest.raises(UserInputError, match="--vocab-size only apply"):
        prepare_dataset([str(corpus)], tmp_path / "tok", tmp_path / "out", vocab_size=50)
    with pytest.raises(UserInputError, match="not a kind to train"):
        prepare_dataset([str(corpus)], "sentencepiece", tmp_path / "out")


# --- metadata and the reader ------------------------------------------------------------------------


def test_meta_records_sources_tokenizer_and_builtin_python(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        builtin.BUILTINS, "tiny", ("tiny corpus", lambda: [(f"m{i}", f"doc {i} text") for i in range(12)])
    )
    corpus = write(tmp_path / "in.txt", "extra text")
    meta = prepare_dataset(["builtin:tiny", str(corpus)], "char", tmp_path / "out")
    assert [s["spec"] for s in meta["sources"]] == ["builtin:tiny", str(corpus)]
    assert meta["sources"][0]["python_version"] == builtin.python_version()
    assert [s["documents"] for s in meta["sources"]] == [12, 1]
    assert meta["tokenizer"]["path"] == "tokenizer" and meta["tokenizer"]["special_ids"]["eos"] == 0
    assert meta["documents"] == 13 and meta["train_documents"] + meta["val_documents"] == 13
    assert meta["text_bytes"] == sum(len(f"doc {i} text") for i in range(12)) + len("extra text")
    assert json.loads((tmp_path / "out/meta.json").read_text()) == meta
    for key in ("lmforge_version", "elapsed_seconds", "text_mb_per_s", "format_version"):
        assert key in meta


def test_load_prepared_maps_splits_and_loads_the_tokenizer_lazily(tmp_path):
    corpus = write(tmp_path / "in.txt", "hello world, " * 30)
    prepare_dataset([str(corpus)], "char", tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert "tokenizer" not in vars(data)  # not loaded yet
    assert isinstance(data.split("train"), np.memmap) and not data.split("val").flags.writeable
    assert data.tokenizer.kind == "char" and data.tokenizer_dir == tmp_path / "out/tokenizer"
    with pytest.raises(DataError, match="no split 'test'"):
        data.split("test")


def test_load_prepared_explains_what_is_wrong(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(
        DataError, match=r"is not a prepared dataset \(no meta.json\); create one with `lmforge prepare"
    ):
        load_prepared(tmp_path / "plain")
    with pytest.raises(DataError, match="does not exist"):
        load_prepared(tmp_path / "missing")
    corpus = write(tmp_path / "in.txt", "hello world, " * 30)
    prepare_dataset([str(corpus)], "char", tmp_path / "out")
    with (tmp_path / "out/train.bin").open("ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(DataError, match="damaged"):
        load_prepared(tmp_path / "out").split("train")

"""Saving and loading: the same ids after a round trip through disk; one clear error when broken."""

from __future__ import annotations

import json

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import TokenizerError, UserInputError
from lmforge.tokenizers import KINDS, load_tokenizer, train_tokenizer

from .conftest import CORPUS, trained


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """kind -> (trained tokenizer, the same tokenizer saved and loaded back)."""
    pairs = {}
    for kind in KINDS:
        directory = tmp_path_factory.mktemp(kind)
        trained(kind).save(directory)
        pairs[kind] = (trained(kind), load_tokenizer(directory))
    return pairs


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200) | st.sampled_from(CORPUS))
def test_loaded_tokenizer_gives_identical_ids(reloaded, kind, text):
    original, loaded = reloaded[kind]
    ids = original.encode(text)
    assert loaded.encode(text) == ids
    assert loaded.decode(ids) == original.decode(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_tokenizer_keeps_kind_specials_and_options(reloaded, kind):
    original, loaded = reloaded[kind]
    assert type(loaded) is type(original) and loaded.kind == kind
    assert loaded.special_tokens == original.special_tokens
    assert loaded.special_ids == original.special_ids
    assert loaded.vocab_size == original.vocab_size
    assert loaded.options == original.options


def test_metadata_file_records_kind_and_options(tmp_path):
    trained("char", byte_fallback=True).save(tmp_path)
    meta = json.loads((tmp_path / "lmforge_tokenizer.json").read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "char" and meta["byte_fallback"] is True
    assert meta["special_tokens"] == {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<unk>"}
    assert meta["vocab_size"] == trained("char", byte_fallback=True).vocab_size
    # The model file is plain Hugging Face, for char and word too.
    assert (
        tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size()
        == meta["vocab_size"]
    )


def test_tokenizer_subdirectory_of_a_run_is_found(tmp_path):
    trained("bpe").save(tmp_path / "tokenizer")
    assert load_tokenizer(tmp_path).encode("lecture") == trained("bpe").encode("lecture")


def test_missing_directory(tmp_path):
    with pytest.raises(
        TokenizerError, match=r"no tokenizer at .*nope: the path does not exist; train one with"
    ):
        load_tokenizer(tmp_path / "nope")


def test_directory_without_metadata(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(TokenizerError, match=r"lmforge_tokenizer.json is missing"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("lmforge_tokenizer.json", "{not json", r"lmforge_tokenizer.json is corrupt"),
        ("lmforge_tokenizer.json", '{"special_tokens": {}}', r"lmforge_tokenizer.json has no 'kind' field"),
        ("lmforge_tokenizer.json", None, r"has format_version 99; this lmforge reads version 1"),
        ("tokenizer.json", '{"model": 3}', r"tokenizer.json is not a valid Hugging Face tokenizer file"),
        ("tokenizer.json", "", r"tokenizer.json is not a valid Hugging Face tokenizer file"),
    ],
)
def test_corrupt_files_name_the_file(tmp_path, file, content, message):
    trained("word").save(tmp_path)
    if content is None:  # a file from a future lmforge
        meta = json.loads((tmp_path / file).read_text())
        content = json.dumps({**meta, "format_version": 99})
    (tmp_path / file).write_text(content)
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(tmp_path)


def test_special_token_missing_from_the_model_file(tmp_path):
    trained("bpe").save(tmp_path)
    meta = json.loads((tmp_path / "lmforge_tokenizer.json").read_text())
    (tmp_path / "lmforge_tokenizer.json").write_text(
        json.dumps({**meta, "special_tokens": {"pad": "<nope>"}})
    )
    with pytest.raises(
        TokenizerError, match=r"does not hold together: special tokens \{'pad': '<nope>'\} are not in"
    ):
        load_tokenizer(tmp_path)


def test_missing_model_file(tmp_path):
    trained("bpe").save(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match=r"tokenizer.json is missing from the bpe tokenizer"):
        load_tokenizer(tmp_path)


def test_decode_refuses_ids_outside_the_vocabulary():
    tok = trained("char")
    with pytest.raises(
        TokenizerError, match=rf"token id {tok.vocab_size} is outside .* \(ids 0..{tok.vocab_size - 1}\)"
    ):
        tok.decode([0, tok.vocab_size])


def test_training_input_errors():
    with pytest.raises(TokenizerError, match="no text to train on"):
        train_tokenizer("bpe", ["", ""], 300)
    with pytest.raises(TokenizerError, match="no text to train on"):
        train_tokenizer("char", [])
    with pytest.raises(
        UserInputError, match="unknown tokenizer kind 'sentencepiece'; choose one of char, word"
    ):
        train_tokenizer("sentencepiece", CORPUS)
    with pytest.raises(UserInputError, match="--byte-fallback is not available for word"):
        train_tokenizer("word", CORPUS, byte_fallback=True)
    with pytest.raises(UserInputError, match="--min-frequency does not apply to unigram"):
        train_tokenizer("unigram", CORPUS, 200, min_frequency=2)


def test_a_single_string_is_one_document():
    tok = train_tokenizer("word", "Henry is giving a lecture")
    assert tok.tokens(tok.encode("Henry lecture")) == ["Henry", "lecture"]

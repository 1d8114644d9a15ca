"""Subword tokenizers: byte-level BPE never needs <unk>; WordPiece uses ##; Unigram uses ▁."""

from __future__ import annotations

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import TokenizerError
from lmforge.tokenizers import train_tokenizer

from .conftest import CORPUS, trained

SUBWORD_KINDS = ("bpe", "wordpiece", "unigram")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_unicode(text):
    tok = trained("bpe")
    assert tok.decode(tok.encode(text)) == text


def test_bpe_vocabulary_holds_all_256_bytes_and_no_unk():
    tok = trained("bpe")
    byte_chars = tokenizers.pre_tokenizers.ByteLevel.alphabet()  # GPT-2's printable stand-ins for bytes
    assert len(byte_chars) == 256
    assert all(tok.token_to_id(char) is not None for char in byte_chars)
    assert tok.unk_id is None and "unk" not in tok.special_tokens


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_bpe_never_produces_an_unknown_token(text):
    tok = trained("bpe")
    ids = tok.encode(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    # Nothing is lost: the pieces' bytes are exactly the text's bytes.
    assert tok.decode(ids).encode() == text.encode()


def test_bpe_merges_common_words_and_splits_rare_ones():
    tok = trained("bpe")
    assert tok.tokens(tok.encode(" transformers")) == ["Ġtransformers"]  # Ġ is GPT-2's stand-in for a space
    assert len(tok.encode(" lectrue")) > 1


def test_wordpiece_continues_a_rare_word_with_hashes():
    tok = trained("wordpiece")
    pieces = tok.tokens(tok.encode("lectrue"))
    assert len(pieces) > 1 and not pieces[0].startswith("##")
    assert all(piece.startswith("##") for piece in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == "lectrue"
    assert tok.tokens(tok.encode("lecture")) == ["lecture"]
    assert tok.decode(tok.encode("Henry is giving a lecture.")) == "Henry is giving a lecture."


def test_wordpiece_unseen_character_is_unk():
    tok = trained("wordpiece")
    assert tok.tokens(tok.encode("a ✓ b")) == ["a", "[UNK]", "b"]


def test_unigram_marks_spaces_with_metaspace():
    tok = trained("unigram")
    pieces = tok.tokens(tok.encode("the lecture"))
    assert pieces[0].startswith("▁") and "".join(pieces).replace("▁", " ").strip() == "the lecture"
    assert tok.decode(tok.encode("Henry is giving a lecture")) == "Henry is giving a lecture"


@pytest.mark.parametrize("kind", SUBWORD_KINDS)
def test_vocab_size_is_honoured(kind):
    assert trained(kind).vocab_size == {"bpe": 400, "wordpiece": 300, "unigram": 200}[kind]


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory) -> dict[str, tokenizers.Tokenizer]:
    """Each subword tokenizer saved by lmforge, then loaded by plain Hugging Face ``tokenizers``."""
    loaded = {}
    for kind in SUBWORD_KINDS:
        directory = tmp_path_factory.mktemp(kind)
        trained(kind).save(directory)
        loaded[kind] = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    return loaded


@pytest.mark.parametrize("kind", SUBWORD_KINDS)
@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_hugging_face_loads_the_saved_file_unchanged(hf_files, kind, text):
    tok = trained(kind)
    hf = hf_files[kind]
    assert hf.encode(text).ids == tok.encode(text)
    assert hf.decode(tok.encode(text), skip_special_tokens=False) == tok.decode(tok.encode(text))


def test_lowercase_applies_to_every_subword_kind():
    for kind in SUBWORD_KINDS:
        tok = trained(kind, lowercase=True)
        assert tok.encode("HENRY IS GIVING A LECTURE") == tok.encode("henry is giving a lecture"), kind


def test_too_small_vocab_says_the_minimum_and_why():
    with pytest.raises(
        TokenizerError, match=r"256 byte tokens \+ 1 special token = 257; got --vocab-size 100"
    ):
        train_tokenizer("bpe", CORPUS, 100)
    with pytest.raises(
        TokenizerError, match=r"too small for WordPiece.*5 special tokens \+ the \d+ distinct characters"
    ):
        train_tokenizer("wordpiece", CORPUS, 30)
    with pytest.raises(
        TokenizerError, match=r"too small for Unigram.*4 special tokens \+ \d+ distinct characters"
    ):
        train_tokenizer("unigram", CORPUS, 20)


def test_encode_batch_matches_encode():
    texts = CORPUS[:5] + ["", "✓ 漢字"]
    for kind in ("char", "word", *SUBWORD_KINDS):
        tok = trained(kind)
        assert tok.encode_batch(texts) == [tok.encode(t) for t in texts], kind

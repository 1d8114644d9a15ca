"""Character tokenizer: vocabulary = characters seen; unknown -> <unk> or UTF-8 bytes."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import TokenizerError
from lmforge.tokenizers import train_tokenizer

from .conftest import CORPUS, trained


def test_vocabulary_is_specials_plus_distinct_characters():
    tok = trained("char")
    distinct = set("".join(CORPUS))
    assert tok.vocab_size == 2 + len(distinct)  # <|endoftext|> (bos = eos) and <unk>
    assert tok.tokens(range(tok.vocab_size))[2:] == sorted(distinct)  # code-point order, like nanoGPT


def test_one_id_per_character_and_exact_round_trip_on_seen_characters():
    tok = trained("char")
    text = "Henry is givin' a lectrue on transformers"
    assert tok.tokens(tok.encode(text)) == list(text)
    assert tok.decode(tok.encode(text)) == text


def test_unseen_character_becomes_unk_without_byte_fallback():
    tok = trained("char")
    assert "✓" not in "".join(CORPUS) and "Q" not in "".join(CORPUS)
    assert tok.tokens(tok.encode("Henry ✓Q")) == ["H", "e", "n", "r", "y", " ", "<unk>", "<unk>"]
    assert tok.encode("✓") == [tok.unk_id]


def test_byte_fallback_spells_unseen_character_as_utf8_bytes():
    tok = trained("char", byte_fallback=True)
    assert tok.vocab_size == 2 + 256 + len(set("".join(CORPUS)))
    assert tok.tokens(tok.encode("a✓")) == ["a"] + [f"<0x{b:02X}>" for b in "✓".encode()]
    assert tok.unk_id not in tok.encode("✓ 漢字 😀 \x00")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_byte_fallback_round_trips_any_unicode(text):
    tok = trained("char", byte_fallback=True)
    assert tok.decode(tok.encode(text)) == text


def test_vocab_size_keeps_the_most_frequent_characters():
    counts = Counter("".join(CORPUS))
    tok = train_tokenizer("char", CORPUS, 2 + 10)
    expected = sorted(sorted(counts, key=lambda c: (-counts[c], c))[:10])
    assert tok.vocab_size == 12
    assert tok.tokens(range(2, 12)) == expected


def test_min_frequency_drops_rare_characters():
    counts = Counter("".join(CORPUS))
    tok = train_tokenizer("char", CORPUS, min_frequency=20)
    assert tok.tokens(range(2, tok.vocab_size)) == sorted(c for c, n in counts.items() if n >= 20)
    rare = min(counts, key=counts.get)
    assert tok.encode(rare) == [tok.unk_id]


def test_lowercase_folds_case_before_counting_and_encoding():
    tok = train_tokenizer("char", ["Hello World"], lowercase=True)
    assert "H" not in tok.tokens(range(tok.vocab_size))
    assert tok.encode("HELLO") == tok.encode("hello")


def test_vocab_size_below_specials_plus_bytes_is_refused_with_the_minimum():
    with pytest.raises(
        TokenizerError, match=r"256 byte-fallback tokens \+ 1 character = 259 ids; got --vocab-size 100"
    ):
        train_tokenizer("char", CORPUS, 100, byte_fallback=True)
    with pytest.raises(TokenizerError, match="= 3 ids; got --vocab-size 2"):
        train_tokenizer("char", CORPUS, 2)

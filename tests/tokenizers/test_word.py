"""Word tokenizer: the out-of-vocabulary effect from the lecture notes, lowercasing, min frequency."""

from __future__ import annotations

import pytest

from lmforge.errors import TokenizerError
from lmforge.tokenizers import train_tokenizer

from .conftest import CORPUS, trained

LECTURE = "Henry is givin' a lectrue on transformers"


def test_typos_are_out_of_vocabulary():
    tok = trained("word")
    # "givin" and "lectrue" never occur in CORPUS; the apostrophe does (in "It's").
    expected = ["Henry", "is", "<unk>", "'", "a", "<unk>", "on", "transformers"]
    assert tok.tokens(tok.encode(LECTURE)) == expected
    assert tok.encode(LECTURE).count(tok.unk_id) == 2


def test_lowercase_matches_the_lecture_notes():
    tok = train_tokenizer("word", ["Henry is giving a lecture on transformers"], lowercase=True)
    # The notes' example; the apostrophe was never seen here, so it is <unk> too.
    expected = ["henry", "is", "<unk>", "<unk>", "a", "<unk>", "on", "transformers"]
    assert tok.tokens(tok.encode(LECTURE)) == expected
    assert tok.encode("HENRY") == tok.encode("henry") != [tok.unk_id]


def test_without_lowercase_case_matters():
    tok = train_tokenizer("word", ["Henry is here"])
    assert tok.encode("henry") == [tok.unk_id]


def test_punctuation_is_split_from_words():
    tok = trained("word")
    assert tok.tokens(tok.encode("lecture, transformers.")) == ["lecture", ",", "transformers", "."]


def test_vocabulary_is_specials_then_words_by_frequency():
    tok = train_tokenizer("word", ["b a a c c c"])
    assert tok.tokens(range(tok.vocab_size)) == ["<pad>", "<unk>", "<|endoftext|>", "c", "a", "b"]


def test_min_frequency_drops_rare_words():
    tok = train_tokenizer("word", ["b a a c c c"], min_frequency=2)
    assert tok.tokens(tok.encode("a b c")) == ["a", "<unk>", "c"]


def test_vocab_size_keeps_the_most_frequent_words():
    tok = train_tokenizer("word", ["b a a c c c"], 3 + 2)
    assert tok.tokens(tok.encode("a b c")) == ["a", "<unk>", "c"]


def test_decode_joins_words_with_spaces():
    tok = trained("word")
    assert tok.decode(tok.encode("Henry is giving a lecture")) == "Henry is giving a lecture"


def test_errors_for_too_small_vocab_and_no_words():
    with pytest.raises(
        TokenizerError, match="at least 3 special tokens \\+ 1 word = 4 ids; got --vocab-size 3"
    ):
        train_tokenizer("word", CORPUS, 3)
    with pytest.raises(TokenizerError, match="no word occurs at least --min-frequency 100 times"):
        train_tokenizer("word", CORPUS, min_frequency=100)

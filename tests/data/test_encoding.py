"""BatchEncoder's ASCII fast path for byte-level BPE gives exactly Hugging Face's ids."""

from __future__ import annotations

import functools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.encoding import BatchEncoder
from lmforge.tokenizers import Tokenizer, train_tokenizer

TRAINING = [
    "It's a long lecture, but it's a good one; they'll say we'd've done it. I'm sure you're right.\n" * 3,
    "def f(x_1, y2):\n    return x_1 + 42  # done\n\n\n\tTabs\tand  double  spaces  \r\n" * 3,
    "Numbers 3.14, 1999 and 42nd; URLs http://a.b/c?d=e&f=g -- (parens) [brackets] {braces}!\n" * 3,
]
# Every ASCII character class the GPT-2 pattern distinguishes, with the awkward ones repeated.
ALPHABET = string.ascii_letters[:6] + "Zz09 \t\n\r\x0b\x0c\x1c\x1f\x00\x7f'sdtmlrve.,!_-#@~`\"\\"


@functools.cache
def bpe(lowercase: bool = False) -> Tokenizer:
    return train_tokenizer("bpe", TRAINING, 400, lowercase=lowercase)


def test_the_fast_path_is_taken_for_lmforge_bpe_and_skips_the_tokenizer(monkeypatch):
    encoder = BatchEncoder(bpe())
    assert encoder.settings == (False, ("<|endoftext|>",))
    monkeypatch.setattr(type(bpe()), "encode_batch", lambda self, texts: pytest.fail("slow path used"))
    assert encoder.encode_batch(["plain ASCII text"]) == [bpe().encode("plain ASCII text")]


def test_other_tokenizers_use_their_own_encode_batch():
    assert BatchEncoder(train_tokenizer("wordpiece", TRAINING, 200)).settings is None
    assert BatchEncoder(bpe(), fast=False).settings is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=ALPHABET, max_size=60), min_size=1, max_size=8))
def test_fast_path_equals_hugging_face_on_random_ascii(texts):
    expected = [bpe().encode(text) for text in texts]
    assert BatchEncoder(bpe()).encode_batch(texts) == expected


def test_fast_path_equals_hugging_face_for_every_pair_of_ascii_characters():
    pairs = [f"a{chr(i)}{chr(j)}b {chr(j)}{chr(i)}" for i in range(128) for j in range(128)]
    encoder = BatchEncoder(bpe())
    assert encoder.encode_batch(pairs) == [encoding.ids for encoding in bpe().backend.encode_batch(pairs)]


@pytest.mark.parametrize("lowercase", [False, True])
def test_mixed_batches_keep_order_and_send_non_ascii_and_special_tokens_the_slow_way(lowercase):
    tokenizer = bpe(lowercase)
    texts = [
        "It's ASCII.\n\nAll:\n  Speak, SPEAK.",
        "café — naïve ✓ text",
        "before <|endoftext|> after",
        "",
        "   \n\n\t",
        TRAINING[1],
    ]
    encoder = BatchEncoder(tokenizer)
    assert encoder.encode_batch(texts) == [tokenizer.encode(text) for text in texts]
    assert encoder.encode_batch(texts[::-1]) == [
        tokenizer.encode(text) for text in texts[::-1]
    ]  # from the cache


def test_known_words_are_bounded(monkeypatch):
    from lmforge.data import encoding

    monkeypatch.setattr(encoding, "_MAX_KNOWN_WORDS", 5)
    encoder = BatchEncoder(bpe())
    first, second = "one two three four five six seven", "eight nine one"
    assert encoder.encode_batch([first]) == [bpe().encode(first)]
    assert encoder.encode_batch([second]) == [bpe().encode(second)]
    assert sorted(encoder.known) == [" nine", " one", "eight"]  # started afresh rather than grow past 5

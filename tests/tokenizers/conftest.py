"""A small English corpus and one tokenizer of each kind trained on it, shared by the tests."""

from __future__ import annotations

import functools

import pytest

from lmforge.tokenizers import Tokenizer, train_tokenizer

# About 4 KB: the lecture example plus ordinary English about language models, so common words
# repeat and "givin" / "lectrue" never occur.
SENTENCES = [
    "Henry is giving a lecture on transformers.",
    "The lecture on transformers is given by Henry on Monday.",
    "A language model assigns a probability to every sequence of words.",
    "The model reads the text one token at a time and predicts the next token.",
    "Tokenization turns raw text into a sequence of integer ids.",
    "A word tokenizer keeps a vocabulary of whole words, and unknown words become a special token.",
    "A character tokenizer needs only a small vocabulary, but its sequences are long.",
    "Subword tokenizers split rare words into pieces and keep common words whole.",
    "Byte pair encoding merges the most frequent pair of symbols again and again.",
    "WordPiece marks the pieces inside a word with two hash signs.",
    "SentencePiece treats the space as a symbol of its own.",
    "Attention lets every position look at every earlier position in the sequence.",
    "The students are listening to the lecture, and some of them are taking notes.",
    "Is the lecture recorded? Yes, the lecture is recorded and shared with the class.",
    "Henry says that transformers are trained with stochastic gradient descent.",
    "The loss is the cross-entropy between the predicted distribution and the next word.",
    "Perplexity is the exponential of the average cross-entropy on held-out text.",
    "Giving the model more data usually helps more than giving it more parameters.",
    "It's a long lecture, but it's a good one; nobody leaves early.",
    "Numbers such as 42, 1999 and 3.14 appear in text too.",
]
CORPUS = SENTENCES * 3  # one document per sentence; three times so min_frequency has counts to cut


@functools.cache
def trained(kind: str, **options) -> Tokenizer:
    """One tokenizer per (kind, options), trained on CORPUS and shared across tests."""
    vocab_size = {"bpe": 400, "wordpiece": 300, "unigram": 200}.get(kind)
    return train_tokenizer(kind, CORPUS, vocab_size, **options)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return list(CORPUS)

"""Word-level tokenizer: one id per word seen in training, everything else is ``<unk>``.

Trained on "Henry is giving a lecture on transformers" (and more), with ``lowercase=True``:

    "Henry is givin' a lectrue on transformers"
      -> henry  is  <unk>  '  a  <unk>  on  transformers

"givin" and "lectrue" never occurred in training, so they are out of vocabulary (OOV): the
model sees the same ``<unk>`` for both and cannot tell a typo from a rare word. That is the
trade-off subword tokenizers exist to fix. Words are split on whitespace and punctuation
(BERT's rule: each punctuation character is its own token). The vocabulary is the special
tokens (``<pad>``, ``<unk>``, ``<|endoftext|>`` as bos and eos), then the words by falling
frequency; ``min_frequency`` drops rare words and ``vocab_size`` (None = all) keeps the most
frequent. ``decode`` joins words with single spaces: spacing and, with lowercasing, case are lost.
"""

from __future__ import annotations

from collections.abc import Iterable

import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, trainers

from lmforge.errors import TokenizerError
from lmforge.tokenizers.hf import HFTokenizer, unique_tokens

_ALL_WORDS = 2**32  # the trainer wants a number; this means "no limit"


class WordTokenizer(HFTokenizer):
    """One id per known word; out-of-vocabulary words become ``<unk>``."""

    kind = "word"


def train_word(
    texts: Iterable[str],
    vocab_size: int | None,
    *,
    special_tokens: dict[str, str],
    lowercase: bool = False,
    min_frequency: int = 1,
    show_progress: bool = False,
) -> WordTokenizer:
    """Count the words of ``texts`` and keep those seen ``min_frequency`` times, most frequent first."""
    specials = unique_tokens(special_tokens)
    if vocab_size is not None and vocab_size < len(specials) + 1:
        raise TokenizerError(
            f"a word tokenizer needs at least {len(specials)} special tokens + 1 word = {len(specials) + 1} ids; "
            f"got --vocab-size {vocab_size}"
        )
    backend = tokenizers.Tokenizer(models.WordLevel(unk_token=special_tokens["unk"]))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size or _ALL_WORDS,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer)
    if backend.get_vocab_size() <= len(specials):
        raise TokenizerError(
            f"no word occurs at least --min-frequency {min_frequency} times in the training text; "
            "give more text or lower --min-frequency"
        )
    options = {"lowercase": lowercase, "byte_fallback": False, "min_frequency": min_frequency}
    return WordTokenizer(backend, special_tokens, options)

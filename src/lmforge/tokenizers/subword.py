"""Subword tokenizers, trained by Hugging Face ``tokenizers``: byte-level BPE, WordPiece, Unigram.

Trained on tiny Shakespeare with 8,000 ids each:

    "Henry is givin' a lectrue on transformers"
      bpe        -> Henry Ġis Ġg iv in ' Ġa Ġlect rue Ġon Ġtrans form ers        (GPT-2: Ġ marks a space)
      wordpiece  -> Henry is gi ##v ##in ' a lect ##ru ##e on trans ##form ##ers  (BERT: ## continues a word)
      unigram    -> ▁Henry ▁is ▁g i vin ' ▁a ▁ le c true ▁on ▁transform ers      (SentencePiece: ▁ is a space)

A rare or misspelt word splits into known pieces instead of becoming ``<unk>``.

* **bpe** (Sennrich et al. 2016, GPT-2 flavour): text is first turned into bytes, shown as 256
  printable characters, and every byte is in the vocabulary, so it never needs ``<unk>`` and
  ``decode(encode(x)) == x`` for any Unicode string. Merges join the most frequent adjacent pair.
* **wordpiece** (BERT): split on whitespace and punctuation, then greedy longest match from the
  start of each word; pieces inside a word carry ``##``. A character never seen is ``[UNK]``.
* **unigram** (Kudo 2018, SentencePiece): spaces become ``▁`` and are part of pieces; training
  starts from a large piece set and prunes the pieces whose loss hurts the corpus likelihood least.

Every tokenizer's vocabulary starts with its special tokens (ids 0, 1, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from lmforge.errors import TokenizerError
from lmforge.tokenizers.hf import HFTokenizer, unique_tokens

BYTE_ALPHABET_SIZE = 256


class BPETokenizer(HFTokenizer):
    """Byte-level BPE, GPT-2 style: never produces an unknown token."""

    kind = "bpe"


class WordPieceTokenizer(HFTokenizer):
    """WordPiece, BERT style: ``##`` marks a piece that continues a word."""

    kind = "wordpiece"


class UnigramTokenizer(HFTokenizer):
    """Unigram language-model tokenizer, SentencePiece style: ``▁`` marks a space."""

    kind = "unigram"


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: dict[str, str],
    lowercase: bool = False,
    min_frequency: int = 0,
    show_progress: bool = False,
) -> BPETokenizer:
    specials = unique_tokens(special_tokens)
    minimum = BYTE_ALPHABET_SIZE + len(specials)
    if vocab_size < minimum:
        raise TokenizerError(
            f"byte-level BPE needs at least {BYTE_ALPHABET_SIZE} byte tokens + {len(specials)} special "
            f"token{'s' if len(specials) != 1 else ''} = {minimum}; got --vocab-size {vocab_size}"
        )
    backend = tokenizers.Tokenizer(models.BPE())
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer)
    options = {"lowercase": lowercase, "byte_fallback": True, "min_frequency": min_frequency}
    return BPETokenizer(backend, special_tokens, options)


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: dict[str, str],
    lowercase: bool = False,
    min_frequency: int = 0,
    show_progress: bool = False,
) -> WordPieceTokenizer:
    specials = unique_tokens(special_tokens)
    backend = tokenizers.Tokenizer(
        models.WordPiece(unk_token=special_tokens["unk"], continuing_subword_prefix="##")
    )
    # BERT's normalizer: control characters removed, whitespace made plain spaces, CJK characters
    # split apart, and (uncased only) lowercased with accents stripped.
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    counted = _CharacterCounter(texts)
    backend.train_from_iterator(counted, trainer)
    # The trainer always keeps every character (and its ## form), even past vocab_size.
    if backend.get_vocab_size() > vocab_size:
        raise TokenizerError(
            f"--vocab-size {vocab_size} is too small for WordPiece on this text: it needs {len(specials)} special "
            f"tokens + the {counted.distinct} distinct characters and their '##' continuation forms = "
            f"{backend.get_vocab_size()} ids before learning a single piece; use a --vocab-size well above that"
        )
    options = {"lowercase": lowercase, "byte_fallback": False, "min_frequency": min_frequency}
    return WordPieceTokenizer(backend, special_tokens, options)


def train_unigram(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: dict[str, str],
    lowercase: bool = False,
    show_progress: bool = False,
) -> UnigramTokenizer:
    specials = unique_tokens(special_tokens)
    backend = tokenizers.Tokenizer(models.Unigram())
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token=special_tokens["unk"],
        show_progress=show_progress,
    )
    counted = _CharacterCounter(texts)
    try:
        backend.train_from_iterator(counted, trainer)
    except Exception as error:  # noqa: BLE001 - the Rust trainer raises a bare Exception
        if "not large enough" not in str(error):
            raise
        raise TokenizerError(
            f"--vocab-size {vocab_size} is too small for Unigram on this text: every character must be a piece, "
            f"so it needs {len(specials)} special tokens + {counted.distinct} distinct characters (and '▁') "
            f"= about {len(specials) + counted.distinct + 1} ids; use a --vocab-size well above that"
        ) from None
    options = {"lowercase": lowercase, "byte_fallback": False, "min_frequency": None}
    return UnigramTokenizer(backend, special_tokens, options)


class _CharacterCounter:
    """Pass texts through while counting their distinct characters, for the too-small-vocab message."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        self.characters: set[str] = set()

    @property
    def distinct(self) -> int:
        return len(self.characters)

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.characters.update(text)
            yield text

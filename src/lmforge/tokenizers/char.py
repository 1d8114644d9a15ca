"""Character-level tokenizer: one id per character, as in nanoGPT's Shakespeare model.

    "Henry is givin' a lectrue"  ->  H e n r y ' ' i s ' ' g i v i n ' ' ' a ...   (25 ids)
    "Henry ✓"  (✓ never seen)    ->  H e n r y ' ' <unk>                         (default)
                                 ->  H e n r y ' ' <0xE2> <0x9C> <0x93>           (byte_fallback=True)

The vocabulary is the special tokens (``<|endoftext|>`` as bos and eos, ``<unk>``), then, with
byte fallback, the 256 byte tokens ``<0x00>``..``<0xFF>``, then the characters seen in training in
code-point order. Tiny Shakespeare gives 65 characters + 2 specials = 67 ids. An unseen character
becomes ``<unk>``, or with byte fallback its UTF-8 bytes, so ``decode(encode(x)) == x`` for any
Unicode string. ``vocab_size`` (None = every character seen) keeps the most frequent characters.

It is a Hugging Face BPE model with no merges: the Rust encoder then maps characters one to one,
and ``ByteFallback`` + ``Fuse`` decoders put bytes back together into characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, normalizers

from lmforge.errors import TokenizerError
from lmforge.tokenizers.hf import HFTokenizer, unique_tokens

BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]


class CharTokenizer(HFTokenizer):
    """One id per character; unknown characters become ``<unk>`` or, with byte fallback, bytes."""

    kind = "char"


def train_char(
    texts: Iterable[str],
    vocab_size: int | None,
    *,
    special_tokens: dict[str, str],
    lowercase: bool = False,
    min_frequency: int = 1,
    byte_fallback: bool = False,
) -> CharTokenizer:
    """Count the characters of ``texts`` and keep the most frequent ones that fit ``vocab_size``."""
    specials = unique_tokens(special_tokens)
    reserved = len(specials) + (256 if byte_fallback else 0)
    if vocab_size is not None and vocab_size < reserved + 1:
        parts = f"{len(specials)} special tokens" + (" + 256 byte-fallback tokens" if byte_fallback else "")
        raise TokenizerError(
            f"a character tokenizer needs at least {parts} + 1 character = {reserved + 1} ids; "
            f"got --vocab-size {vocab_size}. Use a larger --vocab-size, or leave it out to keep every character"
        )
    normalizer = normalizers.Lowercase() if lowercase else None
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(normalizer.normalize_str(text) if normalizer else text)
    for token in specials:
        counts.pop(token, None)  # a one-character special token is already in the vocabulary
    kept = [(char, n) for char, n in counts.items() if n >= min_frequency]
    if vocab_size is not None:
        kept = sorted(kept, key=lambda item: (-item[1], item[0]))[: vocab_size - reserved]
    if not kept:
        raise TokenizerError(
            f"no character occurs at least --min-frequency {min_frequency} times in the training text"
        )
    vocab = {token: i for i, token in enumerate(specials + (BYTE_TOKENS if byte_fallback else []))}
    for char in sorted(char for char, _ in kept):
        vocab[char] = len(vocab)

    unk = special_tokens.get("unk")
    backend = tokenizers.Tokenizer(
        models.BPE(vocab=vocab, merges=[], unk_token=unk, byte_fallback=byte_fallback)
    )
    backend.add_special_tokens(specials)
    if normalizer is not None:
        backend.normalizer = normalizer
    # Without a decoder Hugging Face joins tokens with spaces; Fuse concatenates them instead.
    backend.decoder = (
        decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()]) if byte_fallback else decoders.Fuse()
    )
    options = {"lowercase": lowercase, "byte_fallback": byte_fallback, "min_frequency": min_frequency}
    return CharTokenizer(backend, special_tokens, options)

"""The one interface every tokenizer presents to the rest of lmforge.

    >>> tok = load_tokenizer("runs/bpe")            # any kind: char, word, bpe, wordpiece, unigram
    >>> tok.encode("Henry is givin' a lectrue")      # list[int]
    >>> tok.decode(tok.encode(text)) == text          # for char (byte fallback) and byte-level BPE
    >>> tok.eos_id, tok.pad_id, tok.mask_id          # named special ids; None when the family has none

Special-token names are fixed: ``pad, bos, eos, unk, mask, cls, sep``. Each kind has defaults
(``<|endoftext|>`` for GPT-style, ``[PAD] [UNK] [CLS] [SEP] [MASK]`` for BERT-style) that a user
can override. ``document_separator_id`` is what ``prepare`` puts between documents: ``eos``
when the family has one, else ``sep``; ``document_start_id`` is what a text starts from when
scored or continued (that separator, else ``bos``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

SPECIAL_NAMES = ("pad", "bos", "eos", "unk", "mask", "cls", "sep")


class Tokenizer(ABC):
    """Text <-> token ids, with named special tokens, saved to and loaded from a directory."""

    kind: str  # "char" | "word" | "bpe" | "wordpiece" | "unigram"

    def __init__(self, special_tokens: dict[str, str]) -> None:
        unknown = set(special_tokens) - set(SPECIAL_NAMES)
        if unknown:
            raise ValueError(f"unknown special-token names {sorted(unknown)}; use {SPECIAL_NAMES}")
        self.special_tokens = dict(special_tokens)  # name -> token string

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts; subword kinds override this to use every core."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    @abstractmethod
    def id_to_token(self, token_id: int) -> str: ...

    @abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the tokenizer into ``directory`` (created if needed)."""

    # --- named special ids -------------------------------------------------------------
    def special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.token_to_id(token)

    @property
    def special_ids(self) -> dict[str, int]:
        """name -> id for every special token this tokenizer has."""
        found = {name: self.special_id(name) for name in self.special_tokens}
        return {name: i for name, i in found.items() if i is not None}

    @property
    def all_special_ids(self) -> set[int]:
        return set(self.special_ids.values())

    pad_id = property(lambda self: self.special_id("pad"))
    bos_id = property(lambda self: self.special_id("bos"))
    eos_id = property(lambda self: self.special_id("eos"))
    unk_id = property(lambda self: self.special_id("unk"))
    mask_id = property(lambda self: self.special_id("mask"))
    cls_id = property(lambda self: self.special_id("cls"))
    sep_id = property(lambda self: self.special_id("sep"))

    @property
    def document_separator_id(self) -> int | None:
        return self.eos_id if self.eos_id is not None else self.sep_id

    @property
    def document_start_id(self) -> int | None:
        """What a document follows in prepared data (the separator; else ``bos``): the context a
        text starts from when it is scored, drawn or continued from nothing."""
        separator = self.document_separator_id
        return separator if separator is not None else self.bos_id

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The token strings of ``ids``, for showing a person how text splits."""
        return [self.id_to_token(i) for i in ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"

"""Train, save and load the five tokenizer kinds behind one interface.

    >>> tok = train_tokenizer("word", ["Henry is giving a lecture on transformers"], lowercase=True)
    >>> tok.tokens(tok.encode("Henry is givin' a lectrue on transformers"))
    ['henry', 'is', '<unk>', '<unk>', 'a', '<unk>', 'on', 'transformers']
    >>> tok.save("tok"); load_tokenizer("tok").encode("a lecture") == tok.encode("a lecture")
    True

Kinds: ``char`` (one id per character), ``word`` (one id per known word, else ``<unk>``),
``bpe`` (GPT-2 byte-level BPE), ``wordpiece`` (BERT), ``unigram`` (SentencePiece). Each has
default special tokens (``DEFAULT_SPECIAL_TOKENS``); ``special_tokens={"eos": "</s>"}`` replaces
one, ``{"pad": "<pad>"}`` adds one and ``{"bos": ""}`` drops one. A special token is cut out of
any text before the model sees it, so a chosen one that is a single character or occurs in the
training text is refused (``{"eos": "a"}`` would turn every "a" into end-of-text).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmforge.errors import TokenizerError, UserInputError
from lmforge.tokenizers.base import SPECIAL_NAMES, Tokenizer
from lmforge.tokenizers.char import CharTokenizer, train_char
from lmforge.tokenizers.hf import HFTokenizer, read_tokenizer_dir
from lmforge.tokenizers.subword import (
    BPETokenizer,
    UnigramTokenizer,
    WordPieceTokenizer,
    train_bpe,
    train_unigram,
    train_wordpiece,
)
from lmforge.tokenizers.word import WordTokenizer, train_word

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "DEFAULT_VOCAB_SIZE",
    "KINDS",
    "MAX_VOCAB_SIZE",
    "SPECIAL_NAMES",
    "Tokenizer",
    "load_tokenizer",
    "parse_special",
    "resolve_special_tokens",
    "train_tokenizer",
]

KINDS = ("char", "word", "bpe", "wordpiece", "unigram")

_EOT = "<|endoftext|>"  # GPT-2's document separator, used as both bos and eos
DEFAULT_SPECIAL_TOKENS: dict[str, dict[str, str]] = {
    "char": {"bos": _EOT, "eos": _EOT, "unk": "<unk>"},
    "word": {"pad": "<pad>", "unk": "<unk>", "bos": _EOT, "eos": _EOT},
    "bpe": {"bos": _EOT, "eos": _EOT},
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "unigram": {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"},
}

# None means "every character / word seen"; subword kinds need a target.
DEFAULT_VOCAB_SIZE: dict[str, int | None] = {
    "char": None,
    "word": None,
    "bpe": 8000,
    "wordpiece": 8000,
    "unigram": 8000,
}

# A resource guard: Hugging Face's trainers reserve tables sized by the vocabulary before reading
# any text (a BPE target of 10^11 asks for 4.5 TB and aborts the process); a million ids is more
# than any tokenizer in use and trains in well under a GB.
MAX_VOCAB_SIZE = 1_000_000

_CLASSES: dict[str, type[HFTokenizer]] = {
    "char": CharTokenizer,
    "word": WordTokenizer,
    "bpe": BPETokenizer,
    "wordpiece": WordPieceTokenizer,
    "unigram": UnigramTokenizer,
}


def resolve_special_tokens(kind: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The kind's default special tokens with ``overrides`` applied (an empty token drops the name)."""
    _check_kind(kind)
    special = dict(DEFAULT_SPECIAL_TOKENS[kind])
    for name, token in (overrides or {}).items():
        if name not in SPECIAL_NAMES:
            raise UserInputError(
                f"unknown special-token name {name!r}; the names are {', '.join(SPECIAL_NAMES)}"
            )
        if token:
            special[name] = token
        else:
            special.pop(name, None)
    return special


def parse_special(items: Iterable[str]) -> dict[str, str]:
    """``["eos=</s>", "bos="]`` -> ``{"eos": "</s>", "bos": ""}`` (``--special``); the names are
    checked by ``resolve_special_tokens``."""
    overrides = {}
    for item in items:
        name, sep, token = item.partition("=")
        if not sep or not name:
            raise UserInputError(f"--special expects NAME=TOKEN (for example eos=</s>); got {item!r}")
        overrides[name.strip()] = token
    return overrides


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int | None = None,
    *,
    special_tokens: dict[str, str] | None = None,
    lowercase: bool = False,
    min_frequency: int | None = None,
    byte_fallback: bool | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts`` (an iterable of documents, read once).

    Args:
        kind: one of ``KINDS``.
        texts: the training documents; a single ``str`` counts as one document.
        vocab_size: the total number of ids, special tokens included. None: every character
            (char) or word (word) seen, ``DEFAULT_VOCAB_SIZE`` for the subword kinds.
        special_tokens: name -> token overrides of ``DEFAULT_SPECIAL_TOKENS[kind]``.
        lowercase: lowercase text before training and encoding.
        min_frequency: drop characters (char), words (word) or merges (bpe, wordpiece) seen
            fewer times. Not used by unigram.
        byte_fallback: char only: encode unseen characters as UTF-8 byte tokens instead of
            ``<unk>``. bpe is byte-level, so it is always on there.
        show_progress: let Hugging Face draw its progress bars.
    """
    special = resolve_special_tokens(kind, special_tokens)
    byte_fallback = _check_options(kind, special, vocab_size, min_frequency, byte_fallback)
    if vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE[kind]
    # a special token is cut out of any text before the model sees it: one the user chose that is
    # also ordinary text would swallow it (--special eos=a: every "a" becomes end-of-text)
    chosen = {
        name: token
        for name, token in (special_tokens or {}).items()
        if token and token != DEFAULT_SPECIAL_TOKENS[kind].get(name)
    }
    _check_not_a_character(chosen)
    counts = dict.fromkeys(chosen.values(), 0)
    texts = _counting(_nonempty(texts), counts)
    common = {"special_tokens": special, "lowercase": lowercase}
    if kind == "char":
        tokenizer = train_char(
            texts, vocab_size, **common, min_frequency=min_frequency or 1, byte_fallback=byte_fallback
        )
    elif kind == "word":
        tokenizer = train_word(
            texts, vocab_size, **common, min_frequency=min_frequency or 1, show_progress=show_progress
        )
    elif kind == "bpe":
        tokenizer = train_bpe(
            texts, vocab_size, **common, min_frequency=min_frequency or 0, show_progress=show_progress
        )
    elif kind == "wordpiece":
        tokenizer = train_wordpiece(
            texts, vocab_size, **common, min_frequency=min_frequency or 0, show_progress=show_progress
        )
    else:
        tokenizer = train_unigram(texts, vocab_size, **common, show_progress=show_progress)
    _check_not_in_text(chosen, counts)
    return tokenizer


def _counting(texts: Iterator[str], counts: dict[str, int]) -> Iterator[str]:
    """The training documents, passed through once, counting how often each key of ``counts`` occurs."""
    for text in texts:
        for token in counts:
            counts[token] += text.count(token)
        yield text


def _suggestion(name: str) -> str:
    return f"--special {name}=<|{name}|>"


def _check_not_a_character(chosen: dict[str, str]) -> None:
    """A one-character special token would take that character from every text, seen in training
    or not (a newline, a letter, a symbol): refused whatever the training text holds."""
    for name, token in chosen.items():
        if len(token) == 1:
            raise UserInputError(
                f"--special {name}={token!r} is a single character: a special token is cut out of "
                f"every text, so each {token!r} would become {name}; use a string no text holds, "
                f"such as {_suggestion(name)}"
            )


def _check_not_in_text(chosen: dict[str, str], counts: dict[str, int]) -> None:
    for name, token in chosen.items():
        if counts.get(token):
            times = f"{counts[token]:,} time{'s' if counts[token] != 1 else ''}"
            raise UserInputError(
                f"--special {name}={token!r} occurs {times} in the training text, and a special "
                f"token is cut out of every text, so each one would become {name}; use a string the "
                f"text does not hold, such as {_suggestion(name)}"
            )


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load any kind from a directory written by ``Tokenizer.save`` (or a directory holding ``tokenizer/``)."""
    meta, backend = read_tokenizer_dir(directory)
    cls = _CLASSES.get(meta["kind"])
    if cls is None:
        raise TokenizerError(
            f"{directory} holds a tokenizer of unknown kind {meta['kind']!r}; lmforge knows {KINDS}"
        )
    options = {key: meta.get(key) for key in ("lowercase", "byte_fallback", "min_frequency")}
    try:
        return cls(backend, meta["special_tokens"], options)
    except (ValueError, TokenizerError) as error:  # an unknown special name, or a token not in tokenizer.json
        raise TokenizerError(f"{directory} does not hold together: {error}; retrain the tokenizer") from None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserInputError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def _check_options(
    kind: str,
    special: dict[str, str],
    vocab_size: int | None,
    min_frequency: int | None,
    byte_fallback: bool | None,
) -> bool:
    """Refuse options that do not apply to ``kind``; return the effective byte_fallback."""
    if vocab_size is not None and vocab_size < 1:
        raise UserInputError(f"--vocab-size must be a positive number of ids; got {vocab_size}")
    if vocab_size is not None and vocab_size > MAX_VOCAB_SIZE:
        raise UserInputError(f"--vocab-size must be at most {MAX_VOCAB_SIZE:,}; got {vocab_size:,}")
    if min_frequency is not None and min_frequency < 0:
        raise UserInputError(f"--min-frequency must be 0 or more; got {min_frequency}")
    if min_frequency is not None and kind == "unigram":
        raise UserInputError(
            "--min-frequency does not apply to unigram (it prunes pieces by likelihood instead)"
        )
    if kind == "bpe" and byte_fallback is False:
        raise UserInputError(
            "byte-level bpe always covers every byte; --no-byte-fallback does not apply to it"
        )
    if kind not in ("char", "bpe") and byte_fallback:
        raise UserInputError(
            f"--byte-fallback is not available for {kind}; use --kind char --byte-fallback, or --kind bpe "
            "(byte-level, never unknown)"
        )
    byte_fallback = kind == "bpe" or bool(byte_fallback)
    needs_unk = kind in ("word", "wordpiece", "unigram") or (kind == "char" and not byte_fallback)
    if needs_unk and "unk" not in special:
        raise UserInputError(
            f"a {kind} tokenizer needs an unk special token for text it has not seen; keep unk"
        )
    return byte_fallback


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    """``texts`` unchanged, after checking there is some text at all (so we fail before training)."""
    iterator = iter([texts] if isinstance(texts, str) else texts)
    for first in iterator:
        if first:
            return itertools.chain([first], iterator)
    raise TokenizerError(
        "no text to train on: every training document was empty; check --data and --text-field"
    )

"""Encoding many texts for ``prepare``: where a long text may be cut, and a faster exact path for BPE.

Cutting. One 1 MB document would keep one core busy while the others wait, so ``chunk_text``
cuts it into ~64 KB pieces, but only where cutting cannot change the ids (``CUT_RULES``)::

    "...speak.\\n\\nFirst Citizen:\\nYou are all resolved..."
                                ^ a cut here is safe: a lone "\\n" between two non-spaces is
                                  always a pre-token of its own for byte-level BPE
                 ^ not here: "\\n\\n" at the end of a piece is one pre-token, in the middle two

Byte-level BPE on ASCII text. Hugging Face's GPT-2 pre-tokenizer (an Oniguruma regex plus
offset bookkeeping) costs more than the merges themselves: on tiny Shakespeare it caps encoding
near 2 MB/s per core. For ASCII text the same split is a plain ``re`` pattern, so
``BatchEncoder`` splits ASCII pieces into pre-tokens itself, has Hugging Face encode each
*distinct* pre-token once (the same BPE, the same ids) and looks the rest up in a dictionary.
Pieces with any non-ASCII character or a special-token string, and tokenizers configured any
other way, go through ``Tokenizer.encode_batch`` unchanged. Tests compare both paths on random
ASCII text and on whole corpora.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Sequence

from lmforge.tokenizers import Tokenizer

CHUNK_CHARS = 1 << 16  # a text longer than this is cut into pieces of about this size

# After a newline that has a non-space character on each side: for GPT-2 byte-level BPE that
# newline is always a pre-token of its own, and char, word and wordpiece never join anything
# across a newline.
_AFTER_LONE_NEWLINE = re.compile(r"(?<=\S\n)(?=\S)")
# Before a single space between non-spaces: unigram's Metaspace marks the start of every piece
# with "▁", which a newline cut would add where the text has no space; a space is a "▁" anyway.
_BEFORE_LONE_SPACE = re.compile(r"(?<=\S)(?= \S)")
CUT_RULES: dict[str, re.Pattern[str]] = {
    "char": _AFTER_LONE_NEWLINE,
    "word": _AFTER_LONE_NEWLINE,
    "bpe": _AFTER_LONE_NEWLINE,
    "wordpiece": _AFTER_LONE_NEWLINE,
    "unigram": _BEFORE_LONE_SPACE,
}

# GPT-2's pre-tokenizer, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
# with its classes written out for ASCII: \p{L} = A-Za-z, \p{N} = 0-9, \s = the six ASCII
# characters of Unicode White_Space (not \x1c-\x1f, which Python's own \s would add).
_SPACE = "\t\n\v\f\r "
ASCII_GPT2_SPLIT = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_SPACE}A-Za-z0-9]+|[{_SPACE}]+(?![^{_SPACE}])|[{_SPACE}]+"
)
_MAX_KNOWN_WORDS = 1 << 20  # pre-token -> ids entries kept before starting afresh (bounds memory)


def chunk_text(text: str, rule: re.Pattern[str] | None, chunk_chars: int | None = None) -> list[str]:
    """``text`` cut at the first ``rule`` match after every ``chunk_chars``; ``"".join`` gives it back."""
    chunk_chars = chunk_chars or CHUNK_CHARS
    if rule is None or len(text) <= chunk_chars:
        return [text]
    pieces, start = [], 0
    while len(text) - start > chunk_chars:
        match = rule.search(text, start + chunk_chars)
        if match is None:
            break
        pieces.append(text[start : match.start()])
        start = match.start()
    pieces.append(text[start:])
    return pieces


def _ascii_bpe_settings(tokenizer: Tokenizer) -> tuple[bool, tuple[str, ...]] | None:
    """(lowercase, special-token strings) when the ASCII fast path gives the tokenizer's own ids."""
    backend = getattr(tokenizer, "backend", None)
    if tokenizer.kind != "bpe" or backend is None:
        return None
    config = json.loads(backend.to_str())
    pre = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    normalizer = config.get("normalizer")
    if (
        pre.get("type") != "ByteLevel"
        or pre.get("add_prefix_space") is not False
        or pre.get("use_regex") is not True
        or model.get("type") != "BPE"
        or model.get("dropout") is not None
        or config.get("post_processor") is not None
        or normalizer not in (None, {"type": "Lowercase"})
    ):
        return None
    specials = tuple(token["content"] for token in config.get("added_tokens", []))
    return normalizer is not None, specials


class BatchEncoder:
    """``tokenizer.encode_batch`` with the same ids, faster for byte-level BPE on ASCII text."""

    def __init__(self, tokenizer: Tokenizer, *, fast: bool = True) -> None:
        self.tokenizer = tokenizer
        self.rule = CUT_RULES.get(tokenizer.kind)
        self.settings = _ascii_bpe_settings(tokenizer) if fast else None
        self.known: dict[str, list[int]] = {}  # pre-token -> its ids
        self.lock = threading.Lock()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.settings is None:
            return self.tokenizer.encode_batch(texts)
        lowercase, specials = self.settings
        fast = [i for i, text in enumerate(texts) if text.isascii() and not any(s in text for s in specials)]
        results: list[list[int]] = [[] for _ in texts]
        slow = sorted(set(range(len(texts))) - set(fast))
        if slow:
            for i, ids in zip(slow, self.tokenizer.encode_batch([texts[i] for i in slow])):
                results[i] = ids
        if fast:
            split = [ASCII_GPT2_SPLIT.findall(texts[i].lower() if lowercase else texts[i]) for i in fast]
            with self.lock:
                self._learn(set(itertools.chain.from_iterable(split)))
                lookup = self.known.__getitem__
                for i, words in zip(fast, split):
                    results[i] = list(itertools.chain.from_iterable(map(lookup, words)))
        return results

    def _learn(self, words: set[str]) -> None:
        """Encode the pre-tokens not seen yet, each on its own, so each gets exactly its BPE ids."""
        missing = list(words.difference(self.known))
        if not missing:
            return
        if len(self.known) + len(missing) > _MAX_KNOWN_WORDS:
            self.known.clear()
            missing = list(words)
        # a few pre-tokenized sequences, so the Rust side spreads the merges over the cores
        parts = [missing[start : start + 1024] for start in range(0, len(missing), 1024)]
        backend = self.tokenizer.backend  # type: ignore[attr-defined]
        for part, encoding in zip(
            parts, backend.encode_batch(parts, is_pretokenized=True, add_special_tokens=False)
        ):
            grouped: list[list[int]] = [[] for _ in part]
            for token_id, word in zip(encoding.ids, encoding.word_ids):
                grouped[word].append(token_id)
            self.known.update(zip(part, grouped))

"""Every lmforge tokenizer is a Hugging Face ``tokenizers.Tokenizer`` plus a note of its kind.

    "Henry is givin' a lectrue"   (each trained on tiny Shakespeare)
      char  -> H e n r y ␣ i s ␣ g i v i n ' ␣ a ␣ l e c t r u e    one id per character
      word  -> henry is <unk> ' a <unk>                          one id per known word (lowercased)
      bpe   -> Henry Ġis Ġg iv in ' Ġa Ġlect rue                  byte-level merges, never <unk>

All five kinds share this wrapper, so all five get the same Rust encoder (``encode_batch`` uses
every core), the same ``tokenizer.json`` on disk that ``tokenizers.Tokenizer.from_file`` loads
unchanged, and the same load errors. Beside it sits ``lmforge_tokenizer.json``::

    {"format_version": 1, "kind": "bpe", "special_tokens": {"bos": "<|endoftext|>", ...},
     "vocab_size": 8000, "lowercase": false, "byte_fallback": true, "min_frequency": 0}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tokenizers

from lmforge.errors import TokenizerError
from lmforge.fileio import atomic_write_json, atomic_write_text
from lmforge.tokenizers.base import Tokenizer

MODEL_FILE = "tokenizer.json"
META_FILE = "lmforge_tokenizer.json"
FORMAT_VERSION = 1
OPTION_KEYS = ("lowercase", "byte_fallback", "min_frequency")


def unique_tokens(special_tokens: dict[str, str]) -> list[str]:
    """The distinct special-token strings in name order (``bos`` and ``eos`` may share one)."""
    return list(dict.fromkeys(special_tokens.values()))


class HFTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer`` (``self.backend``) behind lmforge's ``Tokenizer`` interface."""

    kind = "hf"

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        special_tokens: dict[str, str],
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(special_tokens)
        missing = {name: tok for name, tok in special_tokens.items() if backend.token_to_id(tok) is None}
        if missing:
            raise TokenizerError(f"special tokens {missing} are not in the {self.kind} vocabulary")
        self.backend = backend
        self.options = dict(options or {})
        # counted once: the backend is complete when wrapped (builders add their special tokens
        # first), and get_vocab_size(with_added_tokens=True) builds the whole vocabulary on each
        # call: 1.2 ms for GPT-2's, which every decode paid (serving streams one decode a token)
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_batch_fast skips offset tracking; the Rust side spreads the texts over all cores.
        return [encoding.ids for encoding in self.backend.encode_batch_fast(list(texts))]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if i < 0 or i >= self.vocab_size)
            raise TokenizerError(
                f"token id {bad} is outside this {self.kind} tokenizer's vocabulary (ids 0..{self.vocab_size - 1}); "
                "were these ids made with another tokenizer?"
            )
        # Hugging Face skips special tokens by default; lmforge keeps them so round trips are exact.
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        token = self.backend.id_to_token(int(token_id))
        if token is None:
            raise TokenizerError(
                f"token id {token_id} is outside this {self.kind} tokenizer's vocabulary (ids 0..{self.vocab_size - 1})"
            )
        return token

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "special_tokens": self.special_tokens,
            "vocab_size": self.vocab_size,
            **{key: self.options.get(key) for key in OPTION_KEYS},
        }

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        atomic_write_text(directory / MODEL_FILE, self.backend.to_str(pretty=True))
        atomic_write_json(directory / META_FILE, self.metadata())

    @classmethod
    def load(cls, directory: str | Path) -> HFTokenizer:
        meta, backend = read_tokenizer_dir(directory)
        if meta["kind"] != cls.kind:
            raise TokenizerError(f"{directory} holds a {meta['kind']} tokenizer, not {cls.kind}")
        return cls(backend, meta["special_tokens"], {key: meta.get(key) for key in OPTION_KEYS})


def read_tokenizer_dir(directory: str | Path) -> tuple[dict[str, Any], tokenizers.Tokenizer]:
    """Read and check ``lmforge_tokenizer.json`` and ``tokenizer.json``; every failure names its file."""
    directory = Path(directory)
    retrain = f"train one with `lmforge tokenizer train --kind ... --data ... --out {directory}`"
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise TokenizerError(f"no tokenizer at {directory}: the path {what}; {retrain}")
    meta_path, model_path = directory / META_FILE, directory / MODEL_FILE
    if not meta_path.is_file() and (directory / "tokenizer" / META_FILE).is_file():
        # A prepared dataset or run directory keeps its tokenizer in a tokenizer/ subdirectory.
        return read_tokenizer_dir(directory / "tokenizer")
    if not meta_path.is_file():
        raise TokenizerError(f"{meta_path} is missing, so {directory} is not an lmforge tokenizer; {retrain}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(f"{meta_path} is corrupt ({error}); {retrain}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise TokenizerError(f"{meta_path} has no 'kind' field; {retrain}")
    if not isinstance(meta.get("special_tokens"), dict):
        raise TokenizerError(f"{meta_path} has no 'special_tokens' object; {retrain}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise TokenizerError(
            f"{meta_path} has format_version {version!r}; this lmforge reads version {FORMAT_VERSION} "
            "(upgrade lmforge, or retrain the tokenizer)"
        )
    if not model_path.is_file():
        raise TokenizerError(
            f"{model_path} is missing from the {meta['kind']} tokenizer at {directory}; {retrain}"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(model_path))
    except Exception as error:  # noqa: BLE001 - the Rust loader raises a bare Exception
        raise TokenizerError(
            f"{model_path} is not a valid Hugging Face tokenizer file ({error}); {retrain}"
        ) from None
    return meta, backend

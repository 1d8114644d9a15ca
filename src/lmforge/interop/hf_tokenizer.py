"""Hugging Face tokenizer files <-> lmforge tokenizers.

Import reads, in this order:

    hf/tokenizer.json + lmforge_tokenizer.json   written by ``convert --to-hf``: any kind, exactly
    gpt2/tokenizer.json                          GPT-2's byte-level BPE as save_pretrained writes it
    gpt2/vocab.json + gpt2/merges.txt            the original GPT-2 release: BPE(vocab, merges) behind
                                                 the byte-level pre-tokenizer and decoder
    gpt2/tokenizer_config.json                   bos/eos/pad token strings (GPT-2: "<|endoftext|>")
    llama/tokenizer.json                         any BPE (``any_bpe``): Llama 3's and Qwen2's byte-level
                                                 one, or Llama 2's and Mistral's SentencePiece-style one
                                                 (byte fallback); bos/eos missing from the tokenizer
                                                 config come from ``special_ids`` (generation_config.json)

Either GPT-2 form gives the ids ``GPT2TokenizerFast`` gives ("Hello world" -> [15496, 995] with
GPT-2's own files). Export writes ``tokenizer.json``, ``lmforge_tokenizer.json`` and
``tokenizer_config.json`` (plus ``vocab.json`` and ``merges.txt`` for a byte-level BPE), so
``AutoTokenizer.from_pretrained`` loads any lmforge kind and a round trip gives it back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from lmforge.errors import TokenizerError
from lmforge.fileio import atomic_write_json, atomic_write_text
from lmforge.tokenizers import load_tokenizer
from lmforge.tokenizers.base import SPECIAL_NAMES, Tokenizer
from lmforge.tokenizers.hf import META_FILE
from lmforge.tokenizers.subword import BPETokenizer

GPT2_END_OF_TEXT = "<|endoftext|>"  # GPT-2's bos and eos (and unk) token
IMPORTED_SPECIALS = ("bos", "eos", "pad")  # GPT-2's unk is never produced by a byte-level BPE
TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE = "tokenizer.json", "vocab.json", "merges.txt"
CONFIG_FILES = ("special_tokens_map.json", "tokenizer_config.json")  # the later one wins


def read_tokenizer_file(path: Path) -> tokenizers.Tokenizer:
    """A tokenizer.json as the Rust library reads it, or one clear error."""
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the Rust loader raises a bare Exception
        raise TokenizerError(f"{path} is not a valid Hugging Face tokenizer file ({error})") from None


def read_hf_tokenizer(
    directory: Path, *, special_ids: dict[str, int] | None = None, any_bpe: bool = False
) -> tuple[Tokenizer, str] | None:
    """(the tokenizer, which files it came from) for a Hugging Face model directory; None if it has none.

    special_ids: bos/eos ids to use where the tokenizer config names no token (Llama's
    generation_config.json). any_bpe: accept a BPE tokenizer.json without GPT-2's byte-level
    pre-tokenizer (the Llama family's SentencePiece-style BPE)."""
    model_path, vocab_path, merges_path = (directory / n for n in (TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE))
    if (directory / META_FILE).is_file():  # an lmforge export: its own tokenizer, whatever the kind
        return load_tokenizer(directory), f"{TOKENIZER_FILE} + {META_FILE}"
    if model_path.is_file():
        backend = read_tokenizer_file(model_path)
        _check_byte_level_bpe(backend, model_path, any_bpe)
        source = TOKENIZER_FILE
    elif vocab_path.is_file() and merges_path.is_file():
        try:
            backend = tokenizers.Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
        except Exception as error:  # noqa: BLE001
            raise TokenizerError(
                f"{vocab_path} and {merges_path} do not make a BPE tokenizer ({error})"
            ) from None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        source = f"{VOCAB_FILE} + {MERGES_FILE}"
    elif vocab_path.is_file() or merges_path.is_file():
        present, absent = (VOCAB_FILE, MERGES_FILE) if vocab_path.is_file() else (MERGES_FILE, VOCAB_FILE)
        raise TokenizerError(f"{directory} has {present} but no {absent}; a GPT-2 tokenizer needs both")
    else:
        return None
    backend.no_truncation()  # lmforge decides lengths itself
    backend.no_padding()
    special = _special_tokens(directory, backend, special_ids or {})
    backend.add_special_tokens(list(dict.fromkeys(special.values())))  # "<|endoftext|>" in text is one id
    options = {"lowercase": False, "byte_fallback": True, "min_frequency": None}
    return BPETokenizer(backend, special, options), source


def is_byte_level(backend: tokenizers.Tokenizer) -> bool:
    """True for GPT-2's byte-level pre-tokenizer (alone or in a sequence, as Llama 3's and Qwen2's)."""
    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    pieces = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "ByteLevel" for p in pieces)


def _check_byte_level_bpe(backend: tokenizers.Tokenizer, path: Path, any_bpe: bool = False) -> None:
    model_type = json.loads(backend.to_str()).get("model", {}).get("type")
    if model_type == "BPE" and any_bpe:
        return
    if model_type != "BPE" or not is_byte_level(backend):
        raise TokenizerError(
            f"{path} is a {model_type} tokenizer without GPT-2's byte-level pre-tokenizer; "
            "lmforge imports GPT-2's byte-level BPE only"
        )


def _special_tokens(
    directory: Path, backend: tokenizers.Tokenizer, special_ids: dict[str, int]
) -> dict[str, str]:
    """bos/eos/pad as the tokenizer config names them, else the token of ``special_ids``, else GPT-2's
    "<|endoftext|>" when it exists."""
    named: dict[str, Any] = {}
    for name in CONFIG_FILES:
        path = directory / name
        if path.is_file():
            try:
                named.update(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TokenizerError(f"{path} is not readable JSON ({error})") from None
    has_end_of_text = backend.token_to_id(GPT2_END_OF_TEXT) is not None
    special = {}
    for name in IMPORTED_SPECIALS:
        by_id = backend.id_to_token(special_ids[name]) if name in special_ids else None
        default = GPT2_END_OF_TEXT if name != "pad" and has_end_of_text else None
        token = named.get(f"{name}_token", by_id or default)  # an explicit null stays absent
        if isinstance(token, dict):  # an AddedToken written out: {"content": "<|endoftext|>", ...}
            token = token.get("content")
        if isinstance(token, str) and token:
            special[name] = token
    return special


def write_hf_tokenizer(tokenizer: Tokenizer, directory: Path, model_max_length: int) -> list[str]:
    """Write ``tokenizer`` for ``AutoTokenizer.from_pretrained(directory)``; return the file names."""
    backend: tokenizers.Tokenizer = tokenizer.backend
    written = [TOKENIZER_FILE, META_FILE, "tokenizer_config.json"]
    tokenizer.save(directory)  # tokenizer.json, which Hugging Face reads, and lmforge's note of its kind
    # GPT2Tokenizer rebuilds GPT-2's pipeline (byte-level, no normalizer); anything else, lowercasing
    # included, loads faithfully only as the generic fast tokenizer reading tokenizer.json.
    gpt2_like = tokenizer.kind == "bpe" and not tokenizer.options.get("lowercase") and is_byte_level(backend)
    special = {f"{name}_token": tokenizer.special_tokens.get(name) for name in SPECIAL_NAMES}
    if gpt2_like:
        # GPT2Tokenizer defaults unk to "<|endoftext|>"; name one that exists (GPT-2 uses its eos).
        special["unk_token"] = special["unk_token"] or special["eos_token"] or special["bos_token"]
        written += _write_vocab_and_merges(backend, directory)
    config = {
        "tokenizer_class": "GPT2Tokenizer" if gpt2_like else "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    atomic_write_json(directory / "tokenizer_config.json", config)
    return written


def _write_vocab_and_merges(backend: tokenizers.Tokenizer, directory: Path) -> list[str]:
    """GPT-2's original two files, for tools that do not read tokenizer.json."""
    model = json.loads(backend.to_str())["model"]
    vocab = dict(model["vocab"])
    for token_id, added in backend.get_added_tokens_decoder().items():
        vocab.setdefault(added.content, token_id)
    merges = [pair if isinstance(pair, str) else " ".join(pair) for pair in model["merges"]]
    atomic_write_json(directory / VOCAB_FILE, vocab)
    atomic_write_text(directory / MERGES_FILE, "#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return [VOCAB_FILE, MERGES_FILE]

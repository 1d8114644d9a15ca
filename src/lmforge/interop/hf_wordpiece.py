"""BERT's WordPiece tokenizer files <-> lmforge's ``wordpiece`` tokenizer.

Import reads, in this order:

    bert/tokenizer.json          the fast tokenizer save_pretrained writes (WordPiece model)
    bert/vocab.txt               the original release: one piece per line, the line number its id
    bert/tokenizer_config.json   do_lower_case, strip_accents, tokenize_chinese_chars and the
    bert/special_tokens_map.json [PAD] [UNK] [CLS] [SEP] [MASK] strings (the later file wins)

and normalises as ``AutoTokenizer`` does: for a ``BertTokenizer`` (the class the config names,
or none named) lower-casing and accent stripping as ``tokenizer_config.json`` says
(``do_lower_case`` true unless it says otherwise; ``strip_accents`` unset follows
lower-casing), CJK characters split apart, control characters dropped; for another class
(``PreTrainedTokenizerFast``) as ``tokenizer.json``'s own normalizer says. So with all-MiniLM-L6-v2's files, "Héllo, 世界!" -> héllo -> hello , 世 界 ! -> the ids
``AutoTokenizer`` gives, without the [CLS] and [SEP] it adds around them: an lmforge tokenizer
encodes text only, and whoever builds a model input adds its special tokens (as ``prepare`` puts
separators between documents).

Export writes ``vocab.txt``, ``tokenizer.json`` (with the [CLS] A [SEP] B [SEP] template put back)
and ``tokenizer_config.json`` naming ``BertTokenizer``, which ``AutoTokenizer`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from lmforge.errors import TokenizerError
from lmforge.fileio import atomic_write_json, atomic_write_text
from lmforge.interop.hf_tokenizer import read_tokenizer_file
from lmforge.tokenizers.subword import WordPieceTokenizer

TOKENIZER_FILE, VOCAB_FILE = "tokenizer.json", "vocab.txt"
CONFIG_FILES = ("special_tokens_map.json", "tokenizer_config.json")  # the later one wins
BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def read_wordpiece(directory: Path) -> tuple[WordPieceTokenizer, str] | None:
    """(the tokenizer, which files it came from) for a Hugging Face BERT directory; None if it has none."""
    settings = _tokenizer_settings(directory)
    model_path, vocab_path = directory / TOKENIZER_FILE, directory / VOCAB_FILE
    if model_path.is_file():
        backend = read_tokenizer_file(model_path)
        model_type = json.loads(backend.to_str()).get("model", {}).get("type")
        if model_type != "WordPiece":
            raise TokenizerError(f"{model_path} is a {model_type} tokenizer, not BERT's WordPiece")
        source = TOKENIZER_FILE
    elif vocab_path.is_file():
        unk = _token(settings.get("unk_token")) or BERT_SPECIALS["unk"]
        try:
            backend = tokenizers.Tokenizer(models.WordPiece.from_file(str(vocab_path), unk_token=unk))
        except Exception as error:  # noqa: BLE001
            raise TokenizerError(f"{vocab_path} is not a WordPiece vocabulary ({error})") from None
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        source = VOCAB_FILE
    else:
        return None
    named = str(settings.get("tokenizer_class", "BertTokenizer")).removesuffix("Fast")
    if source == VOCAB_FILE or named == "BertTokenizer":
        # BertTokenizer(Fast) rebuilds the normalizer from its own settings, whatever tokenizer.json says
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)),
            strip_accents=settings.get("strip_accents"),  # None: strip when lower-casing, as BERT does
            lowercase=bool(settings.get("do_lower_case", True)),
        )
    lowercase = bool((json.loads(backend.to_str()).get("normalizer") or {}).get("lowercase", False))
    backend.post_processor = None  # lmforge encodes the text alone; callers add [CLS] ... [SEP]
    backend.no_truncation()  # lmforge decides lengths itself
    backend.no_padding()
    special = {}
    for name, default in BERT_SPECIALS.items():
        token = _token(settings.get(f"{name}_token")) or default
        if backend.token_to_id(token) is not None:
            special[name] = token
    backend.add_special_tokens(list(dict.fromkeys(special.values())))  # "[MASK]" in text is one id
    options = {"lowercase": lowercase, "byte_fallback": False, "min_frequency": None}
    return WordPieceTokenizer(backend, special, options), source


def _token(value: Any) -> str | None:
    """A special token as a config writes it: a string, or an AddedToken dict with its content."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _tokenizer_settings(directory: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name in CONFIG_FILES:
        path = directory / name
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TokenizerError(f"{path} is not readable JSON ({error})") from None
            if isinstance(loaded, dict):
                settings.update(loaded)
    return settings


def write_wordpiece(tokenizer: WordPieceTokenizer, directory: Path, model_max_length: int) -> list[str]:
    """Write a wordpiece tokenizer as BERT's files for ``AutoTokenizer.from_pretrained(directory)``."""
    backend = tokenizers.Tokenizer.from_str(tokenizer.backend.to_str())  # a copy: the template is added
    cls, sep = tokenizer.special_tokens.get("cls"), tokenizer.special_tokens.get("sep")
    if cls is not None and sep is not None:
        cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )
    atomic_write_text(directory / TOKENIZER_FILE, backend.to_str(pretty=True))
    vocab = sorted(backend.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    atomic_write_text(directory / VOCAB_FILE, "".join(token + "\n" for token, _ in vocab))
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(normalizer.get("lowercase", False)),
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        **{f"{name}_token": token for name, token in tokenizer.special_tokens.items()},
    }
    atomic_write_json(directory / "tokenizer_config.json", config)
    return [TOKENIZER_FILE, VOCAB_FILE, "tokenizer_config.json"]

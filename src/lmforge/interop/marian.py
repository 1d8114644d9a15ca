"""Hugging Face Marian (MarianMTModel, the OPUS-MT translation models) <-> lmforge's seq2seq
Transformer: the config fields. Weight names are BART's (``bart.py``), less the learned positions.

    MarianConfig                                             Seq2SeqConfig
    vocab_size, share_encoder_decoder_embeddings true   <->  vocab_size, shared_vocab true
    vocab_size, decoder_vocab_size, share... false      <->  source_vocab_size, vocab_size, shared_vocab false
    (sinusoidal positions, sines then cosines)          <->  pos_encoding "sinusoidal" (computed)
    scale_embedding (true in OPUS-MT)                   <->  scale_embedding
    activation_function "swish"                         <->  mlp "silu"
    decoder_start_token_id (the pad id, 58100 in en-de) <->  decoder_start_token_id
    the rest as BART's (bart.common_config)

Tokenizer: Marian's is SentencePiece (source.spm, target.spm and a vocab.json), which Hugging Face
has no tokenizer.json for and lmforge cannot read, so ``--from-hf`` converts the weights alone and
says so; ``--to-hf`` gives a directory MarianMTModel loads and MarianTokenizer (the original .spm
files copied in) completes.
"""

from __future__ import annotations

from typing import Any

from lmforge.interop.bart import common_config, hf_common

SENTENCEPIECE_FILES = ("source.spm", "target.spm")
TOKENIZER_NOTE = (
    "{source} has Marian's SentencePiece tokenizer (source.spm, target.spm), which lmforge cannot "
    "read: the run holds the model only. Encode with transformers' MarianTokenizer and decode the ids "
    "in Python (lmforge.generate with EncoderDecoderStepModel), or convert back with --to-hf and "
    "copy the tokenizer files next to it"
)


def marian_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """The Seq2SeqConfig dict of a Hugging Face Marian ``config.json`` read from ``source``."""
    config = common_config(hf, source, "Marian")
    shared = bool(hf.get("share_encoder_decoder_embeddings", True))
    vocab = int(hf["vocab_size"])
    target_vocab = vocab if shared else int(hf.get("decoder_vocab_size") or vocab)
    start = hf.get("decoder_start_token_id", hf.get("pad_token_id"))
    return {
        **config,
        "vocab_size": target_vocab,
        "pos_encoding": "sinusoidal",
        "position_offset": 0,
        "layernorm_embedding": False,
        "shared_vocab": shared,
        "source_vocab_size": None if shared else vocab,
        "decoder_start_token_id": int(start if start is not None else target_vocab - 1),
    }


def hf_config(config: dict[str, Any], *, eos_id: int | None, pad_id: int | None) -> dict[str, Any]:
    """MarianMTModel's config.json for a Seq2SeqConfig dict that ``bart.check_exportable`` calls "marian"."""
    shared = config["shared_vocab"]
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": config["vocab_size"] if shared else config["source_vocab_size"],
        "decoder_vocab_size": config["vocab_size"],
        "share_encoder_decoder_embeddings": shared,
        **hf_common(config),
        "bos_token_id": None,
        "eos_token_id": 0 if eos_id is None else eos_id,
        "pad_token_id": config["decoder_start_token_id"] if pad_id is None else pad_id,
    }

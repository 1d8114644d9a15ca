"""Model families and named presets; every model is built from (family, config dict).

Presets give a shape; any field can be overridden (``--n-layer 6``). The vocabulary size
always comes from the tokenizer of the data, never from the preset.

| preset      | layers | heads | width | context | parameters (50257 vocab) |
|-------------|--------|-------|-------|---------|--------------------------|
| gpt-nano    | 4      | 4     | 128   | 64      | 0.8M, trains in seconds  |
| gpt-mini    | 6      | 6     | 192   | 256     | 2.7M + embeddings        |
| gpt2        | 12     | 12    | 768   | 1024    | 124M                     |
| gpt2-medium | 24     | 16    | 1024  | 1024    | 355M                     |
| gpt2-large  | 36     | 20    | 1280  | 1024    | 774M                     |
| gpt2-xl     | 48     | 25    | 1600  | 1024    | 1558M                    |

GPT-3 (Brown et al. 2020, Table 2.1): GPT-2's architecture (learned positions, GELU, LayerNorm,
biases, tied embeddings) at context 2048, vocabulary 50257. Counted on the meta device, nothing
allocated; the last column is the paper's. GPT-3 alternated dense and locally banded sparse
attention layers; these presets are dense throughout, which changes no parameter count.

| preset      | layers | heads x size | width | parameters (counted) | Table 2.1 |
|-------------|--------|--------------|-------|----------------------|-----------|
| gpt3-small  | 12     | 12 x 64      | 768   | 125,226,240          | 125M      |
| gpt3-medium | 24     | 16 x 64      | 1024  | 355,871,744          | 350M      |
| gpt3-large  | 24     | 16 x 96      | 1536  | 760,300,032          | 760M      |
| gpt3-xl     | 24     | 16 x 128     | 2048  | 1,315,723,264        | 1.3B      |
| gpt3-2.7b   | 32     | 32 x 80      | 2560  | 2,651,553,280        | 2.7B      |
| gpt3-6.7b   | 32     | 32 x 128     | 4096  | 6,658,404,352        | 6.7B      |
| gpt3-13b    | 40     | 40 x 128     | 5120  | 12,853,386,240       | 13B       |
| gpt3-175b   | 96     | 96 x 128     | 12288 | 174,604,259,328      | 175B      |

Two rows of Table 2.1 are not self-consistent, and the table's parameter counts decide them:
- XL lists 24 heads of 128 (3072) for a width of 2048. The count (1.3B) is the width's: every
  attention matrix is width x width whatever the heads, so 2048 stays and the heads become
  2048 / 128 = 16 of the listed size 128 (24 heads cannot divide 2048 evenly).
- 13B lists a width of 5140 for 40 heads of 128 (5120). 5140 is not divisible by 40; 5120 is,
  and gives 12.85B, the paper's own "12,850M" of Table D.1 (5140 would give 12.95B).

Llama-family decoders: the GPT family with rotary positions, RMSNorm, SwiGLU, no biases and
grouped-query attention (``LLAMA``; models/gpt.py names what Qwen2 and Mistral add). The two small
ones train on a CPU (``lmforge pretrain --model llama-nano``); the full-size shapes are for
``estimate`` (counted on the meta device) and match the published checkpoints' parameter counts,
vocabulary included (``pretrain`` still takes the vocabulary from its data):

| preset      | layers | heads / kv heads | width | MLP   | context | vocab  | other                        | parameters    |
|-------------|--------|------------------|-------|-------|---------|--------|------------------------------|---------------|
| llama-nano  | 4      | 4 / 2            | 128   | 384   | 64      | data   | tied                         | 0.8M + embeddings |
| llama-mini  | 6      | 6 / 2            | 192   | 512   | 256     | data   | tied                         | 2.4M + embeddings |
| llama3.2-1b | 16     | 32 / 8           | 2048  | 8192  | 131072  | 128256 | theta 5e5, llama3 scaling x32, tied | 1,235,814,400 |
| llama3-8b   | 32     | 32 / 8           | 4096  | 14336 | 8192    | 128256 | theta 5e5                    | 8,030,261,248 |
| qwen2-0.5b  | 24     | 14 / 2           | 896   | 4864  | 32768   | 151936 | theta 1e6, q/k/v biases, tied | 494,032,768  |
| mistral-7b  | 32     | 32 / 8           | 4096  | 14336 | 32768   | 32000  | sliding window 4096          | 7,241,732,096 |

BERT encoders (models/bert.py; masked LM, post-norm, exact GELU, segment embeddings, pooler):

| preset    | layers | heads | width | context | parameters (30522 vocab), with the masked-LM head and pooler |
|-----------|--------|-------|-------|---------|--------------------------------------------------------------|
| bert-nano | 2      | 2     | 128   | 128     | 0.46M + embeddings = 4.4M; trains in minutes on a CPU        |
| bert-mini | 6      | 12    | 384   | 512     | 11.0M + embeddings = 22.9M: all-MiniLM-L6-v2's shape         |
| bert-base | 12     | 12    | 768   | 512     | 110.1M: BertModel's 109,482,240 (the published 110M) + head  |

Encoder-decoders (models/seq2seq.py; a source in, a target out). The two small ones train on a
CPU (pre-norm, learned positions); the full-size shapes are the published checkpoints' for
``estimate``, counted on the meta device (bart-base: BartForConditionalGeneration's 139,420,416;
marian-base: opus-mt-en-de's shape, MarianMTModel's 74,410,496 less its 2 x 512 x 512 frozen
sinusoids, which lmforge computes instead of storing):

| preset        | layers | heads | width | FFN  | context | vocab | other                                   | parameters  |
|---------------|--------|-------|-------|------|---------|-------|-----------------------------------------|-------------|
| seq2seq-nano  | 2+2    | 4     | 128   | 512  | 64      | data  | pre-norm, learned positions, tied       | 0.9M + embeddings |
| seq2seq-small | 4+4    | 8     | 256   | 1024 | 256     | data  | pre-norm, learned positions, tied       | 7.4M + embeddings |
| bart-base     | 6+6    | 12    | 768   | 3072 | 1024    | 50265 | post-norm, learned +2, LayerNorm embeddings, GELU | 139,420,416 |
| marian-base   | 6+6    | 8     | 512   | 2048 | 512     | 58101 | post-norm, sinusoidal, x sqrt(512), SiLU | 73,886,208 |

The classic neural models, one preset per family, each the best of a few sizes tried for the lowest loss
in about a minute of character-level training on a 2-core CPU (parameters for a 67-id vocabulary):

| preset | model                                                                   | window | parameters |
|--------|-------------------------------------------------------------------------|--------|------------|
| window | 8 previous tokens x 32-dim embeddings -> 256 tanh units, direct to output | 64     | 0.10M      |
| rnn    | Elman RNN, 1 layer x 256 tanh units, 64-dim embeddings                  | 64     | 0.10M      |
| lstm   | LSTM, 1 layer x 512, 128-dim embeddings                                 | 64     | 1.36M      |
| gru    | GRU, 1 layer x 256, 64-dim embeddings                                   | 64     | 0.27M      |

RNN encoder-decoders (models/rnn_seq2seq.py; lm_kind "seq2seq": a source in, a target out), one shape
with the lecture's three attentions, so the bottleneck is measured at an equal size (parameters for
a 67-id shared vocabulary):

| preset            | model                                                                       | parameters |
|-------------------|-----------------------------------------------------------------------------|------------|
| rnn-attn          | GRU, bidirectional encoder, 1 layer x 128, 64-dim embeddings, dot attention | 0.33M      |
| rnn-attn-additive | the same, additive (Bahdanau) attention                                     | 0.37M      |
| rnn-seq2seq       | the same, no attention: the decoder sees only the encoder's final state     | 0.30M      |

Every neural model has ``block_size``: GPT's context (its longest input), the classic models'
training window (they read inputs of any length). ``model.context_limit`` tells them apart
(models/protocol.py). The n-gram family is counted from data (``NGramLM.fit``), not built from a
config; it is listed here so that a family's name maps to its class in this one place.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import torch
from torch import nn

FAMILIES = {
    "gpt": "lmforge.models.gpt:GPT",
    "window": "lmforge.models.window:FixedWindowLM",
    "rnn": "lmforge.models.rnn:ElmanRNN",
    "lstm": "lmforge.models.rnn:LSTMLM",
    "gru": "lmforge.models.rnn:GRULM",
    "ngram": "lmforge.models.ngram:NGramLM",
    "bert": "lmforge.models.bert:BERT",
    "seq2seq": "lmforge.models.seq2seq:Seq2SeqTransformer",
    "rnn_seq2seq": "lmforge.models.rnn_seq2seq:RNNSeq2Seq",
}

MODERN = {"dropout": 0.0, "bias": False, "pos_encoding": "rope", "norm": "layernorm", "mlp": "swiglu"}
LLAMA = {"dropout": 0.0, "bias": False, "pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
SEQ2SEQ = {"dropout": 0.0, "norm_first": True, "pos_encoding": "learned", "mlp": "gelu"}
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

RNN_SEQ2SEQ = {
    "cell": "gru",
    "bidirectional": True,
    "n_layer": 1,
    "n_embd": 64,
    "hidden_size": 128,
    "block_size": 64,
}

# Training defaults a preset brings with it (TrainConfig field names), under whatever the user
# gives (recipe.plan_pretraining). gpt-nano's are the CPU speed-run recipe that
# benchmarks/shakespeare_char.py chose by measurement (README, Benchmarks: the race against nanoGPT).
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    # batch 16 and AdamW's 6e-3 (embeddings, head, gains) beside Muon: at a quarter of nanoGPT's
    # time 0.023 lower on average than batch 12 and 3e-3, lower in 5 of 6 paired runs
    "gpt-nano": {"optimizer": "muon", "muon_lr": 0.03, "batch_size": 16, "lr": 6e-3},
}


def preset_training(preset: str, parallel: str = "none") -> dict[str, Any]:
    """The training defaults ``preset`` carries ({} for most): the user's flags go over them.
    Muon orthogonalises whole matrices, so under ``--parallel fsdp`` or ``tp`` (sharded ones) a
    preset's Muon gives way to AdamW, as if the preset had not asked for it (with AdamW's default
    learning rate: the preset's was chosen for the parameters AdamW trains beside Muon)."""
    defaults = dict(PRESET_TRAINING.get(preset, {}))
    if parallel not in ("none", "ddp"):
        for name in ("optimizer", "muon_lr", "muon_weight_decay", "lr"):
            defaults.pop(name, None)
    return defaults


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # The small presets use what trains fastest on a CPU (benchmarks/shakespeare_char.py): rotary
    # positions and SwiGLU learn more per step than learned positions and GELU, LayerNorm is one
    # fused kernel where RMSNorm is several, and biases buy nothing.
    # gpt-nano adds the speed-run levers that paid off on a CPU (README, Benchmarks): QK-norm here,
    # Muon in PRESET_TRAINING
    "gpt-nano": (
        "gpt",
        {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, **MODERN, "qk_norm": True},
    ),
    "gpt-mini": ("gpt", {"n_layer": 6, "n_head": 6, "n_embd": 192, "block_size": 256, **MODERN}),
    "gpt2": ("gpt", {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}),
    "gpt2-medium": ("gpt", {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024}),
    "gpt2-large": ("gpt", {"n_layer": 36, "n_head": 20, "n_embd": 1280, "block_size": 1024}),
    "gpt2-xl": ("gpt", {"n_layer": 48, "n_head": 25, "n_embd": 1600, "block_size": 1024}),
    # GPT-3, Table 2.1 of Brown et al. 2020; XL and 13B as the module docstring reads them
    "gpt3-small": ("gpt", {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 2048}),
    "gpt3-medium": ("gpt", {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 2048}),
    "gpt3-large": ("gpt", {"n_layer": 24, "n_head": 16, "n_embd": 1536, "block_size": 2048}),
    "gpt3-xl": ("gpt", {"n_layer": 24, "n_head": 16, "n_embd": 2048, "block_size": 2048}),
    "gpt3-2.7b": ("gpt", {"n_layer": 32, "n_head": 32, "n_embd": 2560, "block_size": 2048}),
    "gpt3-6.7b": ("gpt", {"n_layer": 32, "n_head": 32, "n_embd": 4096, "block_size": 2048}),
    "gpt3-13b": ("gpt", {"n_layer": 40, "n_head": 40, "n_embd": 5120, "block_size": 2048}),
    "gpt3-175b": ("gpt", {"n_layer": 96, "n_head": 96, "n_embd": 12288, "block_size": 2048}),
    # Llama family (models/gpt.py): GQA on even in the small ones, so they exercise the small cache
    "llama-nano": (
        "gpt",
        {"n_layer": 4, "n_head": 4, "n_kv_head": 2, "n_embd": 128, "block_size": 64, **LLAMA},
    ),
    "llama-mini": (
        "gpt",
        {"n_layer": 6, "n_head": 6, "n_kv_head": 2, "n_embd": 192, "block_size": 256, **LLAMA},
    ),
    # the published checkpoints' config.json, read as convert --from-hf reads it (interop/llama.py)
    "llama3.2-1b": (
        "gpt",
        {
            **LLAMA,
            "vocab_size": 128256,
            "n_layer": 16,
            "n_head": 32,
            "n_kv_head": 8,
            "n_embd": 2048,
            "mlp_hidden": 8192,
            "block_size": 131072,
            "rope_theta": 500000.0,
            "rope_scaling": LLAMA3_SCALING,
            "tie_embeddings": True,
        },
    ),
    "llama3-8b": (
        "gpt",
        {
            **LLAMA,
            "vocab_size": 128256,
            "n_layer": 32,
            "n_head": 32,
            "n_kv_head": 8,
            "n_embd": 4096,
            "mlp_hidden": 14336,
            "block_size": 8192,
            "rope_theta": 500000.0,
            "tie_embeddings": False,
        },
    ),
    "qwen2-0.5b": (
        "gpt",
        {
            **LLAMA,
            "vocab_size": 151936,
            "n_layer": 24,
            "n_head": 14,
            "n_kv_head": 2,
            "n_embd": 896,
            "mlp_hidden": 4864,
            "block_size": 32768,
            "rope_theta": 1000000.0,
            "qkv_bias": True,
            "norm_eps": 1e-6,
            "tie_embeddings": True,
        },
    ),
    "mistral-7b": (
        "gpt",
        {
            **LLAMA,
            "vocab_size": 32000,
            "n_layer": 32,
            "n_head": 32,
            "n_kv_head": 8,
            "n_embd": 4096,
            "mlp_hidden": 14336,
            "block_size": 32768,
            "sliding_window": 4096,
            "tie_embeddings": False,
        },
    ),
    # bert-mini has the shape of all-MiniLM-L6-v2, so a converted MiniLM and a trained bert-mini compare.
    "bert-nano": ("bert", {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 128, "dropout": 0.0}),
    "bert-mini": ("bert", {"n_layer": 6, "n_head": 12, "n_embd": 384, "block_size": 512}),
    "bert-base": ("bert", {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 512}),
    # encoder-decoders (models/seq2seq.py): the small ones pre-norm for stable training on a CPU
    "seq2seq-nano": (
        "seq2seq",
        {"n_encoder_layer": 2, "n_decoder_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 64, **SEQ2SEQ},
    ),
    "seq2seq-small": (
        "seq2seq",
        {
            "n_encoder_layer": 4,
            "n_decoder_layer": 4,
            "n_head": 8,
            "n_embd": 256,
            "block_size": 256,
            **SEQ2SEQ,
        },
    ),
    # the published checkpoints' config.json, read as convert --from-hf reads it (interop/bart.py)
    "bart-base": (
        "seq2seq",
        {
            "vocab_size": 50265,
            "n_encoder_layer": 6,
            "n_decoder_layer": 6,
            "n_head": 12,
            "n_embd": 768,
            "mlp_hidden": 3072,
            "block_size": 1024,
            "dropout": 0.1,
            "mlp": "gelu_exact",
            "pos_encoding": "learned",
            "position_offset": 2,
            "layernorm_embedding": True,
            "final_logits_bias": True,
            "decoder_start_token_id": 2,
        },
    ),
    "marian-base": (
        "seq2seq",
        {
            "vocab_size": 58101,
            "n_encoder_layer": 6,
            "n_decoder_layer": 6,
            "n_head": 8,
            "n_embd": 512,
            "mlp_hidden": 2048,
            "block_size": 512,
            "dropout": 0.1,
            "mlp": "silu",
            "pos_encoding": "sinusoidal",
            "scale_embedding": True,
            "final_logits_bias": True,
            "decoder_start_token_id": 58100,
        },
    ),
    "window": ("window", {"context": 8, "n_embd": 32, "hidden_size": 256, "block_size": 64}),
    "rnn": ("rnn", {"n_embd": 64, "hidden_size": 256, "n_layer": 1, "block_size": 64}),
    "lstm": ("lstm", {"n_embd": 128, "hidden_size": 512, "n_layer": 1, "block_size": 64}),
    "gru": ("gru", {"n_embd": 64, "hidden_size": 256, "n_layer": 1, "block_size": 64}),
    # RNN encoder-decoders (models/rnn_seq2seq.py): the same shape with and without attention
    "rnn-attn": ("rnn_seq2seq", {**RNN_SEQ2SEQ, "attention": "dot"}),
    "rnn-attn-additive": ("rnn_seq2seq", {**RNN_SEQ2SEQ, "attention": "additive"}),
    "rnn-seq2seq": ("rnn_seq2seq", {**RNN_SEQ2SEQ, "attention": "none"}),
}


def model_class(family: str) -> type:
    """The class of a family (every one meets ``models.protocol.LanguageModel``)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    module_name, class_name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def config_fields(family: str) -> set[str]:
    return {f.name for f in dataclasses.fields(model_class(family).config_class)}


def preset_config(name: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(family, config dict) for a preset with ``overrides`` applied (None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    family, base = PRESETS[name]
    config = dict(base)
    known = config_fields(family)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in known:
            raise ValueError(f"{family} models have no setting {key!r}")
        config[key] = value
    return family, config


# presets fitted by counting in one pass, not by gradient descent (models/ngram.py), and their flags
COUNTED_PRESETS = {"ngram": ("order", "smoothing", "add_k", "discount")}


def preset_names() -> list[str]:
    """Every name ``--model`` takes: the built presets, then the counted ones."""
    return [*PRESETS, *COUNTED_PRESETS]


def is_counted(name: str) -> bool:
    return name in COUNTED_PRESETS


def check_settings(name: str, settings: dict[str, Any]) -> None:
    """Refuse a setting the preset's family has no field for, naming the ones it does take."""
    from lmforge.errors import UserInputError

    if name in COUNTED_PRESETS:
        family, known = name, list(COUNTED_PRESETS[name])
    elif name in PRESETS:
        family = PRESETS[name][0]
        known = [key for key in ALL_MODEL_FLAGS if key in config_fields(family)]
    else:
        return  # preset_config names the presets
    wrong = [key for key, value in settings.items() if value is not None and key not in known]
    if wrong:
        raise UserInputError(
            f"{_flags(wrong)} does not apply to --model {name} (family {family}); its model flags are {_flags(known)}"
        )


# the model flags of `pretrain`, in --help order (train/model_settings.py declares them)
ALL_MODEL_FLAGS = (
    "n_layer",
    "n_encoder_layer",
    "n_decoder_layer",
    "n_head",
    "n_kv_head",
    "n_embd",
    "block_size",
    "mlp_hidden",
    "dropout",
    "bias",
    "pos_encoding",
    "norm",
    "mlp",
    "qk_norm",
    "zero_init_proj",
    "logit_softcap",
    "hidden_size",
    "context",
    "direct",
    "activation",
    "tie_embeddings",
    "cell",
    "bidirectional",
    "attention",
)


def _flags(names: list[str]) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def build_model(family: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised neural model of ``family`` from its config dict."""
    cls = model_class(family)
    if not issubclass(cls, nn.Module):
        raise ValueError(f"{family} models are counted from data, not built from a config")
    return cls(cls.config_class(**config))


# nn.init's fills, which a model's constructor calls for its initial values
_INIT_FILLS = (
    "normal_", "uniform_", "trunc_normal_", "zeros_", "ones_", "constant_", "eye_", "orthogonal_",
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
)  # fmt: skip


def build_sketch(family: str, config: dict[str, Any]) -> nn.Module:
    """``family``'s model on the meta device: shapes, no memory and no initial values.

    nn.init's fills are skipped while it is built (as transformers' ``no_init_weights``): a meta
    tensor has no values to fill, and torch runs a meta ``normal_`` through its reference
    implementations, whose first call imports torch._dynamo. Skipped, a gpt-nano ``--max-time`` run
    starts 0.5 s sooner (the optimizer's constructor imports torch._dynamo later in any case).
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FILLS}
    try:
        for name in _INIT_FILLS:
            setattr(nn.init, name, _left_as_is)
        with torch.device("meta"):
            return build_model(family, config)
    finally:
        for name, fill in saved.items():
            setattr(nn.init, name, fill)


def _left_as_is(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor

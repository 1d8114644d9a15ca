"""GPT-2 <-> lmforge GPT: which Hugging Face config field and weight name is which, nothing else.

    Hugging Face GPT2LMHeadModel                          lmforge GPT (models/gpt.py)
    config.json  n_positions 1024, n_embd 768       <->   block_size 1024, n_embd 768
                 n_inner null (= 4 * n_embd)        <->   mlp_hidden 3072
                 activation_function gelu_new       <->   mlp "gelu" (tanh form; HF "gelu" is "gelu_exact")
                 layer_norm_epsilon 1e-5            <->   norm_eps 1e-5
    transformer.wte.weight        (50257, 768)      <->   wte.weight         (50257, 768)
    transformer.h.0.attn.c_attn.weight (768, 2304)  <->   h.0.attn.c_attn.weight (2304, 768)
        Conv1D keeps (in, out); nn.Linear keeps (out, in): the four projections are transposed
    transformer.h.0.attn.bias     causal-mask buffer ->   (dropped: lmforge builds its mask)
    lm_head.weight   absent from the file when tied  <->   lm_head.weight (= wte.weight when tied)

GPT-2 is one corner of lmforge's GPT: learned positions, a GELU MLP, LayerNorm, and biases on
every projection and norm. A run outside that corner cannot be exported, and
``hf_config`` names the setting that is in the way.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.errors import CheckpointError
from lmforge.interop.llama import unexportable_settings

# Hugging Face's Conv1D layers store their weight as (in, out), the transpose of nn.Linear's.
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers older checkpoints carry (the causal mask and its fill value); no weights.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# Hugging Face activation_function -> lmforge mlp. gelu_new and gelu_pytorch_tanh both compute the
# tanh approximation GPT-2 was trained with; Hugging Face's plain "gelu" is the exact erf form.
ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}
HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu"}

# What a run must be for GPT2LMHeadModel to compute the same function: setting -> (values, why).
GPT2_ARCHITECTURE = {
    "pos_encoding": (("learned",), "GPT-2 has learned positions only"),
    "mlp": (tuple(HF_ACTIVATION), "GPT-2's MLP is GELU, not gated"),
    "norm": (("layernorm",), "GPT-2 uses LayerNorm"),
    "bias": ((True,), "GPT-2 has biases on every projection and norm"),
}


def gpt_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """The lmforge GPTConfig dict for a Hugging Face GPT-2 ``config.json`` read from ``source``."""
    if hf.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{source} describes a model of type {hf.get('model_type')!r}, not 'gpt2'; "
            "lmforge converts GPT-2 (GPT2LMHeadModel), BERT (model_type 'bert') and Llama, Qwen2 and "
            "Mistral (model_type llama, qwen2, mistral) checkpoints only"
        )
    activation = hf.get("activation_function", "gelu_new")
    refusals = {
        "activation_function": (
            activation not in ACTIVATIONS,
            f"{activation!r} (lmforge's GPT-2 MLP computes {', '.join(ACTIVATIONS)})",
        ),
        "scale_attn_weights": (not hf.get("scale_attn_weights", True), "false (lmforge divides by sqrt(hs))"),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), "true"),
        "add_cross_attention": (hf.get("add_cross_attention", False), "true (a decoder of an encoder)"),
    }
    for field, (refused, what) in refusals.items():
        if refused:
            raise CheckpointError(f"{source} sets {field} = {what}; lmforge's GPT cannot compute that model")
    try:
        n_embd = int(hf["n_embd"])
        return {
            "vocab_size": int(hf["vocab_size"]),
            "block_size": int(hf["n_positions"]),
            "n_layer": int(hf["n_layer"]),
            "n_head": int(hf["n_head"]),
            "n_embd": n_embd,
            "mlp_hidden": int(hf.get("n_inner") or 4 * n_embd),
            "dropout": float(hf.get("resid_pdrop", 0.0)),
            "bias": True,
            "pos_encoding": "learned",
            "norm": "layernorm",
            "mlp": ACTIVATIONS[activation],
            "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
        }
    except KeyError as error:
        raise CheckpointError(
            f"{source} has no {error.args[0]!r} field; it is not a complete GPT-2 config"
        ) from None


def hf_config(
    config: dict[str, Any], source: str, bos_id: int | None = None, eos_id: int | None = None
) -> dict[str, Any]:
    """The Hugging Face ``config.json`` for an lmforge GPTConfig dict; refuses what GPT-2 cannot express."""
    wrong = [
        f"{name}={config.get(name)!r} ({why})"
        for name, (values, why) in GPT2_ARCHITECTURE.items()
        if config.get(name) not in values
    ]
    extras = {  # the Llama family's settings (models/gpt.py) that GPT-2 has no field for
        "n_kv_head": (
            config.get("n_kv_head") not in (None, config["n_head"]),
            "GPT-2 has one key/value head per query head",
        ),
        "qkv_bias": (
            config.get("qkv_bias") not in (None, config.get("bias")),
            "GPT-2 biases every projection alike",
        ),
        "sliding_window": (config.get("sliding_window") is not None, "GPT-2 attends to the whole context"),
        # the speed-run levers (models/gpt.py); zero_init_proj is only a starting point, not a shape
        "qk_norm": (bool(config.get("qk_norm")), "GPT-2 has no query/key norm"),
        "logit_softcap": (config.get("logit_softcap") is not None, "GPT-2 does not cap its logits"),
    }
    wrong += [f"{name}={config.get(name)!r} ({why})" for name, (refused, why) in extras.items() if refused]
    if wrong:
        raise CheckpointError(
            f"{source} cannot be exported as GPT-2: {'; '.join(wrong)}; nor as Llama, Qwen2 or Mistral: "
            f"{'; '.join(unexportable_settings(config))}"
        )
    n_embd = config["n_embd"]
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config["vocab_size"],
        "n_positions": config["block_size"],
        "n_embd": n_embd,
        "n_layer": config["n_layer"],
        "n_head": config["n_head"],
        "n_inner": None if config["mlp_hidden"] == 4 * n_embd else config["mlp_hidden"],
        "activation_function": HF_ACTIVATION[config["mlp"]],
        "layer_norm_epsilon": config["norm_eps"],
        "resid_pdrop": config["dropout"],
        "embd_pdrop": config["dropout"],
        "attn_pdrop": config["dropout"],
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config["tie_embeddings"],
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def from_hf_names(tensors: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 state dict (with or without the ``transformer.`` prefix) in lmforge's names."""
    state = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith(BUFFER_SUFFIXES):
            continue
        state[name] = tensor.t() if name.endswith(CONV1D_SUFFIXES) else tensor
    if tied:
        state.pop("lm_head.weight", None)  # the token embedding is the head
    return state


def to_hf_names(state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """An lmforge GPT state dict in Hugging Face GPT2LMHeadModel names, Conv1D weights transposed."""
    tensors = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            if not tied:  # a tied head is the token embedding; Hugging Face's file leaves it out
                tensors[name] = tensor.contiguous()
            continue
        tensor = tensor.t() if name.endswith(CONV1D_SUFFIXES) else tensor
        tensors["transformer." + name] = tensor.contiguous()
    return tensors

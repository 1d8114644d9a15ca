"""Llama, Qwen2 and Mistral <-> lmforge GPT: which config field and weight name is which.

    Hugging Face LlamaForCausalLM (Qwen2ForCausalLM, MistralForCausalLM)     lmforge GPT (models/gpt.py)
    config.json  hidden_size 2048, intermediate_size 8192                <->  n_embd 2048, mlp_hidden 8192
                 num_attention_heads 32, num_key_value_heads 8          <->  n_head 32, n_kv_head 8
                 rms_norm_eps, max_position_embeddings                  <->  norm_eps, block_size
                 rope_theta + rope_scaling (or 5.x's rope_parameters)   <->  rope_theta, rope_scaling
                 tie_word_embeddings                                    <->  tie_embeddings
    model.embed_tokens.weight                                           <->  wte.weight
    model.layers.0.input_layernorm.weight                               <->  h.0.ln_1.weight
    model.layers.0.self_attn.{q,k,v}_proj.weight (nh hs | nkv hs | nkv hs rows)
                                                                        <->  h.0.attn.c_attn.weight, stacked
    model.layers.0.self_attn.o_proj.weight                              <->  h.0.attn.c_proj.weight
    model.layers.0.post_attention_layernorm.weight                      <->  h.0.ln_2.weight
    model.layers.0.mlp.{gate,up}_proj.weight                            <->  h.0.mlp.c_fc.weight: gate then up,
                                                                             SwiGLU's chunk(2) order
    model.layers.0.mlp.down_proj.weight                                 <->  h.0.mlp.c_proj.weight
    model.norm.weight, lm_head.weight (absent when tied)                <->  ln_f.weight, lm_head.weight

The three families are one architecture (rotary positions, RMSNorm, SwiGLU, grouped-query
attention, no biases) and differ in small ways, each a GPTConfig field:

    llama    attention_bias / mlp_bias (both or neither: lmforge's ``bias``); Llama 3.1's "llama3"
             rope scaling (and "linear"); tied embeddings in Llama 3.2 1B/3B
    qwen2    biases on q, k and v only (``qkv_bias``); theta 1e6; per-layer sliding windows
             (use_sliding_window) are refused: lmforge's window is the same in every layer
    mistral  ``sliding_window``: query t sees keys t - window < s <= t (null: none, v0.2 on)

Anything else (another model_type, an activation other than silu, a head_dim other than
hidden_size / num_attention_heads, another rope type) is refused with one line naming the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError, TokenizerError
from lmforge.fileio import atomic_write_text

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # in the HF directory and in RUN/tokenizer/
ROPE_KEYS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
# lmforge name inside a block <- Hugging Face name inside model.layers.N
RENAMED = {
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
    "self_attn.o_proj": "attn.c_proj",
    "mlp.down_proj": "mlp.c_proj",
}
# Hugging Face projections stacked (in this order) into one lmforge linear
FUSED = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
}
LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")


def is_llama_type(hf: dict[str, Any]) -> bool:
    return hf.get("model_type") in ARCHITECTURES


def llama_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """The lmforge GPTConfig dict for a Llama, Qwen2 or Mistral ``config.json`` read from ``source``."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"{source} describes a {model_type!r} model; expected {', '.join(ARCHITECTURES)}"
        )
    try:
        n_embd, n_head = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        n_kv_head = int(hf.get("num_key_value_heads") or n_head)
        config = {
            "vocab_size": int(hf["vocab_size"]),
            "block_size": int(hf["max_position_embeddings"]),
            "n_layer": int(hf["num_hidden_layers"]),
            "n_head": n_head,
            "n_kv_head": n_kv_head,
            "n_embd": n_embd,
            "mlp_hidden": int(hf["intermediate_size"]),
            "dropout": 0.0,
            "pos_encoding": "rope",
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
            "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        }
    except KeyError as error:
        raise CheckpointError(
            f"{source} has no {error.args[0]!r} field; it is not a complete {model_type} config"
        ) from None

    def refuse(field: str, what: str) -> None:
        raise CheckpointError(
            f"{source} sets {field} = {what}; lmforge's GPT cannot compute that {model_type} model"
        )

    if hf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", f"{hf['hidden_act']!r} (lmforge's SwiGLU gates with silu)")
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) != n_embd // n_head:
        refuse("head_dim", f"{head_dim}, not hidden_size / num_attention_heads = {n_embd // n_head}")
    if n_head % n_kv_head:
        refuse("num_key_value_heads", f"{n_kv_head}, which does not divide num_attention_heads = {n_head}")
    config["rope_theta"], config["rope_scaling"] = _rope(hf, refuse)
    config.update(_biases_and_window(hf, model_type, refuse))
    return config


def _rope(hf: dict[str, Any], refuse) -> tuple[float, dict | None]:
    """(theta, lmforge's rope_scaling) from 4.x's rope_theta + rope_scaling or 5.x's rope_parameters."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        refuse("rope_parameters", "one set per layer type")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in ROPE_KEYS:
        refuse("rope_scaling", f"rope_type {kind!r} (lmforge computes default, linear and llama3 scaling)")
    missing = [key for key in ROPE_KEYS[kind] if key not in params]
    if missing:
        refuse("rope_scaling", f"{kind} without {', '.join(missing)}")
    return theta, {"rope_type": kind, **{key: params[key] for key in ROPE_KEYS[kind]}}


def _biases_and_window(hf: dict[str, Any], model_type: str, refuse) -> dict[str, Any]:
    if model_type == "qwen2":
        sliding = hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or [])
        if sliding:
            refuse(
                "use_sliding_window",
                "true (Qwen2 windows some layers only; lmforge's window is every layer's)",
            )
        return {"bias": False, "qkv_bias": True, "sliding_window": None}
    if model_type == "mistral":
        window = hf.get("sliding_window")
        return {"bias": False, "qkv_bias": None, "sliding_window": int(window) if window else None}
    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        refuse(
            "attention_bias and mlp_bias", f"{attention_bias} and {mlp_bias} (lmforge biases both or neither)"
        )
    return {"bias": attention_bias, "qkv_bias": None, "sliding_window": None}


LLAMA_SHAPE = {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu"}


def is_llama_shaped(config: dict[str, Any]) -> bool:
    """A run to export as Llama/Qwen2/Mistral rather than GPT-2: rotary positions, RMSNorm, SwiGLU."""
    return all(config.get(name) == value for name, value in LLAMA_SHAPE.items())


def unexportable_settings(config: dict[str, Any]) -> list[str]:
    """The settings of ``config`` that none of Llama, Qwen2 and Mistral has, each with why."""
    wrong = [
        f"{name}={config.get(name)!r} ({why})"
        for name, value, why in (
            ("pos_encoding", "rope", "they use rotary positions"),
            ("norm", "rmsnorm", "they use RMSNorm"),
            ("mlp", "swiglu", "their MLP is SwiGLU"),
            ("num_labels", 0, "a classifier head has no CausalLM form"),
        )
        if config.get(name, 0) != value
    ]
    if config.get("qk_norm"):
        wrong.append("qk_norm=True (they have no query/key norm)")
    if config.get("logit_softcap") is not None:
        wrong.append(f"logit_softcap={config['logit_softcap']!r} (they do not cap their logits)")
    return wrong


def export_type(config: dict[str, Any], source: str, preferred: str | None = None) -> str:
    """Which of llama, qwen2, mistral computes ``config``: ``preferred`` (the type it came from) if it
    can, else the first that can; refuses a run none of them computes, naming the settings."""
    if wrong := unexportable_settings(config):
        raise CheckpointError(f"{source} cannot be exported as Llama, Qwen2 or Mistral: {'; '.join(wrong)}")
    bias, qkv_bias = config["bias"], config.get("qkv_bias")
    qkv_bias = bias if qkv_bias is None else qkv_bias
    window = config.get("sliding_window")
    fits = {
        "llama": window is None and qkv_bias == bias,
        "qwen2": window is None and qkv_bias and not bias,
        "mistral": not bias and not qkv_bias,
    }
    if preferred in fits and fits[preferred]:
        return preferred
    for model_type, fit in fits.items():
        if fit:
            return model_type
    raise CheckpointError(
        f"{source} combines bias={bias}, qkv_bias={qkv_bias} and sliding_window={window}, which none of "
        "Llama (all biases or none), Qwen2 (q/k/v biases only) and Mistral (a window, no biases) computes"
    )


def hf_config(
    config: dict[str, Any], model_type: str, bos_id: int | None = None, eos_id: int | None = None
) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of ``model_type`` (from ``export_type``) for a GPTConfig dict."""
    n_embd, n_head = config["n_embd"], config["n_head"]
    hf = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config["vocab_size"],
        "hidden_size": n_embd,
        "intermediate_size": config["mlp_hidden"],
        "num_hidden_layers": config["n_layer"],
        "num_attention_heads": n_head,
        "num_key_value_heads": config.get("n_kv_head") or n_head,
        "head_dim": n_embd // n_head,
        "hidden_act": "silu",
        "max_position_embeddings": config["block_size"],
        "rms_norm_eps": config["norm_eps"],
        # 4.x's two fields; 5.x reads them into its rope_parameters
        "rope_theta": config["rope_theta"],
        "rope_scaling": config.get("rope_scaling"),
        "tie_word_embeddings": config["tie_embeddings"],
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }
    if model_type == "llama":
        hf.update(attention_bias=config["bias"], mlp_bias=config["bias"])
    elif model_type == "mistral":
        hf["sliding_window"] = config.get("sliding_window")
    else:
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=config["n_layer"])
    return hf


def from_hf_names(tensors: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """A Hugging Face Llama-family state dict in lmforge's names; q/k/v and gate/up stacked.

    A projection whose partners are missing keeps its Hugging Face name, so the loader reports it."""
    state: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}
    part_of = {hf: target for target, names in FUSED.items() for hf in names}
    for name, tensor in tensors.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # a buffer older checkpoints carry; lmforge computes its own
        match = LAYER_NAME.fullmatch(name)
        if name == "model.embed_tokens.weight":
            state["wte.weight"] = tensor
        elif name == "model.norm.weight":
            state["ln_f.weight"] = tensor
        elif name == "lm_head.weight":
            if not tied:
                state[name] = tensor
        elif match and match.group(2) in RENAMED:
            state[f"h.{match.group(1)}.{RENAMED[match.group(2)]}.{match.group(3)}"] = tensor
        elif match and match.group(2) in part_of:
            layer, module, kind = match.groups()
            key = (f"h.{layer}.{part_of[module]}.{kind}", part_of[module])
            parts.setdefault(key, {})[module] = (name, tensor)
        else:
            state[name] = tensor  # unexpected: the loader names it
    for (target, fused), found in parts.items():
        if all(module in found for module in FUSED[fused]):
            state[target] = torch.cat([found[module][1] for module in FUSED[fused]], dim=0)
        else:
            state.update(dict(found.values()))
    return state


def to_hf_names(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """An lmforge GPT state dict in Hugging Face Llama-family names, c_attn and c_fc split."""
    head_size = config["n_embd"] // config["n_head"]
    q_rows, kv_rows = config["n_head"] * head_size, (config.get("n_kv_head") or config["n_head"]) * head_size
    back = {lmforge: hf for hf, lmforge in RENAMED.items()}
    tensors = {}
    for name, tensor in state.items():
        if name == "wte.weight":
            tensors["model.embed_tokens.weight"] = tensor
        elif name == "ln_f.weight":
            tensors["model.norm.weight"] = tensor
        elif name == "lm_head.weight":
            if not config["tie_embeddings"]:
                tensors[name] = tensor
        else:
            _, layer, rest = name.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            prefix = f"model.layers.{layer}."
            if module in back:
                tensors[f"{prefix}{back[module]}.{kind}"] = tensor
            elif module in FUSED:
                sizes = [q_rows, kv_rows, kv_rows] if module == "attn.c_attn" else [tensor.shape[0] // 2] * 2
                for hf_module, piece in zip(FUSED[module], tensor.split(sizes, dim=0), strict=True):
                    tensors[f"{prefix}{hf_module}.{kind}"] = piece
            else:
                raise CheckpointError(f"{name} has no place in a Llama-family checkpoint")
    return {name: tensor.contiguous() for name, tensor in tensors.items()}


# --- tokenizer extras: special ids from generation_config.json, the chat template -------------------


def special_ids(directory: Path) -> dict[str, int]:
    """bos/eos ids as generation_config.json (else config.json) gives them; the first of a list."""
    found: dict[str, int] = {}
    for name in ("config.json", "generation_config.json"):  # the later one wins
        path = directory / name
        if not path.is_file():
            continue
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} is not readable JSON ({error})") from None
        for special in ("bos", "eos"):
            value = fields.get(f"{special}_token_id")
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int):
                found[special] = value
    return found


def read_chat_template(directory: Path) -> str | None:
    """The chat template: chat_template.jinja, else tokenizer_config.json's "chat_template" (a string,
    or a list of named templates, of which "default"); None when there is none."""
    path = directory / CHAT_TEMPLATE_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    try:
        template = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise TokenizerError(f"{config_path} is not readable JSON ({error})") from None
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def write_chat_template(template: str, directory: Path) -> str:
    """Write ``template`` as chat_template.jinja (what transformers reads and writes); its name."""
    atomic_write_text(directory / CHAT_TEMPLATE_FILE, template)
    return CHAT_TEMPLATE_FILE

"""Hugging Face BERT <-> lmforge BERT: which config field and weight name is which, nothing else.

    Hugging Face BertModel / BertForMaskedLM / BertForSequenceClassification      lmforge BERT (models/bert.py)
    config.json  hidden_size 768, num_hidden_layers 12        <->  n_embd 768, n_layer 12
                 num_attention_heads 12, intermediate_size     <->  n_head 12, mlp_hidden 3072
                 max_position_embeddings 512, type_vocab_size  <->  block_size 512, type_vocab_size 2
                 layer_norm_eps 1e-12, hidden_dropout_prob     <->  norm_eps 1e-12, dropout 0.1
                 id2label {"0": "NEGATIVE", ...}               <->  num_labels 2, id2label
    [bert.]embeddings.{word,position,token_type}_embeddings   <->  wte, wpe, wse
    [bert.]embeddings.LayerNorm                               <->  ln_emb
    [bert.]encoder.layer.0.attention.self.{query,key,value}   <->  h.0.attn.c_attn (the three stacked)
    [bert.]encoder.layer.0.attention.output.dense, LayerNorm  <->  h.0.attn.c_proj, h.0.ln_1
    [bert.]encoder.layer.0.intermediate.dense                 <->  h.0.mlp.c_fc
    [bert.]encoder.layer.0.output.dense, LayerNorm            <->  h.0.mlp.c_proj, h.0.ln_2
    [bert.]pooler.dense                                       <->  pooler
    cls.predictions.transform.dense, LayerNorm                <->  mlm_dense, mlm_ln
    cls.predictions.decoder.weight  (the word embeddings)     <->  lm_head.weight (= wte.weight)
    cls.predictions.bias                                      <->  lm_head.bias
    classifier                                                <->  classifier
    cls.seq_relationship (next-sentence head), position_ids   ->   dropped

Which heads a checkpoint has (masked-LM head, pooler, classifier) becomes the config's
``mlm_head``, ``pooler`` and ``num_labels``. Old TensorFlow-era checkpoints name LayerNorm's
parameters gamma and beta; they are read as weight and bias.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from lmforge.errors import CheckpointError

PREFIX = "bert."
DROPPED = ("cls.seq_relationship.", "embeddings.position_ids", "cls.predictions.decoder.weight")
# Hugging Face name (after the prefix) -> lmforge name; {i} is the layer.
LAYER_NAMES = {
    "attention.output.dense": "attn.c_proj",
    "attention.output.LayerNorm": "ln_1",
    "intermediate.dense": "mlp.c_fc",
    "output.dense": "mlp.c_proj",
    "output.LayerNorm": "ln_2",
}
MODULE_NAMES = {
    "embeddings.word_embeddings": "wte",
    "embeddings.position_embeddings": "wpe",
    "embeddings.token_type_embeddings": "wse",
    "embeddings.LayerNorm": "ln_emb",
    "pooler.dense": "pooler",
    "cls.predictions.transform.dense": "mlm_dense",
    "cls.predictions.transform.LayerNorm": "mlm_ln",
    "classifier": "classifier",
}
QKV = ("query", "key", "value")
LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def bert_config(hf: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """The lmforge BERTConfig dict for a Hugging Face BERT ``config.json`` and the heads its weights hold."""
    if hf.get("model_type") != "bert":
        raise CheckpointError(f"{source} describes a model of type {hf.get('model_type')!r}, not 'bert'")
    refusals = {
        "hidden_act": (
            hf.get("hidden_act", "gelu") != "gelu",
            f"{hf.get('hidden_act')!r} (lmforge's BERT is erf GELU)",
        ),
        "position_embedding_type": (
            hf.get("position_embedding_type", "absolute") != "absolute",
            f"{hf.get('position_embedding_type')!r} (lmforge's BERT has absolute learned positions)",
        ),
        "is_decoder": (hf.get("is_decoder", False), "true (a causal BERT decoder)"),
        "add_cross_attention": (hf.get("add_cross_attention", False), "true (a decoder of an encoder)"),
        "tie_word_embeddings": (
            not hf.get("tie_word_embeddings", True),
            "false (lmforge ties the MLM decoder)",
        ),
    }
    for field, (refused, what) in refusals.items():
        if refused:
            raise CheckpointError(f"{source} sets {field} = {what}; lmforge's BERT cannot compute that model")
    names = {name.removeprefix(PREFIX) for name in tensors}
    classifier = tensors.get("classifier.weight")
    id2label = hf.get("id2label") if classifier is not None else None
    try:
        return {
            "vocab_size": int(hf["vocab_size"]),
            "block_size": int(hf["max_position_embeddings"]),
            "n_layer": int(hf["num_hidden_layers"]),
            "n_head": int(hf["num_attention_heads"]),
            "n_embd": int(hf["hidden_size"]),
            "mlp_hidden": int(hf["intermediate_size"]),
            "type_vocab_size": int(hf.get("type_vocab_size", 2)),
            "dropout": float(hf.get("hidden_dropout_prob", 0.1)),
            "norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
            "mlm_head": "cls.predictions.transform.dense.weight" in names,
            "pooler": "pooler.dense.weight" in names,
            "num_labels": 0 if classifier is None else int(classifier.shape[0]),
            "id2label": {str(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) else None,
        }
    except KeyError as error:
        raise CheckpointError(
            f"{source} has no {error.args[0]!r} field; it is not a complete BERT config"
        ) from None


def hf_config(config: dict[str, Any], pad_id: int | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of an lmforge BERTConfig dict, its architecture named by its heads."""
    if config.get("num_labels"):
        architecture = "BertForSequenceClassification"
    elif config.get("mlm_head", True):
        architecture = "BertForMaskedLM"
    else:
        architecture = "BertModel"
    hf = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config["vocab_size"],
        "hidden_size": config["n_embd"],
        "num_hidden_layers": config["n_layer"],
        "num_attention_heads": config["n_head"],
        "intermediate_size": config["mlp_hidden"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": config["dropout"],
        "attention_probs_dropout_prob": config["dropout"],
        "max_position_embeddings": config["block_size"],
        "type_vocab_size": config["type_vocab_size"],
        "layer_norm_eps": config["norm_eps"],
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": pad_id if pad_id is not None else 0,
        "tie_word_embeddings": True,
    }
    if config.get("num_labels"):
        labels = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config["num_labels"])}
        hf["id2label"] = labels
        hf["label2id"] = {name: int(i) for i, name in labels.items()}
    return hf


def architecture(config: dict[str, Any]) -> str:
    return hf_config(config)["architectures"][0]


def from_hf_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face BERT state dict (with or without the ``bert.`` prefix) in lmforge's names."""
    state: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (layer, weight|bias) -> query/key/value
    for name, tensor in tensors.items():
        name = name.removeprefix(PREFIX).replace(".gamma", ".weight").replace(".beta", ".bias")
        if name.startswith(DROPPED):
            continue
        if name in ("cls.predictions.bias", "cls.predictions.decoder.bias"):
            state["lm_head.bias"] = tensor
            continue
        layer = LAYER.match(name)
        if layer:
            index, module, kind = layer.groups()
            if module.startswith("attention.self."):
                qkv.setdefault((index, kind), {})[module.removeprefix("attention.self.")] = tensor
                continue
            if module in LAYER_NAMES:
                state[f"h.{index}.{LAYER_NAMES[module]}.{kind}"] = tensor
                continue
        module, _, kind = name.rpartition(".")
        state[f"{MODULE_NAMES[module]}.{kind}" if module in MODULE_NAMES else name] = (
            tensor  # else: unexpected
        )
    for (index, kind), parts in qkv.items():
        if set(parts) != set(QKV):
            raise CheckpointError(
                f"layer {index} has attention {kind}s {sorted(parts)}, not query, key and value"
            )
        state[f"h.{index}.attn.c_attn.{kind}"] = torch.cat([parts[p] for p in QKV], dim=0)
    return state


def to_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An lmforge BERT state dict in Hugging Face names (``bert.`` prefix, heads outside it)."""
    inverse_modules = {v: k for k, v in MODULE_NAMES.items()}
    inverse_layers = {v: k for k, v in LAYER_NAMES.items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue  # the word embeddings; Hugging Face ties them on load
        if name == "lm_head.bias":
            tensors["cls.predictions.bias"] = tensor.contiguous()
            continue
        module, _, kind = name.rpartition(".")
        if module.startswith("h."):
            _, index, rest = module.split(".", 2)
            base = f"{PREFIX}encoder.layer.{index}."
            if rest == "attn.c_attn":
                for part, chunk in zip(QKV, tensor.chunk(3, dim=0), strict=True):
                    tensors[f"{base}attention.self.{part}.{kind}"] = chunk.contiguous()
                continue
            tensors[f"{base}{inverse_layers[rest]}.{kind}"] = tensor.contiguous()
            continue
        hf_module = inverse_modules[module]
        prefix = "" if hf_module.startswith(("cls.", "classifier")) else PREFIX
        tensors[f"{prefix}{hf_module}.{kind}"] = tensor.contiguous()
    return tensors

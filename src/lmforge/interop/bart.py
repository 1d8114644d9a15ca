"""Hugging Face BART and Marian <-> lmforge's seq2seq Transformer: which weight name is which (the
two share their layout), and BART's config fields. Marian's config lives in ``marian.py``.

    BartForConditionalGeneration / MarianMTModel            lmforge Seq2SeqTransformer (models/seq2seq.py)
    model.shared.weight (shared vocabulary)            <->  wte.weight (= lm_head.weight when tied)
    model.encoder.embed_tokens, model.decoder.embed_tokens (separate vocabularies, Marian)
                                                       <->  source_wte, wte
    model.{encoder,decoder}.embed_positions.weight     <->  enc_wpe, dec_wpe (BART's learned table,
                                                            read at position + 2); Marian's frozen
                                                            sinusoids are computed, not stored
    model.{encoder,decoder}.layernorm_embedding        <->  enc_ln_emb, dec_ln_emb (BART)
    model.{encoder,decoder}.layer_norm                 <->  enc_ln_f, dec_ln_f (pre-norm models only)
    model.encoder.layers.0.self_attn.{q,k,v}_proj      <->  enc_h.0.attn.c_attn (the three stacked)
    ...layers.0.self_attn.out_proj, self_attn_layer_norm  <->  .attn.c_proj, .ln_1
    model.decoder.layers.0.encoder_attn.q_proj         <->  dec_h.0.cross_attn.q_proj
    model.decoder.layers.0.encoder_attn.{k,v}_proj     <->  dec_h.0.cross_attn.kv_proj (stacked)
    ...encoder_attn.out_proj, encoder_attn_layer_norm  <->  .cross_attn.c_proj, .ln_cross
    ...layers.0.fc1, fc2, final_layer_norm             <->  .mlp.c_fc, .mlp.c_proj, .ln_2
    lm_head.weight (absent from the file when tied)    <->  lm_head.weight
    final_logits_bias (1, vocab)                       <->  final_logits_bias (a buffer)

    BART config.json                                        Seq2SeqConfig
    d_model, encoder_layers, decoder_layers            <->  n_embd, n_encoder_layer, n_decoder_layer
    encoder_attention_heads, encoder_ffn_dim           <->  n_head, mlp_hidden (the decoder's must match)
    max_position_embeddings                            <->  block_size (source and target alike)
    activation_function gelu | gelu_new | relu | silu  <->  mlp gelu_exact | gelu | relu | silu
    scale_embedding, tie_word_embeddings, dropout      <->  scale_embedding, tie_embeddings, dropout
    decoder_start_token_id                             <->  decoder_start_token_id

Export writes ``forced_eos_token_id: null``: lmforge's decoding never forces end-of-text at the
length limit, and Hugging Face's ``generate`` then decodes the same ids. BART's legacy fairseq
fields (normalize_before, add_final_layer_norm, ...) are ignored, as transformers ignores them.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from lmforge.errors import CheckpointError

# Hugging Face activation_function -> lmforge mlp; "gelu" is the exact erf form
ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
ACTIVATIONS |= {"swish": "silu", "silu": "silu"}
HF_ACTIVATION = {"gelu_exact": "gelu", "gelu": "gelu_new", "relu": "relu", "silu": "swish"}

STACKS = {"encoder": "enc", "decoder": "dec"}
LAYER_NAMES = {  # Hugging Face module inside a layer -> lmforge's
    "self_attn.out_proj": "attn.c_proj",
    "self_attn_layer_norm": "ln_1",
    "encoder_attn.q_proj": "cross_attn.q_proj",
    "encoder_attn.out_proj": "cross_attn.c_proj",
    "encoder_attn_layer_norm": "ln_cross",
    "fc1": "mlp.c_fc",
    "fc2": "mlp.c_proj",
    "final_layer_norm": "ln_2",
}
STACKED = {  # projections lmforge fuses: its module -> Hugging Face's parts, in order
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "cross_attn.kv_proj": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
PART_OF = {part: (fused, i) for fused, parts in STACKED.items() for i, part in enumerate(parts)}
STACK_NAMES = {  # outside the layers: Hugging Face module (after "model.") -> lmforge's
    "encoder.embed_positions": "enc_wpe",
    "decoder.embed_positions": "dec_wpe",
    "encoder.layernorm_embedding": "enc_ln_emb",
    "decoder.layernorm_embedding": "dec_ln_emb",
    "encoder.layer_norm": "enc_ln_f",
    "decoder.layer_norm": "dec_ln_f",
}
LAYER = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
TABLES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def bart_config(hf: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """The Seq2SeqConfig dict of a Hugging Face BART ``config.json`` read from ``source``.

    An untied BART saved by transformers 5 holds separate encoder and decoder token tables (it
    unties them along with the head, and its ``shared`` table is then unused): those become
    lmforge's separate source and target tables."""
    config = common_config(hf, source, "BART")
    encoder, decoder = (tensors.get(f"model.{n}") for n in TABLES[1:])
    shared = config["tie_embeddings"] or encoder is None or decoder is None or torch.equal(encoder, decoder)
    return {
        **config,
        "pos_encoding": "learned",
        "position_offset": 2,
        "layernorm_embedding": True,
        "shared_vocab": shared,
        "source_vocab_size": None if shared else config["vocab_size"],
        "decoder_start_token_id": int(hf.get("decoder_start_token_id", 2)),
    }


def common_config(hf: dict[str, Any], source: str, what: str) -> dict[str, Any]:
    """The fields BART and Marian name alike; refuses what lmforge's model cannot compute."""
    activation = hf.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"{source} sets activation_function = {activation!r}; lmforge's {what} computes "
            f"{', '.join(ACTIVATIONS)}"
        )
    try:
        pairs = {
            "attention heads": (hf["encoder_attention_heads"], hf["decoder_attention_heads"]),
            "feed-forward widths": (hf["encoder_ffn_dim"], hf["decoder_ffn_dim"]),
        }
        for name, (encoder, decoder) in pairs.items():
            if encoder != decoder:
                raise CheckpointError(
                    f"{source} gives the encoder and decoder different {name} ({encoder} and {decoder}); "
                    "lmforge's seq2seq model has one setting for both"
                )
        return {
            "vocab_size": int(hf["vocab_size"]),
            "block_size": int(hf["max_position_embeddings"]),
            "target_block_size": None,
            "n_encoder_layer": int(hf["encoder_layers"]),
            "n_decoder_layer": int(hf["decoder_layers"]),
            "n_head": int(hf["encoder_attention_heads"]),
            "n_embd": int(hf["d_model"]),
            "mlp_hidden": int(hf["encoder_ffn_dim"]),
            "dropout": float(hf.get("dropout", 0.1)),
            "mlp": ACTIVATIONS[activation],
            "norm_first": False,
            "scale_embedding": bool(hf.get("scale_embedding", False)),
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
            "final_logits_bias": True,
            "norm_eps": 1e-5,
        }
    except KeyError as error:
        raise CheckpointError(
            f"{source} has no {error.args[0]!r} field; it is not a complete {what} config"
        ) from None


def check_exportable(config: dict[str, Any], source: str) -> str:
    """ "bart" or "marian": the Hugging Face model that computes this seq2seq run, or a refusal
    naming every setting in the way."""
    learned = config["pos_encoding"] == "learned"
    target = "bart" if learned else "marian"
    wrong = []
    if config["norm_first"]:
        wrong.append("norm_first=True (BART and Marian are post-norm)")
    if config.get("target_block_size") not in (None, config["block_size"]):
        wrong.append("target_block_size differs from block_size (one max_position_embeddings)")
    if learned:
        if config["position_offset"] != 2:
            wrong.append(f"position_offset={config['position_offset']} (BART reads its positions at +2)")
        if not config["layernorm_embedding"]:
            wrong.append("layernorm_embedding=False (BART normalises its embeddings)")
        if not config["shared_vocab"] and (
            config["tie_embeddings"] or config["source_vocab_size"] != config["vocab_size"]
        ):
            wrong.append(
                "shared_vocab=False (BART's separate tables need an untied head and one vocabulary size)"
            )
    elif config["layernorm_embedding"]:
        wrong.append("layernorm_embedding=True (Marian does not normalise its embeddings)")
    if wrong:
        name = "BART (learned positions)" if learned else "Marian (sinusoidal positions)"
        raise CheckpointError(f"{source} cannot be exported as {name}: {'; '.join(wrong)}")
    return target


def hf_common(config: dict[str, Any]) -> dict[str, Any]:
    """The config.json fields BART and Marian share, for an exportable Seq2SeqConfig dict."""
    return {
        "d_model": config["n_embd"],
        "encoder_layers": config["n_encoder_layer"],
        "decoder_layers": config["n_decoder_layer"],
        "encoder_attention_heads": config["n_head"],
        "decoder_attention_heads": config["n_head"],
        "encoder_ffn_dim": config["mlp_hidden"],
        "decoder_ffn_dim": config["mlp_hidden"],
        "max_position_embeddings": config["block_size"],
        "activation_function": HF_ACTIVATION[config["mlp"]],
        "dropout": config["dropout"],
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "scale_embedding": config["scale_embedding"],
        "tie_word_embeddings": config["tie_embeddings"],
        "decoder_start_token_id": config["decoder_start_token_id"],
        "forced_eos_token_id": None,
        "is_encoder_decoder": True,
        "use_cache": True,
    }


def hf_config(config: dict[str, Any], *, bos_id: int | None, eos_id: int | None, pad_id: int | None) -> dict:
    """BART's config.json for a Seq2SeqConfig dict that ``check_exportable`` calls "bart"."""
    return {
        "architectures": ["BartForConditionalGeneration"],
        "model_type": "bart",
        "vocab_size": config["vocab_size"],
        **hf_common(config),
        "bos_token_id": 0 if bos_id is None else bos_id,
        "eos_token_id": 2 if eos_id is None else eos_id,
        "pad_token_id": 1 if pad_id is None else pad_id,
    }


# --- weight names --------------------------------------------------------------------------------


def from_hf_names(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A BART or Marian state dict (``model.`` prefix or not) in lmforge's names, for ``config``."""
    state: dict[str, torch.Tensor] = {}
    tables: dict[str, torch.Tensor] = {}
    fused: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name == "final_logits_bias":
            state[name] = tensor
            continue
        if name == "lm_head.weight":
            if not config["tie_embeddings"]:
                state[name] = tensor
            continue
        name = name.removeprefix("model.")
        if name in TABLES:
            tables[name] = tensor
            continue
        layer = LAYER.match(name)
        if layer:
            stack, index, module, kind = layer.groups()
            base = f"{STACKS[stack]}_h.{index}."
            if module in PART_OF:
                target, position = PART_OF[module]
                fused.setdefault((base + target, kind), {})[position] = tensor
                continue
            state[base + LAYER_NAMES.get(module, module) + f".{kind}"] = tensor
            continue
        module, _, kind = name.rpartition(".")
        if module.endswith("embed_positions") and config["pos_encoding"] == "sinusoidal":
            continue  # Marian's frozen sinusoids: lmforge computes the same table
        state[f"{STACK_NAMES[module]}.{kind}" if module in STACK_NAMES else name] = tensor
    for (target, kind), parts in fused.items():
        expected = len(STACKED[target.split(".", 2)[2]])
        if sorted(parts) != list(range(expected)):
            raise CheckpointError(
                f"{target} lacks some of its projections ({kind}: has {len(parts)} of {expected})"
            )
        state[f"{target}.{kind}"] = torch.cat([parts[i] for i in range(expected)], dim=0)
    state.update(_token_tables(tables, config["shared_vocab"]))
    return state


def _token_tables(tables: dict[str, torch.Tensor], shared: bool) -> dict[str, torch.Tensor]:
    """wte (and source_wte) from whichever of the shared / encoder / decoder tables the file holds."""
    if shared:
        for name in TABLES:  # the shared table, else a copy of it that a tied checkpoint kept
            if name in tables:
                return {"wte.weight": tables[name]}
        raise CheckpointError("the checkpoint has no token embeddings (model.shared.weight)")
    missing = [n for n in TABLES[1:] if n not in tables]
    if missing:
        raise CheckpointError(f"the checkpoint has separate vocabularies but no model.{missing[0]}")
    return {"source_wte.weight": tables[TABLES[1]], "wte.weight": tables[TABLES[2]]}


def to_hf_names(
    state: dict[str, torch.Tensor], config: dict[str, Any], model_type: str
) -> dict[str, torch.Tensor]:
    """An lmforge seq2seq state dict in BART / Marian names (``model.`` prefix; a tied head left out).

    A BART with separate tables also gets ``model.shared.weight``, which transformers requires
    but does not read then: the target table is written there."""
    inverse_stack = {v: k for k, v in STACK_NAMES.items()}
    inverse_layer = {v: k for k, v in LAYER_NAMES.items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        module, _, kind = name.rpartition(".")
        if name == "lm_head.weight":
            if not config["tie_embeddings"]:
                tensors[name] = tensor.contiguous()
        elif name == "final_logits_bias":
            tensors[name] = tensor.contiguous()
        elif name == "wte.weight":
            table = "shared" if config["shared_vocab"] else "decoder.embed_tokens"
            tensors[f"model.{table}.weight"] = tensor.contiguous()
        elif name == "source_wte.weight":
            tensors["model.encoder.embed_tokens.weight"] = tensor.contiguous()
        elif module.startswith(("enc_h.", "dec_h.")):
            stack, index, inner = module.split(".", 2)
            base = f"model.{'encoder' if stack == 'enc_h' else 'decoder'}.layers.{index}."
            if inner in STACKED:
                parts = STACKED[inner]
                for part, chunk in zip(parts, tensor.chunk(len(parts), dim=0), strict=True):
                    tensors[f"{base}{part}.{kind}"] = chunk.contiguous()
            else:
                tensors[f"{base}{inverse_layer[inner]}.{kind}"] = tensor.contiguous()
        else:
            tensors[f"model.{inverse_stack[module]}.{kind}"] = tensor.contiguous()
    if model_type == "bart" and not config["shared_vocab"]:
        tensors["model.shared.weight"] = state[
            "wte.weight"
        ].clone()  # its own storage: safetensors refuses shared
    if "final_logits_bias" not in tensors:  # a run trained without one: Hugging Face's zeros
        tensors["final_logits_bias"] = torch.zeros(1, config["vocab_size"])
    return tensors

"""The Llama-family presets: full-size shapes counted on the meta device equal the published
checkpoints (and transformers' own models, slow), and the small ones are what they say."""

from __future__ import annotations

import pytest
import torch

from lmforge.models.registry import build_model, preset_config

# parameters of the published checkpoints (the sum of their safetensors shapes, tied heads once)
PUBLISHED = {
    "llama3.2-1b": 1_235_814_400,
    "llama3-8b": 8_030_261_248,
    "qwen2-0.5b": 494_032_768,
    "mistral-7b": 7_241_732_096,
}


def meta_model(name: str):
    family, config = preset_config(name)
    with torch.device("meta"):
        return build_model(family, config)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_presets_count_the_published_parameters(name):
    assert meta_model(name).num_parameters() == PUBLISHED[name]


def test_llama_nano_has_gqa_rmsnorm_swiglu_and_a_small_cache():
    model = meta_model("llama-nano")
    config = model.config
    assert (config.n_kv_head, config.norm, config.mlp, config.pos_encoding) == (
        2,
        "rmsnorm",
        "swiglu",
        "rope",
    )
    assert model.cache_layout().heads == 2
    assert model.num_parameters(exclude_embeddings=True) < 1_000_000


def test_llama32_keeps_its_long_context_without_a_long_rotary_table():
    model = meta_model("llama3.2-1b")
    assert model.context_limit == 131072 and model.rotary.cos.shape[0] == 4096


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_presets_count_what_transformers_builds(name):
    """transformers' own model from the config.json ``convert --to-hf`` would write for the preset."""
    transformers = pytest.importorskip("transformers")
    from lmforge.interop.llama import export_type, hf_config

    _, config = preset_config(name)
    config = {"norm_eps": 1e-5, "rope_theta": 10000.0, **config}
    hf = hf_config(config, export_type(config, name))
    hf_class = getattr(transformers, hf["architectures"][0])
    config_class = transformers.AutoConfig.for_model(hf["model_type"]).__class__
    with torch.device("meta"):
        theirs = hf_class(config_class(**{k: v for k, v in hf.items() if k != "model_type"}))
    assert sum(p.numel() for p in theirs.parameters()) == meta_model(name).num_parameters() == PUBLISHED[name]


def test_flops_count_the_smaller_key_value_projections():
    """Llama 3 8B by hand: per layer q (C x C), k and v (C x 8 heads x 128 each), o, and the three
    SwiGLU matrices; the head; causal scores 2 x context x C per layer (Kaplan et al.)."""
    from lmforge.models.flops import forward_flops_per_token

    C, kv, F, V, layers, context = 4096, 8 * 128, 14336, 128256, 32, 8192
    per_layer = 2 * (C * C + 2 * C * kv + C * C + 3 * C * F) + 2 * context * C
    assert forward_flops_per_token(meta_model("llama3-8b"), context) == layers * per_layer + 2 * C * V


def test_estimate_reads_a_llama_preset(capsys):
    import json

    from lmforge.cli import main

    assert main(["estimate", "--model", "llama3-8b", "--tokens", "15e12", "--gpus", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == PUBLISHED["llama3-8b"]

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

"""oneDNN-packed linear layers against the plain model: same logits, same greedy continuation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lmforge.generate import GenerationConfig, generate
from lmforge.generate.packing import PackedLinear, pack_linear_layers, packing_available
from lmforge.models.gpt import GPT, GPTConfig


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, **overrides)).eval()


pytestmark = pytest.mark.skipif(not packing_available(tiny_gpt()), reason="this PyTorch has no oneDNN")


@pytest.mark.parametrize("overrides", [{}, {"pos_encoding": "rope", "mlp": "swiglu", "bias": False}])
def test_packed_model_gives_the_same_logits_and_greedy_ids(overrides):
    plain = tiny_gpt(**overrides)
    packed = copy.deepcopy(plain)
    assert pack_linear_layers(packed, rows_hint=2) == 2 * 4 + 1
    assert isinstance(packed.lm_head, PackedLinear)
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(packed(ids).logits, plain(ids).logits, rtol=0, atol=1e-5)
        config = GenerationConfig(strategy="greedy", max_new_tokens=10)
        prompts = [[5, 6, 7], [8]]
        assert [r[0].ids for r in generate(packed, prompts, config)] == [
            r[0].ids for r in generate(plain, prompts, config)
        ]


def test_bf16_packed_model_stays_close_to_fp32():
    plain = tiny_gpt()
    packed = copy.deepcopy(plain).to(torch.bfloat16)
    pack_linear_layers(packed)
    ids = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(packed(ids).logits.float(), plain(ids).logits, rtol=0, atol=5e-2)


def test_packing_is_refused_quietly_off_the_cpu_dtypes():
    model = tiny_gpt().to(torch.float64)
    assert pack_linear_layers(model) == 0


def test_bf16_model_packs_only_where_onednn_has_bf16(cpu_capability):
    """The fallback on CPUs without oneDNN bf16 (forced here as 'avx2'): plain bf16 F.linear layers."""
    from lmforge.hardware import onednn_bf16_works

    plain = tiny_gpt()
    model = copy.deepcopy(plain).to(torch.bfloat16)
    replaced = pack_linear_layers(model)
    assert replaced == (9 if onednn_bf16_works() else 0)
    if cpu_capability == "avx2":
        assert replaced == 0 and not any(isinstance(m, PackedLinear) for m in model.modules())
    ids = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits.float(), plain(ids).logits, rtol=0, atol=5e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_race_answers_from_the_cache_the_second_time(dtype, cpu_capability, tmp_path, monkeypatch):
    from lmforge import hardware
    from lmforge.generate.packing import packing_pays_off

    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    model = tiny_gpt().to(dtype)
    first = packing_pays_off(model, rows_hint=1)
    if not packing_available(model):
        assert first is False and not (tmp_path / "hardware.json").exists()
    else:
        assert len(json.loads((tmp_path / "hardware.json").read_text())) == 1
        monkeypatch.setattr(hardware, "_MEMO", {})
        assert packing_pays_off(model, rows_hint=1) == first

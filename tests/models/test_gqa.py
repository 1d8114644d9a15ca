"""Grouped-query attention, sliding windows and scaled rotary positions (the Llama family's GPT settings).

The truths: a GQA layer equals the multi-head layer whose key/value heads are the GQA heads
repeated (Ainslie et al. 2023), on every attention path; cached decoding equals recomputing the
whole sequence; a window mask hand-written; rotary tables equal cos/sin computed directly."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.generate import GenerationConfig, generate
from lmforge.generate.step import GPTStepModel
from lmforge.models.attention import SelfAttention, causal_mask
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.layers import RotaryEmbedding, scaled_frequencies
from lmforge.parallel.tensor import check_tensor_parallel

C, NH, NKV, HS = 32, 4, 2, 8
LLAMA = {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False}


def gqa_and_mha_twin(n_kv_head: int = NKV, qkv_bias: bool = False) -> tuple[SelfAttention, SelfAttention]:
    """A GQA layer, and a multi-head layer whose key and value heads are the GQA heads repeated."""
    torch.manual_seed(0)
    gqa = SelfAttention(C, NH, bias=False, n_kv_head=n_kv_head, qkv_bias=qkv_bias).eval()
    mha = SelfAttention(C, NH, bias=False, qkv_bias=qkv_bias).eval()
    groups = NH // n_kv_head

    def expand(rows: torch.Tensor) -> torch.Tensor:  # (n_kv * hs, ...) -> (nh * hs, ...), head j // groups
        return rows.unflatten(0, (n_kv_head, HS)).repeat_interleave(groups, dim=0).flatten(0, 1)

    with torch.no_grad():
        q, k, v = gqa.c_attn.weight.split([NH * HS, n_kv_head * HS, n_kv_head * HS])
        mha.c_attn.weight.copy_(torch.cat([q, expand(k), expand(v)]))
        if qkv_bias:
            gqa.c_attn.bias.normal_()
            qb, kb, vb = gqa.c_attn.bias.split([NH * HS, n_kv_head * HS, n_kv_head * HS])
            mha.c_attn.bias.copy_(torch.cat([qb, expand(kb), expand(vb)]))
        mha.c_proj.weight.copy_(gqa.c_proj.weight)
    return gqa, mha


def test_c_attn_is_query_heads_then_fewer_key_and_value_heads():
    gqa = SelfAttention(C, NH, n_kv_head=NKV)
    assert gqa.c_attn.weight.shape == ((NH + 2 * NKV) * HS, C)
    assert SelfAttention(C, NH).c_attn.weight.shape == (3 * C, C)  # n_kv_head None: unchanged
    with pytest.raises(ValueError, match="must divide"):
        SelfAttention(C, NH, n_kv_head=3)
    with pytest.raises(ValueError, match="must divide"):
        GPTConfig(n_head=4, n_embd=32, n_kv_head=3)


@pytest.mark.parametrize("path", ["sdpa", "matmul", "reference"])
@pytest.mark.parametrize("masked", [False, True], ids=["causal", "padded"])
@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_equals_multi_head_with_repeated_key_value_heads(path, masked, n_kv_head, monkeypatch):
    gqa, mha = gqa_and_mha_twin(n_kv_head, qkv_bias=True)
    x = torch.randn(2, 7, C, generator=torch.Generator().manual_seed(1))
    rotary = RotaryEmbedding(HS, 16)(torch.arange(7))
    mask = causal_mask(7, 7, padding_mask=torch.tensor([[1] * 7, [0, 0] + [1] * 5])) if masked else None
    if path == "matmul":  # the bf16 CPU path, forced whatever this machine's race says
        monkeypatch.setattr("lmforge.hardware.bf16_matmul_attention_pays_off", lambda: True)
        gqa, mha, x = gqa.bfloat16(), mha.bfloat16(), x.bfloat16()
    ours, weights = gqa(x, mask=mask, rotary=rotary, reference=path == "reference")
    theirs, their_weights = mha(x, mask=mask, rotary=rotary, reference=path == "reference")
    tolerance = 2e-2 if path == "matmul" else 1e-6
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)
    if path == "reference":
        torch.testing.assert_close(weights, their_weights)


def test_attend_from_equals_forward_at_the_chosen_rows():
    gqa, _ = gqa_and_mha_twin()
    x = torch.randn(3, 6, C, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([5, 2, 0])
    mask = causal_mask(6, 6)
    picked_mask = mask[0, 0, rows][:, None, None]  # (B, 1, 1, T): the keys of each chosen query
    full = gqa(x, mask=mask)[0][torch.arange(3), rows]
    torch.testing.assert_close(gqa.attend_from(x, rows, picked_mask), full)


def tiny_llama(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = {"vocab_size": 61, "block_size": 32, "n_layer": 2, "n_head": NH, "n_kv_head": NKV, "n_embd": C}
    model = GPT(GPTConfig(**{**settings, **LLAMA, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("window", [None, 5], ids=["full", "window5"])
def test_gqa_cached_decoding_equals_uncached_forward(window):
    model = tiny_llama(sliding_window=window)
    step_model = GPTStepModel(model)
    ids = torch.randint(0, 61, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, state = step_model.start(ids[:, :6], None, max_new_tokens=14)
        for t in range(6, 20):
            torch.testing.assert_close(logits, model(ids[:, :t]).logits[:, -1], rtol=0, atol=1e-5)
            logits, state = step_model.step(ids[:, t], state)


def test_gqa_padded_greedy_equals_each_prompt_alone():
    model = tiny_llama(sliding_window=6)
    prompts = [[3, 14, 15, 9, 2, 6, 5, 3], [8, 1]]
    config = GenerationConfig(strategy="greedy", max_new_tokens=12)
    together = [rows[0].ids for rows in generate(model, prompts, config)]
    alone = [generate(model, [p], config)[0][0].ids for p in prompts]
    assert together == alone


def test_gqa_cache_is_n_head_over_n_kv_head_times_smaller():
    gqa, mha = tiny_llama(), tiny_llama(n_kv_head=None)
    assert gqa.cache_layout().heads == NKV and mha.cache_layout().heads == NH
    sizes = []
    for model in (gqa, mha):
        with torch.inference_mode():
            _, state = GPTStepModel(model).start(torch.tensor([[1, 2, 3]]), None, max_new_tokens=5)
        sizes.append(state.cache.keys.nbytes + state.cache.values.nbytes)
    assert state.cache.keys.shape == (2, 1, NH, 8, HS)  # (L, B, heads, prompt + new, hs) of the MHA twin
    assert sizes[1] == sizes[0] * NH // NKV


def test_window_mask_sees_the_last_window_keys_only():
    # query t (the last 3 of 6 positions) sees keys t - 3 < s <= t
    expected = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3, 6, window=3)[0, 0], expected)


def test_sliding_window_weights_vanish_outside_the_window_and_a_wide_window_changes_nothing():
    ids = torch.randint(0, 61, (1, 12), generator=torch.Generator().manual_seed(3))
    narrow = tiny_llama(sliding_window=4)
    out = narrow(ids, output_attentions=True)
    query, key = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    outside = (key > query) | (key <= query - 4)
    for weights in out.attentions:
        assert weights[..., outside].abs().max() == 0 and weights[..., ~outside].min() > 0
    wide, plain = tiny_llama(sliding_window=12), tiny_llama()
    torch.testing.assert_close(wide(ids).logits, plain(ids).logits, rtol=0, atol=0)
    assert not torch.allclose(narrow(ids).logits, plain(ids).logits)
    assert narrow._mask(None, 12, 0, ids.device) is not None and wide._mask(None, 12, 0, ids.device) is None


def test_rotary_table_grows_lazily_and_equals_direct_cos_sin():
    rotary = RotaryEmbedding(HS, 131072, theta=500000.0)
    assert rotary.cos.shape[0] == RotaryEmbedding.TABLE_START  # not 131072 rows up front
    positions = torch.tensor([0, 7, 5000, 131071])
    cos, sin = rotary(positions, end=131072)
    inv_freq = 1.0 / 500000.0 ** (torch.arange(0, HS, 2, dtype=torch.float64) / HS)
    angles = positions[:, None].double() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    torch.testing.assert_close(cos[0, :, 0, 0], angles.cos().float())
    torch.testing.assert_close(sin[0, :, 0, 0], angles.sin().float())
    assert rotary.cos.shape[0] == 131072


def test_llama3_scaling_by_hand():
    """Meta's apply_scaling: wavelengths above original/low divided by the factor, below original/high
    kept, in between blended by (original / wavelength - low) / (high - low)."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}  # fmt: skip
    wavelengths = torch.tensor([4.0, 16.0, 64.0], dtype=torch.float64)  # high, medium, low frequency
    inv_freq = 2 * math.pi / wavelengths
    smooth = (32 / 16 - 1) / (4 - 1)
    expected = [inv_freq[0], (1 - smooth) * inv_freq[1] / 8 + smooth * inv_freq[1], inv_freq[2] / 8]
    torch.testing.assert_close(scaled_frequencies(inv_freq, scaling), torch.stack(expected))
    linear = scaled_frequencies(inv_freq, {"rope_type": "linear", "factor": 2.0})
    torch.testing.assert_close(linear, inv_freq / 2)
    with pytest.raises(ValueError, match="yarn"):
        GPTConfig(pos_encoding="rope", rope_scaling={"rope_type": "yarn", "factor": 2.0})


def test_old_configs_without_the_new_fields_load_unchanged():
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=11, block_size=8)
    names = {name: tuple(p.shape) for name, p in GPT(config).state_dict().items()}
    assert names["h.0.attn.c_attn.weight"] == (48, 16) and names["h.0.attn.c_attn.bias"] == (48,)


def test_tensor_parallel_refuses_grouped_query_attention_in_one_line():
    with pytest.raises(UserInputError) as error:
        check_tensor_parallel(tiny_llama(), 2)
    message = str(error.value)
    assert "grouped-query" in message and "4 query heads, 2 key/value heads" in message
    assert "\n" not in message
    check_tensor_parallel(tiny_llama(n_kv_head=None), 2)  # multi-head: still splits


def test_tensor_parallel_refuses_a_torch_whose_dtensor_cannot_split_qkv(monkeypatch):
    """torch 2.11's DTensor failed on the strided q/k/v shard (seen on a GPU machine's image): one
    line before any process group starts, rather than a ValueError from inside the forward pass."""
    from lmforge.parallel import tensor

    assert tensor.torch_release("2.11.0+cu130") == (2, 11) and tensor.torch_release("2.13.0") == (2, 13)
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    with pytest.raises(
        UserInputError, match=r"--parallel tp needs PyTorch 2\.13 or later \(this is 2\.11\.0\+cu130"
    ):
        check_tensor_parallel(tiny_llama(n_kv_head=None), 2)
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    check_tensor_parallel(tiny_llama(n_kv_head=None), 2)

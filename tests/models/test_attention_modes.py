"""Every attention mode on every path, against torch.nn.MultiheadAttention and PyTorch's layers.

Modes: causal self, bidirectional self, bidirectional with key padding, cross-attention with
memory padding, causal with a KV cache, cross-attention with cached memory keys/values.
Paths: SDPA (fp32), matmul_attention (bf16 on a CPU, <= 256 queries), the reference path.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.generate.cache import KVCache
from lmforge.models.layers import (
    Block,
    CrossAttention,
    DecoderBlock,
    SelfAttention,
    attend,
    build_attention_mask,
    causal_mask,
)

B, T, S, C, NH = 2, 5, 4, 16, 2  # batch, queries, memory length, width, heads
PATHS = ["sdpa", "matmul", "reference"]
MODES = ["causal", "bidirectional", "bidirectional_padded", "cross_padded", "causal_cached", "cross_cached"]
BF16_TOLERANCE = 1.5e-2  # bf16 keeps 8 bits of mantissa; measured errors here are below 4e-3
# row 1: the last two of its 5 tokens, and the last of its 4 memory tokens, are padding
TOKEN_PADDING = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
MEMORY_PADDING = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, T, C, generator=g), torch.randn(B, S, C, generator=g)


def _module(mode: str) -> nn.Module:
    torch.manual_seed(1)
    if mode.startswith("cross"):
        return CrossAttention(C, NH).eval()
    return SelfAttention(C, NH, is_causal=mode.startswith("causal")).eval()


def _run(
    mode: str, module: nn.Module, x: torch.Tensor, memory: torch.Tensor, reference: bool
) -> torch.Tensor:
    """The module's output (B, T, C) in ``mode``."""
    if mode in ("causal", "bidirectional"):
        return module(x, reference=reference)[0]
    if mode == "bidirectional_padded":
        return module(x, build_attention_mask(key_padding_mask=TOKEN_PADDING), reference=reference)[0]
    memory_mask = build_attention_mask(key_padding_mask=MEMORY_PADDING)
    if mode == "cross_padded":
        return module(x, memory, memory_mask, reference=reference)[0]
    if mode == "cross_cached":  # keys/values of the memory once, then one query token per step
        memory_kv = module.project_memory(memory)
        steps = [
            module(x[:, t : t + 1], mask=memory_mask, memory_kv=memory_kv, reference=reference)[0]
            for t in range(T)
        ]
        return torch.cat(steps, dim=1)
    # causal_cached: a prefill of 2 tokens, a chunk of 2 after them (T != S), then one token
    cache = KVCache(1, B, NH, T, C // NH, dtype=x.dtype)
    outputs = []
    for start, end in [(0, 2), (2, 4), (4, 5)]:
        outputs.append(module(x[:, start:end], kv_cache=cache, reference=reference)[0])
        cache.advance(end - start)
    return torch.cat(outputs, dim=1)


def _multihead(module: nn.Module) -> nn.MultiheadAttention:
    """PyTorch's own attention module holding ``module``'s weights."""
    mha = nn.MultiheadAttention(C, NH, batch_first=True).eval()
    with torch.no_grad():
        if isinstance(module, CrossAttention):
            mha.in_proj_weight.copy_(torch.cat([module.q_proj.weight, module.kv_proj.weight]))
            mha.in_proj_bias.copy_(torch.cat([module.q_proj.bias, module.kv_proj.bias]))
        else:
            mha.in_proj_weight.copy_(module.c_attn.weight)
            mha.in_proj_bias.copy_(module.c_attn.bias)
        mha.out_proj.weight.copy_(module.c_proj.weight)
        mha.out_proj.bias.copy_(module.c_proj.bias)
    return mha


def _truth(mode: str, module: nn.Module, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    mha = _multihead(module)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = not allowed
    with torch.no_grad():
        if mode.startswith("causal"):
            return mha(x, x, x, attn_mask=future, need_weights=False)[0]
        if mode == "bidirectional":
            return mha(x, x, x, need_weights=False)[0]
        if mode == "bidirectional_padded":
            return mha(x, x, x, key_padding_mask=TOKEN_PADDING == 0, need_weights=False)[0]
        return mha(x, memory, memory, key_padding_mask=MEMORY_PADDING == 0, need_weights=False)[0]


@pytest.fixture
def sdpa_calls(monkeypatch, force_matmul_attention):
    """The keyword arguments of every F.scaled_dot_product_attention call (bf16 on a CPU takes the
    matmul path here, whatever this machine's race chose)."""
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_every_path_matches_torch_multihead_attention(mode, path, sdpa_calls):
    module = _module(mode)
    x, memory = _inputs()
    expected = _truth(mode, module, x, memory)
    sdpa_calls.clear()  # MultiheadAttention calls SDPA itself
    if path == "matmul":  # bf16 on a CPU with <= 256 queries, in training: the matmul path, never SDPA
        got = _run(mode, copy.deepcopy(module).bfloat16(), x.bfloat16(), memory.bfloat16(), False).float()
        assert sdpa_calls == []
        torch.testing.assert_close(got, expected, rtol=0, atol=BF16_TOLERANCE)
        with torch.no_grad():  # the forward alone (evaluation, decoding): SDPA, faster there
            _run(mode, copy.deepcopy(module).bfloat16(), x.bfloat16(), memory.bfloat16(), False)
        assert sdpa_calls != []
        return
    with torch.no_grad():
        got = _run(mode, module, x, memory, reference=path == "reference")
    assert (sdpa_calls != []) == (path == "sdpa")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_sdpa_takes_its_unmasked_and_causal_kernels_when_no_mask_is_given(sdpa_calls):
    x, _ = _inputs()
    with torch.no_grad():
        _module("bidirectional")(x)
        _module("causal")(x)
    assert [(call["attn_mask"], call["is_causal"]) for call in sdpa_calls] == [(None, False), (None, True)]


@pytest.mark.parametrize("path", PATHS)
def test_cached_memory_keys_and_values_equal_recomputing_them(path):
    module = _module("cross_padded")
    x, memory = _inputs()
    if path == "matmul":
        module, x, memory = module.bfloat16(), x.bfloat16(), memory.bfloat16()
    mask = build_attention_mask(key_padding_mask=MEMORY_PADDING)
    reference = path == "reference"
    with torch.no_grad():
        recomputed = module(x, memory, mask, reference=reference)[0]
        cached = module(x, mask=mask, memory_kv=module.project_memory(memory), reference=reference)[0]
    torch.testing.assert_close(cached, recomputed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="either memory or"):
        module(x, memory, memory_kv=module.project_memory(memory))


@pytest.mark.parametrize("mode", ["bidirectional_padded", "cross_padded"])
def test_masked_keys_get_exactly_zero_weight(mode):
    module = _module(mode)
    x, memory = _inputs()
    with torch.no_grad():
        if mode == "cross_padded":
            weights = module(
                x, memory, build_attention_mask(key_padding_mask=MEMORY_PADDING), reference=True
            )[1]
            padded = MEMORY_PADDING == 0
        else:
            weights = module(x, build_attention_mask(key_padding_mask=TOKEN_PADDING), reference=True)[1]
            padded = TOKEN_PADDING == 0
    assert weights.shape == (B, NH, T, padded.shape[1])
    assert torch.all(weights.permute(0, 3, 1, 2)[padded] == 0)  # (padded keys, nh, T)
    assert weights.permute(0, 3, 1, 2)[~padded].min() > 0  # every real key gets some
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, NH, T))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("is_causal", [True, False])
def test_changing_a_future_token_changes_earlier_outputs_only_without_causality(is_causal, path):
    module = _module("causal" if is_causal else "bidirectional")
    x, _ = _inputs()
    changed = x.clone()
    changed[:, -1] += 1.0
    if path == "matmul":
        module, x, changed = module.bfloat16(), x.bfloat16(), changed.bfloat16()
    with torch.no_grad():
        before = module(x, reference=path == "reference")[0].float()
        after = module(changed, reference=path == "reference")[0].float()
    earlier = (before[:, :-1] - after[:, :-1]).abs().max()
    if is_causal:
        assert earlier == 0
    else:
        assert earlier > 1e-2  # an encoder's every position reads the whole sequence
    assert (before[:, -1] - after[:, -1]).abs().max() > 1e-2


def test_build_attention_mask_matches_hand_written_masks():
    # cross-attention: 2 decoder queries (the second is padding) over 3 memory keys (the last is padding)
    mask = build_attention_mask(
        key_padding_mask=torch.tensor([[1, 1, 0]]), query_padding_mask=torch.tensor([[1, 0]])
    )
    assert mask.tolist() == [[[[True, True, False], [False, False, False]]]]
    # causal over a left-padded row: the padding query sees nothing (no self-exception)
    mask = build_attention_mask(key_padding_mask=torch.tensor([[0, 1, 1]]), causal=True)
    assert mask.tolist() == [[[[False, False, False], [False, True, False], [False, True, True]]]]
    # key padding alone broadcasts over the queries
    assert build_attention_mask(key_padding_mask=torch.tensor([[1, 0]])).shape == (1, 1, 1, 2)
    assert torch.equal(build_attention_mask(causal=True, query_len=2, key_len=5), causal_mask(2, 5))
    assert build_attention_mask() is None  # nothing to mask: SDPA's unmasked kernel
    with pytest.raises(ValueError, match="query_len and key_len"):
        build_attention_mask(causal=True)


@pytest.mark.parametrize("path", PATHS)
def test_fully_padded_query_rows_give_zero_and_finite_gradients(path):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, NH, 4, 8, generator=g) for _ in range(3))
    if path == "matmul":
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    padding = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]])  # row 1: left and right padding
    mask = build_attention_mask(key_padding_mask=padding, query_padding_mask=padding, causal=True)
    y, _ = attend(q, k, v, mask, is_causal=True, reference=path == "reference")
    y.float().square().sum().backward()
    assert torch.all(y[1, :, [0, 3]] == 0)  # padding queries: exactly zero, as PyTorch's SDPA gives
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    expected, _ = attend(q.float(), k.float(), v.float(), mask, is_causal=True, reference=True)
    tolerance = BF16_TOLERANCE if path == "matmul" else 1e-6
    torch.testing.assert_close(y.float(), expected, rtol=0, atol=tolerance)


# --- blocks against PyTorch's Transformer layers -------------------------------------------------


def _copy_linear(target: nn.Linear, source: nn.Linear) -> None:
    target.weight.copy_(source.weight)
    target.bias.copy_(source.bias)


def _copy_feed_forward(torch_layer: nn.Module, block: Block) -> None:
    _copy_linear(torch_layer.linear1, block.mlp.c_fc)
    _copy_linear(torch_layer.linear2, block.mlp.c_proj)


@pytest.mark.parametrize("prenorm", [True, False])
def test_encoder_block_matches_torch_transformer_encoder_layer(prenorm):
    torch.manual_seed(2)
    block = Block(C, NH, 4 * C, mlp="gelu_exact", prenorm=prenorm, is_causal=False).eval()
    layer = nn.TransformerEncoderLayer(
        C, NH, 4 * C, dropout=0.0, activation="gelu", batch_first=True, norm_first=prenorm
    )
    with torch.no_grad():
        layer.self_attn.load_state_dict(_multihead(block.attn).state_dict())
        _copy_feed_forward(layer, block)
        layer.norm1.load_state_dict(block.ln_1.state_dict())
        layer.norm2.load_state_dict(block.ln_2.state_dict())
        x, _ = _inputs()
        # training mode keeps PyTorch on its plain composition (no fused fast path); dropout is 0
        expected = layer.train()(x, src_key_padding_mask=TOKEN_PADDING == 0)
        got, _ = block(x, mask=build_attention_mask(key_padding_mask=TOKEN_PADDING))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(block(x)[0], layer(x), rtol=0, atol=1e-5)  # no padding, no mask


def test_block_keeps_gpt_parameter_names():
    names = [name for name, _ in Block(C, NH, 4 * C).named_parameters()]
    assert names == [
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]  # fmt: skip


def _decoder_pair(prenorm: bool) -> tuple[DecoderBlock, nn.TransformerDecoderLayer]:
    torch.manual_seed(3)
    block = DecoderBlock(C, NH, 4 * C, mlp="gelu_exact", prenorm=prenorm).eval()
    layer = nn.TransformerDecoderLayer(
        C, NH, 4 * C, dropout=0.0, activation="gelu", batch_first=True, norm_first=prenorm
    )
    with torch.no_grad():
        layer.self_attn.load_state_dict(_multihead(block.attn).state_dict())
        layer.multihead_attn.load_state_dict(_multihead(block.cross_attn).state_dict())
        _copy_feed_forward(layer, block)
        layer.norm1.load_state_dict(block.ln_1.state_dict())
        layer.norm2.load_state_dict(block.ln_cross.state_dict())
        layer.norm3.load_state_dict(block.ln_2.state_dict())
    return block, layer


@pytest.mark.parametrize("prenorm", [True, False])
def test_decoder_block_matches_torch_transformer_decoder_layer(prenorm):
    block, layer = _decoder_pair(prenorm)
    x, memory = _inputs()
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        expected = layer(
            x,
            memory,
            tgt_mask=future,
            tgt_key_padding_mask=TOKEN_PADDING == 0,  # right padding: no query is left without a key
            memory_key_padding_mask=MEMORY_PADDING == 0,
        )
        got, _, cross_weights = block(
            x,
            memory,
            mask=build_attention_mask(key_padding_mask=TOKEN_PADDING, causal=True),
            memory_mask=build_attention_mask(key_padding_mask=MEMORY_PADDING),
            reference=True,
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert torch.all(cross_weights[1, :, :, 3] == 0)  # the padded memory token
        fast, _, _ = block(x, memory, memory_mask=build_attention_mask(key_padding_mask=MEMORY_PADDING))
        unpadded = layer(x, memory, tgt_mask=future, memory_key_padding_mask=MEMORY_PADDING == 0)
        torch.testing.assert_close(fast, unpadded, rtol=0, atol=1e-5)  # mask=None: causal, SDPA


def test_decoder_block_step_by_step_with_both_caches_equals_the_whole_sequence():
    block, _ = _decoder_pair(prenorm=True)
    x, memory = _inputs()
    memory_mask = build_attention_mask(key_padding_mask=MEMORY_PADDING)
    cache = KVCache(1, B, NH, T, C // NH)
    with torch.no_grad():
        whole, _, _ = block(x, memory, memory_mask=memory_mask)
        memory_kv = block.cross_attn.project_memory(memory)  # once for the whole decode
        steps = []
        for t in range(T):
            steps.append(
                block(x[:, t : t + 1], memory_kv=memory_kv, memory_mask=memory_mask, kv_cache=cache)[0]
            )
            cache.advance(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=0, atol=1e-5)

"""The fast attention paths against the textbook one (softmax(QK^T / sqrt(d)) V with a -inf mask)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.layers import Block, causal_mask, matmul_attention, reference_attention


def _qkv(dtype: torch.dtype, T: int = 9, S: int = 9):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, T, 8, generator=g).to(dtype)
    k, v = (torch.randn(2, 3, S, 8, generator=g).to(dtype) for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_matmul_attention_equals_reference_causal(dtype, tolerance):
    q, k, v = _qkv(dtype)
    expected, _ = reference_attention(q.float(), k.float(), v.float(), causal_mask(9, 9))
    torch.testing.assert_close(matmul_attention(q, k, v, None).float(), expected, rtol=0, atol=tolerance)


def test_matmul_attention_honours_padding_and_a_cached_past():
    q, k, v = _qkv(torch.float32, T=3, S=9)  # 3 new queries after 6 cached keys
    padding = torch.ones(2, 9, dtype=torch.long)
    padding[1, :4] = 0  # row 1 is left-padded
    mask = causal_mask(3, 9, padding_mask=padding)
    expected, weights = reference_attention(q, k, v, mask)
    assert weights[1, :, :, :4].abs().max() == 0  # padding gets no attention
    torch.testing.assert_close(matmul_attention(q, k, v, mask), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("matmul_pays_off", [True, False])
def test_bf16_cpu_model_takes_the_path_the_race_chose_and_matches_fp32(monkeypatch, matmul_pays_off):
    import lmforge.hardware

    monkeypatch.setattr(lmforge.hardware, "bf16_matmul_attention_pays_off", lambda: matmul_pays_off)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32)).eval()
    ids = torch.randint(0, 61, (2, 24))
    calls = []
    original = F.scaled_dot_product_attention
    try:
        F.scaled_dot_product_attention = lambda *a, **kw: calls.append(1) or original(*a, **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(ids).logits.float()
    finally:
        F.scaled_dot_product_attention = original
    assert (calls == []) == matmul_pays_off  # the matmul path where it pays off, else SDPA
    torch.testing.assert_close(fast, model(ids).logits, rtol=0, atol=5e-2)


@pytest.mark.parametrize("prenorm", [True, False])
def test_a_block_at_one_position_per_row_equals_the_full_block_there(prenorm):
    torch.manual_seed(0)
    block = Block(16, 4, 64, prenorm=prenorm, is_causal=True).eval()
    x = torch.randn(3, 7, 16)
    rows = torch.tensor([6, 3, 0])  # e.g. each row's last real token
    causal = torch.arange(7)[None, :] <= rows[:, None]  # the keys a causal query at rows[b] sees
    expected = block(x)[0][torch.arange(3), rows]
    got = block.forward_at(x, rows, causal[:, None, None, :])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

"""GPT against independent truths: Hugging Face GPT-2, hand-rolled attention and loss, causality."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.layers import RotaryEmbedding, apply_rotary, sinusoidal_table

VARIANTS = [
    {"pos_encoding": "learned"},
    {"pos_encoding": "sinusoidal"},
    {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
]


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, **overrides)
    return GPT(config).eval()


def test_gpt2_shape_has_published_parameter_count():
    model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    assert model.num_parameters() == 124_439_808
    # without the 50257x768 token table and the 1024x768 position table
    assert model.num_parameters(exclude_embeddings=True) == 124_439_808 - 50257 * 768 - 1024 * 768


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
def test_changing_the_future_leaves_past_logits_unchanged(variant):
    model = tiny(**variant)
    ids = torch.randint(0, 61, (2, 20), generator=torch.Generator().manual_seed(1))
    t = 11
    changed = ids.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 7) % 61
    before, after = model(ids).logits, model(changed).logits
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    assert (before[:, t + 1 :] - after[:, t + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
def test_sdpa_path_equals_reference_attention(variant):
    model = tiny(**variant)
    ids = torch.randint(0, 61, (3, 24), generator=torch.Generator().manual_seed(2))
    fast = model(ids).logits
    reference = model(ids, output_attentions=True).logits
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    padding = torch.ones(3, 24, dtype=torch.long)
    padding[1, :5] = 0
    torch.testing.assert_close(
        model(ids, attention_mask=padding).logits,
        model(ids, attention_mask=padding, output_attentions=True).logits,
        rtol=0,
        atol=1e-5,
    )


def test_masked_positions_get_exactly_zero_attention_weight():
    model = tiny()
    ids = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(3))
    padding = torch.ones(2, 10, dtype=torch.long)
    padding[0, :4] = 0  # left padding in row 0
    attentions = model(ids, attention_mask=padding, output_attentions=True).attentions
    assert len(attentions) == 2
    future = torch.triu(torch.ones(10, 10, dtype=torch.bool), diagonal=1)
    for weights in attentions:  # (B, nh, T, S)
        assert torch.all(weights[:, :, future] == 0)
        assert torch.all(weights[0, :, 4:, :4] == 0)  # real queries never see padding keys
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
def test_left_padded_row_matches_the_unpadded_row(variant):
    model = tiny(**variant)
    ids = torch.randint(0, 61, (1, 9), generator=torch.Generator().manual_seed(4))
    alone = model(ids).logits
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    batched = model(padded, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(batched[:, 3:], alone, rtol=0, atol=1e-5)


def test_loss_equals_hand_rolled_cross_entropy():
    model = tiny()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 61, (2, 12), generator=gen)
    labels = torch.randint(0, 61, (2, 12), generator=gen)
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    logits = out.logits.double()
    total, count = 0.0, 0
    for b in range(2):
        for t in range(12):
            if labels[b, t] == -100:
                continue
            row = logits[b, t]
            total += -(row[labels[b, t]] - torch.logsumexp(row, dim=0)).item()
            count += 1
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    summed = model(ids, labels=labels, reduction="sum").loss
    assert summed.item() == pytest.approx(total, rel=1e-5)


def test_untrained_model_predicts_near_uniform():
    model = tiny()
    gen = torch.Generator().manual_seed(6)
    ids, labels = torch.randint(0, 61, (2, 4, 24), generator=gen)
    loss = model(ids, labels=labels).loss.item()
    assert abs(loss - math.log(61)) < 0.15  # GPT-2 init: small logits, loss close to ln(vocab)


def test_sinusoidal_table_matches_the_paper_formula():
    table = sinusoidal_table(50, 8)
    for pos in (0, 1, 7, 49):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_rotary_scores_depend_only_on_distance():
    rotary = RotaryEmbedding(head_size=16, max_len=64)
    gen = torch.Generator().manual_seed(7)
    q, k = torch.randn(1, 1, 1, 16, generator=gen), torch.randn(1, 1, 1, 16, generator=gen)

    def score(query_pos: int, key_pos: int) -> float:
        rq = apply_rotary(q, *rotary(torch.tensor([query_pos])))
        rk = apply_rotary(k, *rotary(torch.tensor([key_pos])))
        return (rq * rk).sum().item()

    assert score(10, 3) == pytest.approx(score(40, 33), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 9), abs=1e-3)
    # a rotation keeps the vector's length
    rotated = apply_rotary(q, *rotary(torch.tensor([17])))
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def test_rotary_is_each_pair_rotated_by_its_angle():
    """Against the definition, pair by pair: (x_i, x_{i+h}) turned by position * theta_i (the
    rotate-half layout of GPT-NeoX, Llama and Hugging Face), values and gradients."""
    rotary = RotaryEmbedding(head_size=8, max_len=32)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, 8, generator=gen, dtype=torch.float64).requires_grad_()
    positions = torch.arange(5)
    cos, sin = rotary(positions)
    got = apply_rotary(x, cos.to(torch.float64)[:, :, 0], sin.to(torch.float64)[:, :, 0])  # (1, T, 1, hs)
    h = 4
    angles = positions[:, None].double() / 10000 ** (torch.arange(h).double() * 2 / 8)  # (T, h)
    c, s = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    first, second = x[..., :h], x[..., h:]
    expected = torch.cat([first * c - second * s, second * c + first * s], dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    weights = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-6, rtol=1e-6)


def test_weights_are_tied_and_init_follows_gpt2():
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=128))
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()
    assert model.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


def test_matches_hf_gpt2_logits():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(8)
    hf_config = transformers.GPT2Config(
        vocab_size=61,
        n_positions=24,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = GPT(GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32)).eval()
    state = {}
    for name, tensor in hf.state_dict().items():
        name = name.removeprefix("transformer.")
        # HF GPT-2 stores these as Conv1D (in, out); nn.Linear wants (out, in)
        state[name] = (
            tensor.t() if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else tensor
        )
    ours.load_state_dict(state)
    ids = torch.randint(0, 61, (2, 24), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=0, atol=1e-5)
    assert ours(ids, labels=ids).loss is not None
    with torch.no_grad():
        hf_loss = F.cross_entropy(hf(ids).logits[:, :-1].reshape(-1, 61), ids[:, 1:].reshape(-1))
        our_loss = ours(ids[:, :-1], labels=ids[:, 1:]).loss
    assert our_loss.item() == pytest.approx(hf_loss.item(), rel=1e-5)

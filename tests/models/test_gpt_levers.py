"""The speed-run levers of GPTConfig (qk_norm, mlp="relu2", zero_init_proj, logit_softcap) against
computations written out by hand, with the paths that must agree (cached decoding, last logits)
and the Hugging Face exports that cannot carry them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import CheckpointError, LMForgeError
from lmforge.generate.step import GPTStepModel
from lmforge.interop import gpt2, llama
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.layers import MLP, SelfAttention, make_mlp
from lmforge.models.registry import check_settings, preset_config

IDS = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(3))


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    settings = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**settings, **overrides})).eval()


def by_hand_qk_norm_attention(attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Causal attention with q and k RMS-normalised per head: q / sqrt(mean(q^2) + eps) * g."""
    B, T, C = x.shape
    nh, hs = attention.n_head, attention.head_dim
    q, k, v = (x @ attention.c_attn.weight.T + attention.c_attn.bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)

    def rms(t, gain, eps):
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + eps) * gain

    q = rms(q, attention.q_norm.weight, attention.q_norm.eps)
    k = rms(k, attention.k_norm.weight, attention.k_norm.eps)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, T, T)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return y @ attention.c_proj.weight.T + attention.c_proj.bias


def test_qk_norm_attention_equals_the_hand_computation():
    attention = SelfAttention(16, 2, qk_norm=True)
    with torch.no_grad():  # gains away from 1, so a norm that ignored them would fail
        attention.q_norm.weight.uniform_(0.5, 2.0)
        attention.k_norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            attention(x)[0], by_hand_qk_norm_attention(attention, x), atol=1e-5, rtol=1e-5
        )


def test_qk_norm_gradients_equal_the_hand_computation():
    """Queries and keys are normalised in one call and each scaled by its own gain: the gradient
    still reaches each gain and the projection as the hand computation's does."""
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(5))
    grads = []
    for forward in (lambda a: a(x)[0], lambda a: by_hand_qk_norm_attention(a, x)):
        torch.manual_seed(0)
        attention = SelfAttention(16, 2, qk_norm=True)
        with torch.no_grad():
            attention.q_norm.weight.uniform_(0.5, 2.0)
            attention.k_norm.weight.uniform_(0.5, 2.0)
        (forward(attention) * torch.arange(16.0)).sum().backward()
        grads.append(
            [p.grad for p in (attention.q_norm.weight, attention.k_norm.weight, attention.c_attn.weight)]
        )
    for ours, by_hand in zip(*grads):
        torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries(n_kv_head):
    """Scaling the query projection by 10 scales q by 10; after the RMSNorm the logits, and so the
    attention, are the same (exactly but for the norm's epsilon, made negligible here). Without
    qk_norm they are not (the control)."""
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(2))
    for qk_norm in (True, False):
        torch.manual_seed(0)
        attention = SelfAttention(16, 2, bias=False, n_kv_head=n_kv_head, qk_norm=qk_norm, norm_eps=1e-12)
        with torch.no_grad():
            before = attention(x)[0]
            attention.c_attn.weight[:16] *= 10  # the query rows come first
            after = attention(x)[0]
        if qk_norm:
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
        else:
            assert (after - before).abs().max() > 1e-3


def test_qk_norm_single_query_path_equals_the_full_forward():
    attention = SelfAttention(16, 2, qk_norm=True, is_causal=False)
    x = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([5, 2, 0])
    with torch.no_grad():
        full = attention(x)[0][torch.arange(3), rows]
        torch.testing.assert_close(attention.attend_from(x, rows, None), full, atol=1e-5, rtol=1e-5)


def test_relu2_mlp_is_relu_squared_between_the_two_linears():
    mlp = make_mlp("relu2", 16, 64)
    assert isinstance(mlp, MLP)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    expected = mlp.c_proj(F.relu(mlp.c_fc(x)) ** 2)
    torch.testing.assert_close(mlp(x), expected)


def test_zero_init_proj_makes_a_fresh_model_the_embeddings():
    positions = torch.arange(IDS.shape[1])
    for zero in (True, False):
        model = tiny(zero_init_proj=zero)
        with torch.no_grad():
            stream, _ = model._blocks(IDS, None, None, None, False)
            embeddings = model.wte(IDS) + model.wpe(positions)
        if zero:
            assert torch.equal(stream, embeddings)
            assert all(block.attn.c_proj.weight.abs().sum() == 0 for block in model.h)
        else:
            assert not torch.allclose(stream, embeddings)  # the control: GPT-2's init is no identity


def test_zero_init_proj_still_learns():
    model = tiny(zero_init_proj=True).train()
    model(IDS, labels=IDS).loss.backward()
    assert model.h[0].mlp.c_proj.weight.grad.abs().sum() > 0  # the zero matrices get gradients


def loud(model: GPT) -> GPT:
    with torch.no_grad():
        model.wte.weight.mul_(200)  # the tied head's logits reach well past the cap
    return model


def test_logit_softcap_bounds_logits_and_equals_the_formula():
    cap = 5.0
    capped, plain = loud(tiny(logit_softcap=cap)), loud(tiny())
    with torch.no_grad():
        out = capped(IDS, labels=IDS)
        raw = plain(IDS).logits
    assert raw.abs().max() > 3 * cap
    assert (
        out.logits.abs().max() <= cap
    )  # float32 tanh rounds to 1 far out: |logit| < cap in exact arithmetic
    torch.testing.assert_close(out.logits, cap * torch.tanh(raw / cap))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.flatten(0, 1), IDS.flatten()))
    last = capped(IDS, last_logits_only=True).logits
    torch.testing.assert_close(last, out.logits[:, -1:])


@pytest.mark.parametrize("rope", [False, True])
def test_cached_decoding_agrees_with_recomputation_with_every_lever_on(rope):
    levers = dict(qk_norm=True, mlp="relu2", logit_softcap=3.0)
    model = loud(tiny(**levers, **({"pos_encoding": "rope", "n_kv_head": 1} if rope else {})))
    step_model = GPTStepModel(model)
    with torch.inference_mode():
        logits, state = step_model.start(IDS[:, :4], None, max_new_tokens=8)
        for t in range(4, 12):
            full = model(IDS[:, :t]).logits[:, -1]
            torch.testing.assert_close(logits, full, rtol=0, atol=1e-4)
            assert logits.abs().max() <= 3.0
            logits, state = step_model.step(IDS[:, t], state)


def test_levers_are_model_flags_of_the_gpt_presets():
    levers = dict(qk_norm=True, mlp="relu2", zero_init_proj=True, logit_softcap=30.0)
    check_settings("gpt-nano", levers)  # what pretrain asks before building: accepted for gpt
    with pytest.raises(LMForgeError, match="--qk-norm does not apply to --model lstm"):
        check_settings("lstm", {"qk_norm": True})
    _, config = preset_config("gpt-nano", **levers)
    model = GPT(GPTConfig(vocab_size=40, **config))
    assert model.config.qk_norm and model.config.logit_softcap == 30.0
    assert isinstance(model.h[0].mlp, MLP) and model.h[0].mlp.activation == "relu2"


@pytest.mark.parametrize("option", [{"qk_norm": True}, {"logit_softcap": 30.0}, {"mlp": "relu2"}])
def test_hf_export_refuses_a_lever_gpt2_and_llama_lack(option):
    name = next(iter(option))
    gpt2_shape = {**tiny().config.to_dict(), **option}
    with pytest.raises(CheckpointError, match=name):
        gpt2.hf_config(gpt2_shape, "runs/x")
    _, llama_shape = preset_config("llama-nano", **option)
    if name != "mlp":  # a relu2 run is not Llama-shaped: it is offered to GPT-2, refused above
        with pytest.raises(CheckpointError, match=name):
            llama.export_type({**llama_shape, "num_labels": 0}, "runs/x")


def test_zero_init_proj_exports_as_plain_gpt2():
    """Only the starting point differs: the trained architecture is GPT-2's."""
    assert gpt2.hf_config({**tiny(zero_init_proj=True).config.to_dict()}, "runs/x")["model_type"] == "gpt2"


def test_qk_norm_under_bf16_autocast_runs_torchs_fused_norm_without_a_warning():
    """The projection hands the norm bf16 under autocast; a gain left in fp32 makes torch warn
    ("Mismatch dtype between input and weight") and take its slow path."""
    import warnings

    attention = SelfAttention(16, 2, qk_norm=True)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    expected = attention(x)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = attention(x)[0]
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), expected, atol=0.05)

"""The compiled SwiGLU and QK-norm + rotary kernels (kernels/swiglu.py, kernels/qk_norm_rope.py)
against PyTorch's own ops and the float64 truth, in every instruction-set variant this CPU runs,
inside the models (and against transformers' Llama), and every way they must step aside."""

from __future__ import annotations

import pytest
import torch

from lmforge.kernels import build, qk_norm_rope, swiglu
from lmforge.models.attention import SelfAttention
from lmforge.models.layers import RotaryEmbedding, SwiGLU

pytestmark = pytest.mark.skipif(
    swiglu._library() is None or qk_norm_rope._library() is None, reason="no C compiler here"
)


def seeded(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture
def kernels_forced(monkeypatch):
    """Both kernels run wherever they apply, whatever this machine's race said (the race has a
    test of its own), in the variant the capability picks."""
    monkeypatch.setattr(swiglu, "chosen_variant", lambda dtype=torch.float32: swiglu.variant())
    monkeypatch.setattr(qk_norm_rope, "chosen_variant", lambda dtype=torch.float32: qk_norm_rope.variant())


# --- SwiGLU ------------------------------------------------------------------------------------


def swiglu_input() -> torch.Tensor:
    """Gates at three scales plus the tails where exp's clamp acts, next to random ups."""
    gates = torch.cat([seeded(300, 64, seed=s, scale=scale) for s, scale in ((0, 0.5), (1, 3.0), (2, 12.0))])
    gates[0, :8] = torch.tensor([0.0, -0.0, 40.0, -40.0, 90.0, -90.0, 1e4, -1e4])
    return torch.cat([gates, seeded(900, 64, seed=3, scale=2.0)], dim=-1)  # (900, 128): [gate | up]


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_swiglu_forward_and_backward_match_pytorch_and_float64(variant):
    h = swiglu_input()
    grad = seeded(900, 64, seed=4)
    h64 = h.double().requires_grad_()
    truth = swiglu.swiglu_reference(h64)
    truth.backward(grad.double())
    out, dh = swiglu.run(h, which=variant), swiglu.run(h, grad, variant)
    assert out.shape == (900, 64) and dh.shape == (900, 128)
    reference = h.clone().requires_grad_()
    expected = swiglu.swiglu_reference(reference)
    expected.backward(grad)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dh, reference.grad, rtol=1e-5, atol=1e-5)
    # no further from float64 than PyTorch's own ops, give or take a few roundings
    assert (out.double() - truth).abs().max() <= 2 * (expected.double() - truth).abs().max() + 1e-6
    assert (dh.double() - h64.grad).abs().max() <= 3 * (reference.grad.double() - h64.grad).abs().max() + 1e-6


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_swiglu_bf16_is_the_fp32_result_rounded_once(variant):
    h, grad = swiglu_input().bfloat16(), seeded(900, 64, seed=4).bfloat16()
    out, dh = swiglu.run(h, which=variant), swiglu.run(h, grad, variant)
    assert out.dtype == dh.dtype == torch.bfloat16
    assert torch.equal(out, swiglu.run(h.float(), which=variant).bfloat16())
    assert torch.equal(dh, swiglu.run(h.float(), grad.float(), variant).bfloat16())
    step = 2.0**-7  # PyTorch rounds twice (after the silu and after the product): within 2 steps
    pytorch = swiglu.swiglu_reference(h).float()
    assert ((out.float() - pytorch).abs() <= 2 * step * pytorch.abs() + 1e-6).all()


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_swiglu_every_row_count_and_thread_count_gives_the_same_values(variant):
    h, grad = seeded(37, 2 * 50, seed=5, scale=3), seeded(37, 50, seed=6)
    library, forward, backward = swiglu._library(), swiglu.run(h, which=0), swiglu.run(h, grad, 0)
    for rows in (1, 2, 3, 36, 37):
        for threads in (1, 2, 3, 8):
            out = torch.full((rows, 50), float("nan"))
            library.lmforge_swiglu(0, variant, 0, None, h.data_ptr(), out.data_ptr(), rows, 50, threads)
            torch.testing.assert_close(out, forward[:rows], rtol=1e-6, atol=1e-7)
            dh = torch.full((rows, 100), float("nan"))
            library.lmforge_swiglu(
                1, variant, 0, grad.data_ptr(), h.data_ptr(), dh.data_ptr(), rows, 50, threads
            )
            torch.testing.assert_close(dh, backward[:rows], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_swiglu_nan_stays_nan_and_infinity_stays_infinite(variant):
    nan, inf = float("nan"), float("inf")
    h = torch.tensor([[nan, 1.0, 2.0, 1.0], [1.0, 2.0, nan, 1.0], [inf, 1.0, 2.0, 1.0]] * 8)
    out = swiglu.run(h, which=variant)
    assert out[0::3, 0].isnan().all() and out[1::3, 0].isnan().all() and (out[2::3, 0] == inf).all()
    assert swiglu.run(h, torch.ones(24, 2), variant)[0::3, 0].isnan().all()


def test_swiglu_module_trains_the_same_with_and_without_the_kernel(
    kernels_forced, cpu_capability, monkeypatch
):
    torch.manual_seed(7)
    mlp = SwiGLU(64, 128, bias=True)
    x = seeded(8, 40, 64, seed=8)
    with_kernel = mlp(x)
    assert type(swiglu.swiglu(mlp.c_fc(x)).grad_fn).__name__ == "_SwiGLUBackward"
    assert swiglu.variant() == (1 if cpu_capability == "avx2" else max(swiglu.variants.runnable_variants()))
    with_kernel.square().mean().backward()
    grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    monkeypatch.setenv(build.KERNELS_ENV, "aten")
    monkeypatch.setattr(swiglu, "chosen_variant", lambda dtype=torch.float32: None)
    without = mlp(x)
    without.square().mean().backward()
    torch.testing.assert_close(with_kernel, without, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads, [p.grad for p in mlp.parameters()]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_swiglu_steps_aside_where_it_does_not_apply(kernels_forced, monkeypatch):
    """fp16, fp64, small tensors, LMFORGE_KERNELS=aten: PyTorch's ops, bit for bit (an odd width:
    PyTorch's error); a strided view goes through the kernel (made contiguous first)."""
    h = seeded(200, 200, seed=9, scale=3)
    for x in (h.half(), h.double(), h[:10]):
        assert torch.equal(swiglu.swiglu(x), swiglu.swiglu_reference(x))
    with pytest.raises(RuntimeError, match="must match"):
        swiglu.swiglu(h[:, :199])
    strided = h[:, :198]
    assert not torch.equal(swiglu.swiglu(strided), swiglu.swiglu_reference(strided))  # rounds its own way
    torch.testing.assert_close(swiglu.swiglu(strided), swiglu.swiglu_reference(strided), rtol=1e-6, atol=1e-6)
    monkeypatch.setenv(build.KERNELS_ENV, "aten")
    monkeypatch.setattr(swiglu, "chosen_variant", swiglu.RacedChoice(swiglu._choose))
    assert torch.equal(swiglu.swiglu(h), swiglu.swiglu_reference(h))
    with pytest.raises(ValueError, match="odd"):
        swiglu.run(h[:, :199].contiguous())


def test_torch_compile_sees_no_foreign_call(kernels_forced):
    """Under torch.compile neither kernel is called (a ctypes call would break the graph)."""
    mlp, attention = SwiGLU(64, 128), SelfAttention(64, 4, qk_norm=True)
    rotary = RotaryEmbedding(16, 128)(torch.arange(128))
    x = seeded(4, 128, 64, seed=10)

    def block(x):
        return mlp(attention(x, rotary=rotary)[0])

    compiled = torch.compile(block, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-5)


# --- QK-norm and rotary positions ---------------------------------------------------------------


def rotary_tables(batch: int, time: int, head_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos, sin (batch, T, 1, 1, hs) at random positions per row, as left padding gives."""
    positions = torch.randint(0, 500, (batch, time), generator=torch.Generator().manual_seed(seed))
    return RotaryEmbedding(head_dim, 512)(positions)


CASES = {  # name: (heads of queries, of keys and values, QK-norm, rotary per batch row or shared)
    "gpt-nano": (4, 4, True, "shared"),
    "rotary only": (4, 4, False, "shared"),
    "norm only": (4, 4, True, None),
    "grouped, per-row positions": (6, 2, True, "per row"),
    "grouped, rotary only": (4, 1, False, "per row"),
}


def case_inputs(case: str, dtype=torch.float32, batch: int = 5, time: int = 24, head_dim: int = 32):
    n_q, n_kv, normed, positions = CASES[case]
    qkv = seeded(batch, time, (n_q + 2 * n_kv) * head_dim, seed=11, scale=3).to(dtype)
    gains = (seeded(head_dim, seed=12).abs() + 0.5, seeded(head_dim, seed=13).abs() + 0.5) if normed else None
    rotary = None
    if positions == "shared":
        rotary = RotaryEmbedding(head_dim, time)(torch.arange(time))
    elif positions == "per row":
        rotary = rotary_tables(batch, time, head_dim, seed=14)
    return qkv, n_q, n_kv, head_dim, gains, rotary


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_heads_forward_and_backward_match_float64(case, variant):
    qkv, n_q, n_kv, dim, gains, rotary = case_inputs(case)
    tables = qk_norm_rope._tables(rotary, qkv.shape[0], qkv.shape[1], dim)
    gain_table = qk_norm_rope._gain_table(gains)
    q, k, v = qk_norm_rope.run_forward(qkv, n_q, n_kv, dim, gain_table, 1e-5, tables, variant)
    grads = tuple(seeded(*t.shape, seed=15 + i) for i, t in enumerate((q, k, v)))
    dqkv, dgains = qk_norm_rope.run_backward(qkv, grads, n_q, n_kv, dim, gain_table, 1e-5, tables, variant)

    qkv64 = qkv.double().requires_grad_()
    gains64 = tuple(g.double().requires_grad_() for g in gains) if gains else None
    rotary64 = tuple(t.double() for t in rotary) if rotary else None
    truth = qk_norm_rope.reference_heads(qkv64, n_q, n_kv, dim, gains64, 1e-5, rotary64)
    torch.autograd.backward(truth, [g.double() for g in grads])
    assert [t.shape for t in (q, k, v)] == [t.shape for t in truth]
    assert all(t.is_contiguous() for t in (q, k, v))
    for ours, exact in zip((q, k, v), truth):
        torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dqkv.double(), qkv64.grad, rtol=1e-5, atol=1e-5)
    if gains:
        for ours, exact in zip(dgains, gains64):
            torch.testing.assert_close(ours.double(), exact.grad, rtol=1e-4, atol=1e-4)
    else:
        assert dgains is None


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_heads_bf16_is_the_fp32_result_rounded_once(variant):
    qkv, n_q, n_kv, dim, gains, rotary = case_inputs("grouped, per-row positions", torch.bfloat16)
    tables = qk_norm_rope._tables(rotary, qkv.shape[0], qkv.shape[1], dim)
    gain_table = qk_norm_rope._gain_table(gains)
    ours = qk_norm_rope.run_forward(qkv, n_q, n_kv, dim, gain_table, 1e-5, tables, variant)
    wide = qk_norm_rope.run_forward(qkv.float(), n_q, n_kv, dim, gain_table, 1e-5, tables, variant)
    assert all(o.dtype == torch.bfloat16 and torch.equal(o, w.bfloat16()) for o, w in zip(ours, wide))
    grads = tuple(seeded(*t.shape, seed=20).bfloat16() for t in ours)
    dqkv, dgains = qk_norm_rope.run_backward(qkv, grads, n_q, n_kv, dim, gain_table, 1e-5, tables, variant)
    dwide, dgains_wide = qk_norm_rope.run_backward(
        qkv.float(), tuple(g.float() for g in grads), n_q, n_kv, dim, gain_table, 1e-5, tables, variant
    )
    assert dqkv.dtype == torch.bfloat16 and torch.equal(dqkv, dwide.bfloat16())
    torch.testing.assert_close(dgains, dgains_wide, rtol=1e-5, atol=1e-5)  # fp32 sums, order aside


@pytest.mark.parametrize("variant", qk_norm_rope.variants.runnable_variants())
def test_heads_every_thread_count_gives_the_same_values(variant, monkeypatch):
    qkv, n_q, n_kv, dim, gains, rotary = case_inputs("grouped, per-row positions", batch=3, time=7)
    tables = qk_norm_rope._tables(rotary, 3, 7, dim)
    gain_table = qk_norm_rope._gain_table(gains)
    grads = None
    results = []
    for threads in (1, 2, 3, 5, 64):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        outputs = qk_norm_rope.run_forward(qkv, n_q, n_kv, dim, gain_table, 1e-5, tables, variant)
        grads = grads or tuple(seeded(*t.shape, seed=21) for t in outputs)
        results.append(
            (
                outputs,
                qk_norm_rope.run_backward(qkv, grads, n_q, n_kv, dim, gain_table, 1e-5, tables, variant),
            )
        )
    for outputs, (dqkv, dgains) in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outputs, results[0][0]))
        assert torch.equal(dqkv, results[0][1][0])
        torch.testing.assert_close(dgains, results[0][1][1], rtol=1e-5, atol=1e-5)  # partial sums per thread


def test_heads_refuse_what_the_kernel_cannot_take():
    """An odd head size is refused by the C side too (the Python side never asks): nothing written."""
    qkv = seeded(2, 8, 3 * 4 * 7, seed=22)
    outputs = tuple(torch.full((2, 4, 8, 7), 5.0) for _ in range(3))
    with pytest.raises(ValueError, match="head size 7"):
        qk_norm_rope._call(0, 0, qkv, outputs, (None,) * 3, None, None, 4, 4, 7, None, 1e-5, (None, None, 0))
    assert all((t == 5.0).all() for t in outputs)


@pytest.mark.parametrize("case", ["gpt-nano", "grouped, per-row positions"])
def test_self_attention_trains_the_same_with_and_without_the_kernel(
    case, kernels_forced, cpu_capability, monkeypatch
):
    n_q, n_kv, normed, positions = CASES[case]
    torch.manual_seed(23)
    attention = SelfAttention(n_q * 32, n_q, bias=False, n_kv_head=n_kv, qk_norm=normed)
    if normed:
        with torch.no_grad():
            attention.q_norm.weight.uniform_(0.5, 2.0)
            attention.k_norm.weight.uniform_(0.5, 2.0)
    x = seeded(4, 64, n_q * 32, seed=24)
    rotary = (
        rotary_tables(4, 64, 32, seed=25)
        if positions == "per row"
        else RotaryEmbedding(32, 64)(torch.arange(64))
    )
    assert attention._fused_heads(attention.c_attn(x), n_q, n_kv, rotary) is not None  # the kernel runs

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        attention.zero_grad()
        y = attention(x, rotary=rotary)[0]
        (y * seeded(*y.shape, seed=26)).sum().backward()
        return y.detach(), [p.grad.clone() for p in attention.parameters()]

    with_kernel, grads = run()
    monkeypatch.setattr(qk_norm_rope, "chosen_variant", lambda dtype=torch.float32: None)
    assert attention._fused_heads(attention.c_attn(x), n_q, n_kv, rotary) is None
    without, expected = run()
    torch.testing.assert_close(with_kernel, without, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(grads, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_heads_step_aside_where_they_do_not_apply(kernels_forced, monkeypatch):
    qkv, n_q, n_kv, dim, gains, rotary = case_inputs("gpt-nano", batch=8, time=64)
    assert qk_norm_rope.attention_heads(qkv, n_q, n_kv, dim, gains, 1e-5, rotary) is not None
    for other in (qkv.half(), qkv.double(), qkv[:1, :4]):  # fp16, fp64, too small
        assert qk_norm_rope.attention_heads(other, n_q, n_kv, dim, gains, 1e-5, rotary) is None
    assert qk_norm_rope.attention_heads(qkv, n_q, n_kv, dim, None, None, None) is None  # nothing to do
    assert (
        qk_norm_rope.attention_heads(qkv, n_q, n_kv, dim, gains, 1e-5, (rotary[0][:, :10], rotary[1][:, :10]))
        is None
    )
    wide = torch.randn(8, 64, 3 * 4 * 1026)  # a head size past the kernel's maximum
    assert (
        qk_norm_rope.attention_heads(
            wide, 4, 4, 1026, None, None, RotaryEmbedding(1026, 64)(torch.arange(64))
        )
        is None
    )
    monkeypatch.setenv(build.KERNELS_ENV, "aten")
    monkeypatch.setattr(qk_norm_rope, "chosen_variant", qk_norm_rope.RacedChoice(qk_norm_rope._choose))
    assert qk_norm_rope.attention_heads(qkv, n_q, n_kv, dim, gains, 1e-5, rotary) is None


def test_llama_logits_equal_transformers_through_the_kernels(kernels_forced, tmp_path):
    """A random transformers Llama (grouped-query heads, llama3 rope scaling) converted to lmforge:
    the same logits at a length where both kernels run."""
    pytest.importorskip("transformers")
    from lmforge.cli import main
    from lmforge.run import Run
    from tests.interop.test_llama_convert import random_hf

    theirs = random_hf("llama", vocab_size=300)
    theirs.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    ours = Run.open(tmp_path / "run").load_model()
    ids = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(27))
    hidden = ours.config.n_embd // ours.config.n_head
    qkv_width = (ours.config.n_head + 2 * ours.config.n_kv_head) * hidden
    assert 2 * 64 * qkv_width >= qk_norm_rope.variants.MIN_ELEMENTS  # both kernels apply here
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-4)


def test_each_race_is_run_once_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    for module, name in (
        (swiglu, "swiglu float32: lmforge"),
        (qk_norm_rope, "qk-norm rope float32: lmforge"),
    ):
        choice = module.RacedChoice(module._choose)
        assert choice() in (None, module.variant())
        assert name in (tmp_path / "hardware.json").read_text()


def test_a_gain_that_is_not_plain_memory_keeps_pytorchs_ops(kernels_forced):
    """A tensor subclass gain (a DTensor under FSDP is one) is not memory the kernel can read."""

    class Marked(torch.Tensor):
        pass

    attention = SelfAttention(128, 4, bias=False, qk_norm=True)
    x = seeded(4, 64, 128, seed=28)
    rotary = RotaryEmbedding(32, 64)(torch.arange(64))
    assert attention._fused_heads(attention.c_attn(x), 4, 4, rotary) is not None
    weight = attention.q_norm.weight
    attention.q_norm._parameters["weight"] = torch.Tensor._make_subclass(Marked, weight.detach(), True)
    assert attention._fused_heads(attention.c_attn(x), 4, 4, rotary) is None


def test_heads_backward_when_only_some_outputs_are_used(kernels_forced):
    """An output nothing reads gets no gradient from autograd; the others' still reach qkv and gains."""
    qkv, n_q, n_kv, dim, gains, rotary = case_inputs("grouped, per-row positions", batch=8, time=64)
    ours, theirs = qkv.clone().requires_grad_(), qkv.clone().requires_grad_()
    our_gains, their_gains = (tuple(g.clone().requires_grad_() for g in gains) for _ in range(2))
    q, _, _ = qk_norm_rope.attention_heads(ours, n_q, n_kv, dim, our_gains, 1e-5, rotary)
    q.square().sum().backward()
    reference = qk_norm_rope.reference_heads(theirs, n_q, n_kv, dim, their_gains, 1e-5, rotary)
    reference[0].square().sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_gains[0].grad, their_gains[0].grad, rtol=1e-4, atol=1e-4)
    assert our_gains[1].grad is not None and not our_gains[1].grad.any()  # keys unused: zero

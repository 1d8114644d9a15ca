"""The compiled tanh-GELU (kernels/gelu.py) against PyTorch's own kernel and the float64 truth,
in every instruction-set variant this CPU can run, and every way it must step aside."""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.kernels import build, gelu
from lmforge.models.layers import MLP

pytestmark = pytest.mark.skipif(gelu._library() is None, reason="no C compiler here")


def wide_range() -> torch.Tensor:
    """Normal values at three scales, the tails where the clamp acts, and exact zeros."""
    generator = torch.Generator().manual_seed(0)
    parts = [torch.randn(40_000, generator=generator) * scale for scale in (0.5, 2.0, 6.0)]
    parts.append(
        torch.tensor([0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 9.0, -9.0, 12.0, -12.0, 40.0, -40.0, 1e4, -1e4])
    )
    return torch.cat(parts)


@pytest.mark.parametrize("variant", gelu.runnable_variants())
def test_forward_and_backward_match_pytorch_and_float64(variant):
    x = wide_range()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x64 = x.double().requires_grad_()
    truth = F.gelu(x64, approximate="tanh")
    truth.backward(grad.double())

    out = gelu.run(x, which=variant)
    dx = gelu.run(x, grad, which=variant)
    torch.testing.assert_close(out, F.gelu(x, approximate="tanh"), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(
        dx, torch.ops.aten.gelu_backward(grad, x, approximate="tanh"), rtol=1e-5, atol=1e-5
    )
    # no further from the float64 truth than PyTorch's own kernel, give or take a few roundings
    pytorch_error = (F.gelu(x, approximate="tanh").double() - truth).abs().max().item()
    assert (out.double() - truth).abs().max().item() <= 2 * pytorch_error + 1e-7
    pytorch_grad_error = (torch.ops.aten.gelu_backward(grad, x, approximate="tanh").double() - x64.grad).abs()
    assert (dx.double() - x64.grad).abs().max().item() <= 3 * pytorch_grad_error.max().item() + 1e-6


@pytest.mark.parametrize("variant", gelu.runnable_variants())
def test_bf16_is_the_fp32_result_rounded_and_within_a_bf16_step_of_pytorch(variant):
    """bf16 in, bf16 out, fp32 inside: exactly our fp32 result rounded to nearest-even (as
    ``.bfloat16()`` rounds), and within one bf16 step of PyTorch's bf16 kernel."""
    x = wide_range().bfloat16()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    out, dx = gelu.run(x, which=variant), gelu.run(x, grad, which=variant)
    assert out.dtype == dx.dtype == torch.bfloat16
    assert torch.equal(out, gelu.run(x.float(), which=variant).bfloat16())
    assert torch.equal(dx, gelu.run(x.float(), grad.float(), which=variant).bfloat16())
    step = 2.0**-7  # bf16 keeps 8 significant bits: one step is 2^-7 of the value at most
    pytorch = F.gelu(x, approximate="tanh").float()
    assert ((out.float() - pytorch).abs() <= step * pytorch.abs() + 1e-5).all()
    pytorch_grad = torch.ops.aten.gelu_backward(grad, x, approximate="tanh").float()
    assert ((dx.float() - pytorch_grad).abs() <= step * pytorch_grad.abs() + 1e-5).all()
    # rounded once, from fp32: within half a step of the float64 truth, even where PyTorch's
    # 1 + tanh cancels to 0 (x < -4.3) and its result is 0. The truth is taken in the sigmoid
    # form, where nothing cancels (in float64 too, 1 + tanh z loses every digit past x = -7).
    x64 = x.double().requires_grad_()
    z = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)
    truth = x64 * torch.sigmoid(2 * z)
    truth.backward(grad.double())
    assert ((out.double() - truth).abs() <= step / 2 * truth.abs() + 1e-30).all()
    # (at x = -1e4 the clamp of exp's argument leaves a slope of 1e-24 where the truth is 0)
    assert ((dx.double() - x64.grad).abs() <= step / 2 * x64.grad.abs() + 1e-20).all()
    with pytest.raises(TypeError):
        gelu.run(x, grad.float(), which=variant)


@pytest.mark.parametrize("variant", gelu.runnable_variants())
def test_every_length_and_thread_count_gives_the_same_values(variant):
    """Slices end where the thread count puts them; no element is skipped or written twice."""
    x = torch.randn(100_003, generator=torch.Generator().manual_seed(2)) * 3
    library = gelu._library()
    reference = gelu.run(x, which=0)
    for length in (1, 15, 16, 17, 1000, 100_003):
        for threads in (1, 2, 3, 7):
            out = torch.full((length,), float("nan"))
            library.lmforge_gelu_tanh(0, variant, 0, None, x.data_ptr(), out.data_ptr(), length, threads)
            torch.testing.assert_close(out, reference[:length], rtol=1e-6, atol=1e-7)
    out = torch.full((4,), 7.0)
    library.lmforge_gelu_tanh(0, variant, 0, None, x.data_ptr(), out.data_ptr(), 0, 2)
    assert out.tolist() == [7.0] * 4  # nothing to do: nothing written


@pytest.mark.parametrize("variant", gelu.runnable_variants())
def test_nan_stays_nan_and_infinity_stays_infinite(variant):
    x = torch.tensor([float("nan"), float("inf"), 1.0] * 8)
    out = gelu.run(x, which=variant)
    assert out[0::3].isnan().all() and (out[1::3] == float("inf")).all()
    assert gelu.run(x, torch.ones_like(x), which=variant)[0::3].isnan().all()


def test_autograd_through_gelu_tanh_matches_pytorch(cpu_capability):
    """Non-contiguous input, grad through the custom Function, the variant the capability picks."""
    base = torch.randn(64, 300, generator=torch.Generator().manual_seed(3)) * 2
    ours = base.clone().requires_grad_()
    theirs = base.clone().requires_grad_()
    out = gelu.gelu_tanh(ours.t())
    assert out.grad_fn is not None and "GeluTanh" in type(out.grad_fn).__name__
    expected_variant = 1 if cpu_capability == "avx2" else max(gelu.runnable_variants())
    assert gelu.variant() == expected_variant
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    (out * weights).sum().backward()
    (F.gelu(theirs.t(), approximate="tanh") * weights).sum().backward()
    torch.testing.assert_close(out, F.gelu(base.t(), approximate="tanh"), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)


def test_steps_aside_where_it_does_not_apply(monkeypatch):
    """fp16, fp64, small tensors, LMFORGE_KERNELS=aten: PyTorch's kernel, bit for bit."""
    x = torch.randn(200, 200, generator=torch.Generator().manual_seed(5)) * 3
    if gelu.chosen_variant() is not None:  # the race kept it here: it runs, and rounds differently
        assert not torch.equal(gelu.gelu_tanh(x), F.gelu(x, approximate="tanh"))
    for dtype in (torch.float16, torch.float64):
        assert torch.equal(gelu.gelu_tanh(x.to(dtype)), F.gelu(x.to(dtype), approximate="tanh"))
    assert torch.equal(gelu.gelu_tanh(x[:10]), F.gelu(x[:10], approximate="tanh"))
    monkeypatch.setenv(build.KERNELS_ENV, "aten")
    assert torch.equal(gelu.gelu_tanh(x), F.gelu(x, approximate="tanh"))


def test_under_bf16_autocast_the_mlp_trains_through_the_kernel_in_bf16():
    torch.manual_seed(8)
    mlp = MLP(64, 256)
    x = torch.randn(8, 40, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = mlp.c_fc(x)
        ours = gelu.gelu_tanh(hidden)
        theirs = F.gelu(hidden, approximate="tanh")
    assert ours.dtype == torch.bfloat16
    if gelu.chosen_variant(torch.bfloat16) is not None:
        assert "GeluTanh" in type(ours.grad_fn).__name__
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2**-7, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mlp(x).float().square().mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in mlp.parameters())


def test_torch_compile_sees_no_foreign_call():
    """Under torch.compile the kernel is not called (a ctypes call would break the graph)."""
    mlp = MLP(64, 256)
    x = torch.randn(4, 70, 64, generator=torch.Generator().manual_seed(6))
    compiled = torch.compile(mlp, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), mlp(x), rtol=1e-5, atol=1e-5)


def test_mlp_trains_the_same_with_and_without_the_kernel(monkeypatch):
    torch.manual_seed(7)
    mlp = MLP(64, 256)
    x = torch.randn(8, 40, 64)
    with_kernel = mlp(x)
    with_kernel.square().mean().backward()
    grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    monkeypatch.setenv(build.KERNELS_ENV, "aten")
    without = mlp(x)
    without.square().mean().backward()
    torch.testing.assert_close(with_kernel, without, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads, [p.grad for p in mlp.parameters()]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


# --- building ----------------------------------------------------------------------------------
@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty cache and no library loaded yet in this process."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    build.load.cache_clear()
    yield tmp_path
    build.load.cache_clear()


def test_built_once_then_loaded_from_the_cache(fresh_build, monkeypatch):
    library = build.load("gelu_tanh")
    assert isinstance(library, ctypes.CDLL)
    built = list((fresh_build / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary file left beside it
    build.load.cache_clear()

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(build.subprocess, "run", no_compiler)
    assert isinstance(build.load("gelu_tanh"), ctypes.CDLL)


def test_a_corrupt_cached_library_is_built_again(fresh_build):
    """(Never overwrite a library a process has loaded: its pages are the file's, and the process
    dies of SIGBUS. A build replaces the file by rename, which leaves loaded copies alone.)"""
    library_file = build.library_path("gelu_tanh", build.find_compiler(), build.FLAGS + build.THREADING[0])
    library_file.parent.mkdir(parents=True)
    library_file.write_bytes(b"not an ELF file")
    library = build.load("gelu_tanh")
    assert library is not None and library.lmforge_gelu_tanh_best_variant() in (0, 2)
    assert library_file.read_bytes()[:4] == b"\x7fELF"


def test_no_compiler_or_a_failing_one_means_pytorchs_kernel(fresh_build, monkeypatch):
    monkeypatch.setattr(build, "find_compiler", lambda: None)
    assert build.load("gelu_tanh") is None
    build.load.cache_clear()
    monkeypatch.setattr(build, "find_compiler", lambda: "/bin/false")
    assert build.load("gelu_tanh") is None
    assert not any((fresh_build / "kernels").iterdir())  # a failed build leaves nothing behind
    gelu._library.cache_clear()
    gelu.chosen_variant.clear()
    try:
        x = torch.randn(200, 200)
        assert gelu.chosen_variant() is None
        assert torch.equal(gelu.gelu_tanh(x), F.gelu(x, approximate="tanh"))
    finally:
        build.load.cache_clear()
        gelu._library.cache_clear()
        gelu.chosen_variant.clear()


def test_the_race_is_run_once_and_remembered(fresh_build):
    gelu.chosen_variant.clear()
    try:
        choice = gelu.chosen_variant()
        text = (fresh_build / "hardware.json").read_text()
        assert "gelu tanh float32: lmforge" in text
        assert choice in (None, gelu.variant())
    finally:
        gelu.chosen_variant.clear()

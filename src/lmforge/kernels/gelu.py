"""GPT-2's GELU (the tanh form) on a CPU in fp32: a compiled kernel where it beats PyTorch's.

    h = gelu_tanh(h)     # F.gelu(h, approximate="tanh"), to within float rounding; autograd works

PyTorch's CPU kernel for the tanh form spends its time in a general-purpose vector tanh: on a
2-core Emerald Rapids Xeon (torch 2.13, AVX-512) it takes 4.5-5.3 ms for 8 x 256 x 1536 values
where the erf form takes 1.0 and ``torch.tanh`` alone 0.9, and its backward 5.3-5.8 ms. In GPT-2
shaped training that was 8% of a 6 x 384 step and 15% of a 4 x 128 one. ``gelu_tanh.c`` computes
the same function as x * sigmoid(2z) with a short polynomial exp, which the compiler vectorizes:
about 5x faster forward and 4x backward on one thread, within 1e-6 of PyTorch's result (which
is itself 4e-7 from the float64 truth).

Used only where all of these hold, else ``F.gelu``: the tensor is a plain fp32 CPU tensor of at
least MIN_ELEMENTS values; not under ``torch.compile`` (Inductor fuses its own); a C compiler
built the kernel (``kernels/build.py``); ``LMFORGE_KERNELS`` is not ``aten``; and a short race
on this machine (``hardware.measured_choice``, cached per CPU model, torch version and thread
count) found it faster. The instruction set follows ``hardware``: AVX-512 where the CPU has it,
AVX2 + FMA where it has those (or ``LMFORGE_CPU_CAPABILITY=avx2`` says so), else the compiler's
baseline. Double backward is not supported (the backward is one fused kernel, not differentiable).
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lmforge.hardware import CAPABILITY_ENV, cpu_flags, cpu_has_avx512, measured_choice
from lmforge.kernels.build import KERNELS_ENV, kernels_wanted, load

MIN_ELEMENTS = 16384  # below this, the Python call costs more than PyTorch's kernel takes
VARIANTS = {2: "AVX-512", 1: "AVX2", 0: "baseline"}


@functools.cache
def _library() -> ctypes.CDLL | None:
    library = load("gelu_tanh")
    if library is None:
        return None
    library.lmforge_gelu_tanh.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int,
    ]
    library.lmforge_gelu_tanh.restype = None
    library.lmforge_gelu_tanh_best_variant.restype = ctypes.c_int
    return library


def variant() -> int:
    """2 (AVX-512), 1 (AVX2 + FMA) or 0 (baseline): what this CPU, or the forced capability, runs."""
    library = _library()
    best = library.lmforge_gelu_tanh_best_variant() if library is not None else 0
    flags = cpu_flags()
    if best >= 2 and cpu_has_avx512() and {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        return 2
    if best >= 1 and {"avx2", "fma"} <= flags:
        return 1
    return 0


def run(x: torch.Tensor, grad: torch.Tensor | None = None, which: int | None = None) -> torch.Tensor:
    """The kernel itself: GELU(x), or grad * GELU'(x) when ``grad`` is given. x (and grad):
    contiguous fp32 CPU tensors of one shape. ``which`` picks the variant (default: ``variant()``)."""
    library = _library()
    if library is None:
        raise RuntimeError("the GELU kernel is not built here (no C compiler, or the build failed)")
    out = torch.empty_like(x)
    library.lmforge_gelu_tanh(
        int(grad is not None),
        variant() if which is None else which,
        grad.data_ptr() if grad is not None else None,
        x.data_ptr(),
        out.data_ptr(),
        x.numel(),
        torch.get_num_threads(),
    )
    return out


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, which: int) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.which = which
        return run(x, which=which)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return run(x, grad.contiguous(), ctx.which), None


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x, approximate="tanh")``, through the compiled kernel where it pays (see above)."""
    if (
        type(x) is torch.Tensor
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() >= MIN_ELEMENTS
        and not torch.compiler.is_compiling()
    ):
        which = chosen_variant()
        if which is not None:
            if x.requires_grad and torch.is_grad_enabled():
                return _GeluTanh.apply(x, which)
            return run(x.contiguous(), which=which)
    return F.gelu(x, approximate="tanh")


_CHOSEN: dict[tuple[int, str, str], int | None] = {}


def chosen_variant() -> int | None:
    """The variant to run, or None for PyTorch's kernel: not built, not wanted, or not faster here
    (forward + backward, raced once per machine and thread count). Asked on every call, so the
    answer is kept per thread count and setting."""
    key = (torch.get_num_threads(), os.environ.get(CAPABILITY_ENV, ""), os.environ.get(KERNELS_ENV, ""))
    if key not in _CHOSEN:
        _CHOSEN[key] = _choose()
    return _CHOSEN[key]


def _choose() -> int | None:
    if not kernels_wanted() or _library() is None:
        return None
    x = torch.randn(64, 8192, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(64, 8192, generator=torch.Generator().manual_seed(1))
    which = variant()

    def compiled() -> None:
        run(x, grad, which)
        run(x, None, which)

    def pytorch() -> None:
        torch.ops.aten.gelu_backward(grad, x, approximate="tanh")
        F.gelu(x, approximate="tanh")

    name = f"gelu tanh: lmforge {VARIANTS[which]} kernel vs aten"
    return which if measured_choice(name, compiled, pytorch, margin=0.9) else None

"""GPT-2's GELU (the tanh form) on a CPU, fp32 or bf16: a compiled kernel where it beats PyTorch's.

    h = gelu_tanh(h)     # F.gelu(h, approximate="tanh"), to within float rounding; autograd works

PyTorch's CPU kernel for the tanh form spends its time in a general-purpose vector tanh: on a
2-core Emerald Rapids Xeon (torch 2.13, AVX-512) it takes 4.5-4.9 ms for 8 x 256 x 1536 values
where the erf form takes 1.0 and ``torch.tanh`` alone 0.9, and its backward 5.6-6.7 ms; in bf16
(computed in fp32 inside) 4.4 and 5.0. In GPT-2 shaped training that was 8% of a 6 x 384 step
in fp32 and 15% of a 4 x 128 one. ``gelu_tanh.c`` computes the same function as x * sigmoid(2z)
with a short polynomial exp, which the compiler vectorizes: about 4x faster forward and backward,
within 2e-6 of PyTorch's fp32 result and as close to the float64 truth; in bf16 the fp32 result
rounded to nearest-even, as PyTorch rounds. (Where x < -4.3, PyTorch's 1 + tanh cancels to an
exact 0 and this kernel keeps the true value, of order 1e-9 or less.)

Used only where all of these hold, else ``F.gelu``: the tensor is a plain fp32 or bf16 CPU tensor
of at least ``variants.MIN_ELEMENTS`` values; not under ``torch.compile`` (Inductor fuses its own); a C
compiler built the kernel (``kernels/build.py``); ``LMFORGE_KERNELS`` is not ``aten``; and a
short race on this machine (``hardware.measured_choice``, cached per CPU model, torch version,
dtype and thread count) found it faster. The instruction set follows ``hardware``: AVX-512
where the CPU has it, AVX2 + FMA where it has those (or ``LMFORGE_CPU_CAPABILITY=avx2`` says
so), else the compiler's baseline. Double backward is not supported (the backward is one fused
kernel, not differentiable).
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F

from lmforge.hardware import measured_choice
from lmforge.kernels import variants
from lmforge.kernels.build import load
from lmforge.kernels.variants import DTYPES, VARIANTS, RacedChoice, runnable_variants

__all__ = ["gelu_tanh", "run", "variant", "runnable_variants", "chosen_variant", "VARIANTS"]


@functools.cache
def _library() -> ctypes.CDLL | None:
    library = load("gelu_tanh")
    if library is None:
        return None
    integer, pointer = ctypes.c_int, ctypes.c_void_p
    library.lmforge_gelu_tanh.argtypes = [
        integer,
        integer,
        integer,
        pointer,
        pointer,
        pointer,
        ctypes.c_int64,
        integer,
    ]
    library.lmforge_gelu_tanh.restype = None
    library.lmforge_gelu_tanh_best_variant.restype = integer
    return library


def variant() -> int:
    """2 (AVX-512), 1 (AVX2 + FMA) or 0 (baseline): what this CPU, or the forced capability, runs."""
    library = _library()
    return variants.variant(library.lmforge_gelu_tanh_best_variant() if library is not None else 0)


def run(x: torch.Tensor, grad: torch.Tensor | None = None, which: int | None = None) -> torch.Tensor:
    """The kernel itself: GELU(x), or grad * GELU'(x) when ``grad`` is given. x (and grad):
    contiguous CPU tensors of one shape and dtype, fp32 or bf16. ``which`` picks the variant
    (default: ``variant()``)."""
    library = _library()
    if library is None:
        raise RuntimeError("the GELU kernel is not built here (no C compiler, or the build failed)")
    if x.dtype not in DTYPES or (grad is not None and grad.dtype != x.dtype):
        raise TypeError(f"the GELU kernel takes fp32 or bf16, one dtype; got {x.dtype}")
    out = torch.empty_like(x)
    library.lmforge_gelu_tanh(
        int(grad is not None),
        variant() if which is None else which,
        int(x.dtype == torch.bfloat16),
        grad.data_ptr() if grad is not None else None,
        x.data_ptr(),
        out.data_ptr(),
        x.numel(),
        torch.get_num_threads(),
    )
    return out


class _GeluTanh(variants.SavedInputKernel):
    pass


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x, approximate="tanh")``, through the compiled kernel where it pays (see above)."""
    return variants.kernel_or_fallback(
        x, chosen_variant, _GeluTanh, run, lambda x: F.gelu(x, approximate="tanh")
    )


def _choose(dtype: torch.dtype) -> int | None:
    """The variant, or None: not built here, or not faster than PyTorch's kernel (forward +
    backward, raced once per machine, dtype and thread count)."""
    if _library() is None:
        return None
    x = torch.randn(64, 8192, generator=torch.Generator().manual_seed(0)).to(dtype)
    grad = torch.randn(64, 8192, generator=torch.Generator().manual_seed(1)).to(dtype)
    which = variant()

    def compiled() -> None:
        run(x, grad, which)
        run(x, None, which)

    def pytorch() -> None:
        torch.ops.aten.gelu_backward(grad, x, approximate="tanh")
        F.gelu(x, approximate="tanh")

    name = f"gelu tanh {str(dtype).removeprefix('torch.')}: lmforge {VARIANTS[which]} kernel vs aten"
    return which if measured_choice(name, compiled, pytorch, margin=0.9) else None


chosen_variant = RacedChoice(_choose)  # chosen_variant(dtype): the variant to run, or None

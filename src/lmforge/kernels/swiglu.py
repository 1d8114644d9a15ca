"""Llama's gated activation, silu(gate) * up, on a CPU, fp32 or bf16: a compiled kernel where it
beats PyTorch's.

    h = swiglu(c_fc(x))     # gate, up = h.chunk(2, -1); F.silu(gate) * up; autograd works

The fused projection gives each row as [gate | up]. PyTorch's version reads and writes memory
six times for it: a silu and a mul forward, then two muls, a silu backward and the
concatenation of the two halves' gradients (the chunk's backward) in the backward pass; at
gpt-nano's shapes on a 2-core Emerald Rapids Xeon that was 6-7 ms of a 70-80 ms fp32 training
step. ``swiglu.c`` does each direction in one pass and writes both halves' gradients into one
tensor, within a few float roundings of PyTorch's result (bf16: fp32 inside, rounded to
nearest-even once, where PyTorch rounds after the silu and after the product).

Used only where ``kernels/variants.applies`` (a plain fp32 or bf16 CPU tensor of at least
``variants.MIN_ELEMENTS`` values, outside ``torch.compile``), a C compiler built the kernel,
``LMFORGE_KERNELS`` is not ``aten``, and a short race on this machine found it faster; else the
PyTorch expression. Double backward is not supported.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F

from lmforge.hardware import measured_choice
from lmforge.kernels import variants
from lmforge.kernels.build import load
from lmforge.kernels.variants import DTYPES, VARIANTS, RacedChoice

__all__ = ["swiglu", "swiglu_reference", "run", "variant", "chosen_variant"]


@functools.cache
def _library() -> ctypes.CDLL | None:
    library = load("swiglu")
    if library is None:
        return None
    integer, pointer, size = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
    library.lmforge_swiglu.argtypes = [
        integer,
        integer,
        integer,
        pointer,
        pointer,
        pointer,
        size,
        size,
        integer,
    ]
    library.lmforge_swiglu.restype = None
    library.lmforge_swiglu_best_variant.restype = integer
    return library


def variant() -> int:
    """2 (AVX-512), 1 (AVX2 + FMA) or 0 (baseline): what this CPU, or the forced capability, runs."""
    library = _library()
    return variants.variant(library.lmforge_swiglu_best_variant() if library is not None else 0)


def swiglu_reference(h: torch.Tensor) -> torch.Tensor:
    """PyTorch's expression: silu of the first half of the last dimension times the second."""
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def run(h: torch.Tensor, grad: torch.Tensor | None = None, which: int | None = None) -> torch.Tensor:
    """The kernel itself. Forward: h (..., 2w) -> (..., w). Backward (``grad`` (..., w) given): the
    gradient of h, (..., 2w). Contiguous CPU tensors of one dtype, fp32 or bf16. ``which`` picks
    the variant (default: ``variant()``)."""
    library = _library()
    if library is None:
        raise RuntimeError("the SwiGLU kernel is not built here (no C compiler, or the build failed)")
    if h.dtype not in DTYPES or (grad is not None and grad.dtype != h.dtype):
        raise TypeError(f"the SwiGLU kernel takes fp32 or bf16, one dtype; got {h.dtype}")
    if h.shape[-1] % 2:
        raise ValueError(f"the last dimension holds gate and up side by side; {h.shape[-1]} is odd")
    width = h.shape[-1] // 2
    rows = h.numel() // max(h.shape[-1], 1)
    if grad is not None and grad.shape != (*h.shape[:-1], width):
        raise ValueError(f"the gradient's shape {tuple(grad.shape)} is not the output's")
    out = torch.empty_like(h) if grad is not None else h.new_empty(*h.shape[:-1], width)
    library.lmforge_swiglu(
        int(grad is not None),
        variant() if which is None else which,
        int(h.dtype == torch.bfloat16),
        grad.data_ptr() if grad is not None else None,
        h.data_ptr(),
        out.data_ptr(),
        rows,
        width,
        torch.get_num_threads(),
    )
    return out


class _SwiGLU(variants.SavedInputKernel):
    pass


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """``swiglu_reference(h)``, through the compiled kernel where it pays (see above)."""
    if h.shape[-1] % 2:
        return swiglu_reference(h)  # (which raises PyTorch's error)
    return variants.kernel_or_fallback(h, chosen_variant, _SwiGLU, run, swiglu_reference)


def _choose(dtype: torch.dtype) -> int | None:
    """The variant, or None: not built here, or not faster than PyTorch's expression (forward and
    backward as autograd runs them, raced once per machine, dtype and thread count)."""
    if _library() is None:
        return None
    h = torch.randn(1024, 2 * 512, generator=torch.Generator().manual_seed(0)).to(dtype)
    grad = torch.randn(1024, 512, generator=torch.Generator().manual_seed(1)).to(dtype)
    which = variant()

    def compiled() -> None:
        run(h, which=which)
        run(h, grad, which)

    def pytorch() -> None:
        gate, up = h.chunk(2, dim=-1)
        activated = F.silu(gate)
        activated * up
        torch.cat([torch.ops.aten.silu_backward(grad * up, gate), grad * activated], dim=-1)

    name = f"swiglu {str(dtype).removeprefix('torch.')}: lmforge {VARIANTS[which]} kernel vs aten"
    return which if measured_choice(name, compiled, pytorch, margin=0.9) else None


chosen_variant = RacedChoice(_choose)  # chosen_variant(dtype): the variant to run, or None

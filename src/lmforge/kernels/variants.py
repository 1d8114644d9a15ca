"""Which build of a compiled kernel runs here, and whether it runs at all: shared by the kernels.

Each kernel's C source holds one function per instruction set (2: AVX-512, 1: AVX2 + FMA, 0: the
compiler's baseline), so that one library serves every x86 CPU and an AVX-512 machine can still
run and test the others. ``variant`` picks the best this CPU runs, or what
``LMFORGE_CPU_CAPABILITY=avx2`` forces. ``RacedChoice`` asks ``hardware.measured_choice`` once
per machine, dtype and thread count whether the kernel beats PyTorch's own, and remembers the
answer in the process, because the models ask on every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from lmforge.hardware import CAPABILITY_ENV, cpu_flags, cpu_has_avx512
from lmforge.kernels.build import KERNELS_ENV, kernels_wanted

VARIANTS = {2: "AVX-512", 1: "AVX2", 0: "baseline"}
DTYPES = (torch.float32, torch.bfloat16)
MIN_ELEMENTS = 16384  # below this, the Python call costs more than PyTorch's kernel takes


def runnable_variants() -> list[int]:
    """The variants this CPU can execute, baseline first, whatever ``LMFORGE_CPU_CAPABILITY`` says
    (tests and benchmarks run each of them)."""
    flags, found = cpu_flags(), [0]
    if {"avx2", "fma"} <= flags:
        found.append(1)
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        found.append(2)
    return found


def variant(built: int) -> int:
    """2 (AVX-512), 1 (AVX2 + FMA) or 0 (baseline): the best that a library whose best build is
    ``built`` has and that this CPU, or the forced capability, runs."""
    return max(v for v in runnable_variants() if v <= built and (v < 2 or cpu_has_avx512()))


def applies(x: torch.Tensor) -> bool:
    """A plain fp32 or bf16 CPU tensor big enough to pay for the call, outside ``torch.compile``
    (Inductor fuses its own, and a foreign call would break its graph)."""
    return (
        type(x) is torch.Tensor
        and x.dtype in DTYPES
        and x.device.type == "cpu"
        and x.numel() >= MIN_ELEMENTS
        and not torch.compiler.is_compiling()
    )


class RacedChoice:
    """``choice(dtype)``: the variant to run for ``dtype``, or None for PyTorch's kernel, from
    ``race(dtype)``, which runs once per dtype, thread count and setting in a process."""

    def __init__(self, race: Callable[[torch.dtype], int | None]) -> None:
        self._race = race
        self._chosen: dict[tuple[torch.dtype, int, str, str], int | None] = {}

    def __call__(self, dtype: torch.dtype = torch.float32) -> int | None:
        key = (
            dtype,
            torch.get_num_threads(),
            os.environ.get(CAPABILITY_ENV, ""),
            os.environ.get(KERNELS_ENV, ""),
        )
        if key not in self._chosen:
            self._chosen[key] = self._race(dtype) if kernels_wanted() else None
        return self._chosen[key]

    def clear(self) -> None:
        """Forget the answers (tests that change the library or the cache)."""
        self._chosen.clear()


class SavedInputKernel(torch.autograd.Function):
    """Autograd for a kernel ``run(x, grad=None, which=...)`` whose backward needs only its input:
    ``run(x)`` forward, ``run(x, grad)`` backward. Subclassed per kernel, so that a graph names
    it (``_GeluTanhBackward``, ``_SwiGLUBackward``). No double backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, which: int, run: Callable) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.which, ctx.run = which, run
        return run(x, which=which)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return ctx.run(x, grad.to(x.dtype).contiguous(), ctx.which), None, None


def kernel_or_fallback(
    x: torch.Tensor,
    chosen: Callable[[torch.dtype], int | None],
    function: type[SavedInputKernel],
    run: Callable,
    fallback: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``run`` through ``function`` where the kernel applies to x and ``chosen`` kept it, else
    ``fallback(x)`` (PyTorch's ops)."""
    if applies(x):
        which = chosen(x.dtype)
        if which is not None:
            if x.requires_grad and torch.is_grad_enabled():
                return function.apply(x, which, run)
            return run(x.contiguous(), which=which)
    return fallback(x)

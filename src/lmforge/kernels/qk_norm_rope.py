"""A fused projection's heads made ready for attention on a CPU, fp32 or bf16: QK-norm, rotary
positions and the (batch, head, time, dim) layout in one compiled pass, forward and backward.

    q, k, v = attention_heads(qkv, n_q, n_kv, head_dim, gains, eps, rotary)   # or None

PyTorch runs QK-norm and rotary positions as a dozen small kernels over the queries and keys,
and their backward as a dozen more, plus the concatenations that join the gradients of the
split heads: on gpt-nano (4 heads of 32, 16 x 64 tokens) about 3 ms of each layer's forward and
backward on a 2-core Emerald Rapids Xeon, a fifth of the whole fp32 training step. The
kernel (``qk_norm_rope.c``) reads each token's heads once and writes each head where attention
reads it; its backward writes the projection's gradient in one piece. Results agree with the
PyTorch expression (``reference_heads``) to within float rounding: the norm and the rotation in
fp32 (bf16 values widened, and rounded once at the end where PyTorch rounds after each op).

``attention_heads`` answers None, and the caller runs PyTorch's ops, unless
``kernels/variants.applies`` (a plain fp32 or bf16 CPU tensor of at least
``variants.MIN_ELEMENTS`` values, outside ``torch.compile``), the head size is even and at most
the kernel's maximum, the rotary tables are one row per position (shared by the batch or one
per row), a C compiler built the kernel, ``LMFORGE_KERNELS`` is not ``aten``, and a short race
on this machine found it faster. Double backward is not supported.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lmforge.hardware import measured_choice
from lmforge.kernels import variants
from lmforge.kernels.build import load
from lmforge.kernels.variants import DTYPES, VARIANTS, RacedChoice

__all__ = ["attention_heads", "reference_heads", "run_forward", "run_backward", "variant", "chosen_variant"]

Rotary = tuple[torch.Tensor, torch.Tensor]


@functools.cache
def _library() -> ctypes.CDLL | None:
    library = load("qk_norm_rope")
    if library is None:
        return None
    i32, i64, ptr, f32 = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    library.lmforge_qk_norm_rope.argtypes = [
        i32, i32, i32,  # backward, variant, bf16
        ptr, ptr, ptr, ptr,  # qkv, q, k, v
        ptr, ptr, ptr, ptr, ptr,  # dq, dk, dv, dqkv, dgains
        i64, i64, i32, i32, i32,  # batch, time, nq, nkv, dim
        ptr, f32,  # gains, eps
        ptr, ptr, i64,  # cos, sin, cos batch stride
        i32,  # threads
    ]  # fmt: skip
    library.lmforge_qk_norm_rope.restype = i32
    library.lmforge_qk_norm_rope_best_variant.restype = i32
    library.lmforge_qk_norm_rope_max_dim.restype = i32
    return library


def variant() -> int:
    """2 (AVX-512), 1 (AVX2 + FMA) or 0 (baseline): what this CPU, or the forced capability, runs."""
    library = _library()
    return variants.variant(library.lmforge_qk_norm_rope_best_variant() if library is not None else 0)


def reference_heads(
    qkv: torch.Tensor,
    n_q: int,
    n_kv: int,
    head_dim: int,
    gains: tuple | None,
    eps: float | None,
    rotary: Rotary | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's ops for the same result: qkv (B, T, (n_q + 2 n_kv) head_dim) -> q (B, n_q, T, hs),
    k and v (B, n_kv, T, hs); queries and keys RMS-normalised, times their gains (q's, k's), when
    ``gains`` is given, then rotated (rotate-half) by ``rotary`` = cos, sin (1 or B, T, 1, 1, hs)."""
    B, T, _ = qkv.shape
    q, k, v = qkv.view(B, T, n_q + 2 * n_kv, head_dim).split([n_q, n_kv, n_kv], dim=2)
    if gains is not None:
        q = F.rms_norm(q, (head_dim,), gains[0].to(q.dtype), eps)
        k = F.rms_norm(k, (head_dim,), gains[1].to(k.dtype), eps)
    if rotary is not None:
        cos, sin = (t[:, :, 0].to(qkv.dtype) for t in rotary)  # (1|B, T, 1, hs)

        def rotate(x: torch.Tensor) -> torch.Tensor:
            first, second = x.chunk(2, dim=-1)
            return x * cos + torch.cat([-second, first], dim=-1) * sin

        q, k = rotate(q), rotate(k)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def _tables(rotary: Rotary | None, batch: int, time: int, head_dim: int) -> tuple | None:
    """(cos, sin, batch stride) as the kernel reads them, (None, None, 0) without rotation, None
    where the tables are not one row of head_dim per position (and batch row)."""
    if rotary is None:
        return None, None, 0
    cos, sin = rotary
    if cos.dim() != 5 or cos.shape != sin.shape or cos.shape[0] not in (1, batch):
        return None
    if cos.shape[1:] != (time, 1, 1, head_dim):
        return None
    cos, sin = (t.reshape(t.shape[0], time, head_dim).float().contiguous() for t in (cos, sin))
    return cos, sin, (time * head_dim if cos.shape[0] > 1 else 0)


def _gain_table(gains: tuple | None) -> torch.Tensor | None:
    if gains is None:
        return None
    return torch.stack([g.detach().float() for g in gains]).contiguous()  # (2, hs)


def run_forward(
    qkv: torch.Tensor, n_q: int, n_kv: int, head_dim: int, gains: torch.Tensor | None, eps: float,
    tables: tuple, which: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The kernel's forward: qkv contiguous (B, T, (n_q + 2 n_kv) head_dim); ``gains`` a (2, hs)
    fp32 table or None; ``tables`` from ``_tables``."""
    B, T, _ = qkv.shape
    q = qkv.new_empty(B, n_q, T, head_dim)
    k, v = qkv.new_empty(B, n_kv, T, head_dim), qkv.new_empty(B, n_kv, T, head_dim)
    _call(0, which, qkv, (q, k, v), (None, None, None), None, None, n_q, n_kv, head_dim, gains, eps, tables)
    return q, k, v


def run_backward(
    qkv: torch.Tensor, grads: tuple, n_q: int, n_kv: int, head_dim: int, gains: torch.Tensor | None,
    eps: float, tables: tuple, which: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The kernel's backward: the gradients of q, k, v (contiguous, qkv's dtype) -> the gradient of
    qkv and, with ``gains``, of the (2, hs) gain table (fp32)."""
    dqkv = torch.empty_like(qkv)
    dgains = torch.empty(2, head_dim) if gains is not None else None
    _call(1, which, qkv, (None, None, None), grads, dqkv, dgains, n_q, n_kv, head_dim, gains, eps, tables)
    return dqkv, dgains


def _call(backward, which, qkv, outs, grads, dqkv, dgains, n_q, n_kv, head_dim, gains, eps, tables) -> None:
    library = _library()
    if library is None:
        raise RuntimeError("the QK-norm/rotary kernel is not built here (no C compiler, or the build failed)")
    if qkv.dtype not in DTYPES or any(g is not None and g.dtype != qkv.dtype for g in grads):
        raise TypeError(f"the QK-norm/rotary kernel takes fp32 or bf16, one dtype; got {qkv.dtype}")
    cos, sin, stride = tables
    B, T, _ = qkv.shape

    def address(t: torch.Tensor | None) -> int | None:
        return None if t is None else t.data_ptr()

    status = library.lmforge_qk_norm_rope(
        backward, which, int(qkv.dtype == torch.bfloat16), qkv.data_ptr(),
        *(address(t) for t in outs), *(address(t) for t in grads), address(dqkv), address(dgains),
        B, T, n_q, n_kv, head_dim, address(gains), eps, address(cos), address(sin), stride,
        torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise ValueError(f"the QK-norm/rotary kernel refused head size {head_dim} or heads {n_q}/{n_kv}")


class _AttentionHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, q_gain, k_gain, n_q, n_kv, head_dim, eps, tables, which):
        gains = _gain_table(None if q_gain is None else (q_gain, k_gain))
        ctx.save_for_backward(qkv)
        ctx.settings = (n_q, n_kv, head_dim, gains, eps, tables, which)
        ctx.gain_dtypes = None if q_gain is None else (q_gain.dtype, k_gain.dtype)
        return run_forward(qkv, n_q, n_kv, head_dim, gains, eps, tables, which)

    @staticmethod
    @once_differentiable
    def backward(ctx, dq, dk, dv):
        (qkv,) = ctx.saved_tensors
        n_q, n_kv, head_dim = ctx.settings[:3]
        B, T, _ = qkv.shape
        grads = tuple(  # an output nothing used gets no gradient: zeros stand in
            qkv.new_zeros(B, heads, T, head_dim) if g is None else g.to(qkv.dtype).contiguous()
            for g, heads in zip((dq, dk, dv), (n_q, n_kv, n_kv))
        )
        dqkv, dgains = run_backward(qkv, grads, *ctx.settings)
        if dgains is None:
            return dqkv, None, None, *[None] * 6
        q_dtype, k_dtype = ctx.gain_dtypes
        return dqkv, dgains[0].to(q_dtype), dgains[1].to(k_dtype), *[None] * 6


def attention_heads(
    qkv: torch.Tensor,
    n_q: int,
    n_kv: int,
    head_dim: int,
    gains: tuple | None,
    eps: float | None,
    rotary: Rotary | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``reference_heads(...)`` through the compiled kernel (q, k, v contiguous), or None where it
    does not apply here (see above): the caller then runs PyTorch's ops."""
    if not variants.applies(qkv) or head_dim % 2 or qkv.dim() != 3:
        return None
    B, T, width = qkv.shape
    if width != (n_q + 2 * n_kv) * head_dim or (gains is None and rotary is None):
        return None
    library = _library()
    if library is None or head_dim > library.lmforge_qk_norm_rope_max_dim():
        return None
    tables = _tables(rotary, B, T, head_dim)
    if tables is None:
        return None
    which = chosen_variant(qkv.dtype)
    if which is None:
        return None
    eps = torch.finfo(qkv.dtype).eps if eps is None else eps
    qkv = qkv.contiguous()
    q_gain, k_gain = gains if gains is not None else (None, None)
    trains = torch.is_grad_enabled() and (qkv.requires_grad or (q_gain is not None and q_gain.requires_grad))
    if trains:
        return _AttentionHeads.apply(qkv, q_gain, k_gain, n_q, n_kv, head_dim, eps, tables, which)
    return run_forward(qkv, n_q, n_kv, head_dim, _gain_table(gains), eps, tables, which)


def _choose(dtype: torch.dtype) -> int | None:
    """The variant, or None: not built here, or not faster than PyTorch's ops (forward and backward
    of gpt-nano's heads with QK-norm and rotary positions, raced once per machine, dtype and
    thread count)."""
    if _library() is None:
        return None
    B, T, heads, dim = 16, 64, 4, 32
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T, 3 * heads * dim, generator=generator).to(dtype).requires_grad_()
    gains = (torch.ones(dim, requires_grad=True), torch.ones(dim, requires_grad=True))
    angles = torch.outer(torch.arange(T, dtype=torch.float32), torch.rand(dim // 2, generator=generator))
    angles = torch.cat([angles, angles], dim=-1)[None, :, None, None]
    rotary = (angles.cos(), angles.sin())
    tables = _tables(rotary, B, T, dim)
    which = variant()

    def backward(outputs: tuple) -> None:
        torch.autograd.backward(outputs, [torch.ones_like(t) for t in outputs])

    def compiled() -> None:
        backward(_AttentionHeads.apply(qkv, *gains, heads, heads, dim, 1e-5, tables, which))

    def pytorch() -> None:
        backward(reference_heads(qkv, heads, heads, dim, gains, 1e-5, rotary))

    name = f"qk-norm rope {str(dtype).removeprefix('torch.')}: lmforge {VARIANTS[which]} kernel vs aten"
    return which if measured_choice(name, compiled, pytorch, margin=0.9) else None


chosen_variant = RacedChoice(_choose)  # chosen_variant(dtype): the variant to run, or None

"""Muon with every matrix of one shape orthogonalised in one batched Newton-Schulz.

``torch.optim.Muon`` runs the five Newton-Schulz iterations matrix by matrix, in bf16. Both
choices cost on a CPU: a small model has dozens of small matrices (gpt-nano: 16 of four shapes),
each iteration three matmuls, so a step is hundreds of small kernel calls; and where the CPU has
no bf16 units (Zen 3, AVX2 only) every bf16 matmul is emulated, several times slower than fp32.

This subclass keeps torch's algorithm, hyper-parameters and ``state_dict`` (a run resumes across
the two, ``momentum_buffer`` per parameter) and changes only how the update is computed: the
momentum of all matrices in one ``_foreach`` call, then, per shape (a matrix and its transpose's
shape together: gpt-nano's 16 matrices make three batches), each Nesterov update written into one
(n, rows, cols) batch whose iterations are ``baddbmm`` calls (for wide matrices on rows x rows
matrices, ``newton_schulz_gram``); in bf16 where the hardware computes
bf16 natively (as torch does), in fp32 where it would be emulated (``hardware.bf16_is_emulated``;
the iteration is the same polynomial, only rounded less).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from lmforge.hardware import bf16_is_emulated
from lmforge.train.eager_optim import EagerOptimizerMixin


def newton_schulz(
    stacked: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> Tensor:
    """The quintic iteration of ``torch.optim.Muon`` on a batch of (rows, cols) matrices, each
    scaled by its own Frobenius norm; wide side last, as torch orients it. Matrices at least
    ``gram_ratio(dtype)`` times wider than high take the Gram form (``newton_schulz_gram``)."""
    a, b, c = coefficients
    x = stacked.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    if x.size(-1) >= gram_ratio(dtype) * x.size(-2):
        wide = torch.promote_types(dtype, torch.float32)  # fp32 at least (see newton_schulz_gram)
        x = newton_schulz_gram(x.to(wide), coefficients, steps, eps).to(dtype)
        return x.mT if tall else x
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, update, x, beta=a)
    return x.mT if tall else x


def gram_ratio(dtype: torch.dtype) -> float:
    """How much wider than high a matrix must be for the Gram form to pay: in fp32 from 2 (fewer
    FLOPs: at 3 it does 26 m^3 multiply-adds against 35, at 6 32 against 65); never against bf16's
    direct iteration, which runs at 3-4x fp32's rate where the CPU has bf16 units. Measured on 2
    Emerald Rapids cores, gpt-nano's three batches (4 x 128 x 128, 8 x 128 x 384, 4 x 128 x 768),
    medians of 5 interleaved rounds: fp32 10.4 ms with the Gram form against 15.4 without; bf16
    7.3 ms directly against 11.0 with its widest batch in the fp32 Gram form."""
    return float("inf") if dtype == torch.bfloat16 else 2.0


def newton_schulz_gram(x: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """The same iteration on wide matrices (rows <= cols), carried out on rows x rows matrices.

    Each step multiplies x on the left by a polynomial in x x^T, so after k steps x_k = M_k x_0,
    and x_k x_k^T = M_k G M_k^T with G = x_0 x_0^T: the iteration can run on M (rows x rows) and
    touch the wide x twice, for G and for the final M x_0, instead of twice a step. In exact
    arithmetic the result is the same; in fp32 it stays as close to the float64 iteration as the
    direct form (relative error 2e-6). M's entries stay below a^steps (486 for torch's five
    steps), which is why this runs in fp32 (or float64), never in bf16."""
    a, b, c = coefficients
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    g = x @ x.mT
    identity = torch.eye(x.size(-2), dtype=x.dtype, device=x.device)
    m = None
    for _ in range(steps):
        gram = g if m is None else m @ (g @ m)
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        m = update + a * identity if m is None else torch.baddbmm(m, update, m, beta=a)
    return x if m is None else m @ x


def ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 (torch's choice) where it is computed natively, fp32 where it would be emulated."""
    return torch.float32 if bf16_is_emulated(device) else torch.bfloat16


class BatchedMuon(EagerOptimizerMixin, torch.optim.Muon):
    """``torch.optim.Muon``, its matrices orthogonalised a shape at a time (module docstring), its
    bookkeeping without importing torch._dynamo (``train/eager_optim.py``)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            momentum, lr = group["momentum"], float(group["lr"])
            torch._foreach_lerp_(buffers, grads, 1 - momentum)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            for members in _batches(params):
                first = params[members[0]]
                stacked = torch.empty(
                    (len(members), min(first.shape), max(first.shape)),
                    dtype=ns_dtype(first.device),
                    device=first.device,
                )
                for slot, i in zip(stacked.unbind(0), members, strict=True):
                    # the update written straight into its slot of the batch, already in the
                    # iteration's dtype: no stack and no cast of the whole batch afterwards
                    slot = slot if params[i].size(0) <= params[i].size(1) else slot.mT
                    if group["nesterov"]:
                        torch.lerp(grads[i], buffers[i], momentum, out=slot)
                    else:
                        slot.copy_(buffers[i])
                ortho = newton_schulz(
                    stacked, group["ns_coefficients"], group["ns_steps"], group["eps"], stacked.dtype
                )
                by_scale: dict[float, tuple[list[Tensor], list[Tensor]]] = defaultdict(lambda: ([], []))
                for update, i in zip(ortho.unbind(0), members, strict=True):
                    scale = torch.optim._muon._adjust_lr(lr, group["adjust_lr_fn"], params[i].shape)
                    chosen, steps = by_scale[scale]
                    chosen.append(params[i])
                    steps.append(update if params[i].size(0) <= params[i].size(1) else update.mT)
                for scale, (chosen, steps) in by_scale.items():
                    torch._foreach_add_(chosen, steps, alpha=-scale)  # adds bf16 into fp32 in one call
        return loss


def _batches(params: list[Tensor]) -> list[list[int]]:
    """Indices of the matrices that share one batched iteration: same dtype and device, and the
    same shape up to a transpose (the iteration of a transpose is the transpose of the iteration)."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        by_shape[(min(p.shape), max(p.shape), p.dtype, p.device)].append(i)
    return list(by_shape.values())

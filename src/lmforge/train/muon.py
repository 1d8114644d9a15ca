"""Muon with every matrix of one shape orthogonalised in one batched Newton-Schulz.

``torch.optim.Muon`` runs the five Newton-Schulz iterations matrix by matrix, in bf16. Both
choices cost on a CPU: a small model has dozens of small matrices (gpt-nano: 16 of four shapes),
each iteration three matmuls, so a step is hundreds of small kernel calls; and where the CPU has
no bf16 units (Zen 3, AVX2 only) every bf16 matmul is emulated, several times slower than fp32.

This subclass keeps torch's algorithm, hyper-parameters and ``state_dict`` (a run resumes across
the two, ``momentum_buffer`` per parameter) and changes only how the update is computed: the
momentum of all matrices in one ``_foreach`` call, then, per shape (a matrix and its transpose's
shape together: gpt-nano's 16 matrices make three batches), each Nesterov update written into one
(n, rows, cols) batch whose iterations are ``baddbmm`` calls; in bf16 where the hardware computes
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
    scaled by its own Frobenius norm; wide side last, as torch orients it."""
    a, b, c = coefficients
    x = stacked.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, update, x, beta=a)
    return x.mT if tall else x


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

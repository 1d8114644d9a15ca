"""Optimizers and the learning-rate schedule.

Weight decay goes only on matrices (linear and embedding weights): decaying biases and norm
gains towards zero only hurts (Loshchilov & Hutter; GPT-2/nanoGPT practice).

The schedule is linear warm-up then cosine decay to ``min_lr``, as a function of *progress*
in [0, 1] rather than of a step count, so the same curve can be laid over a step budget
(progress = step / max_steps) or a wall-clock budget (progress = elapsed / max_time).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and everything else (not). Tied weights appear once.

    A model spread over processes (``parallel/launch.py``) can hold plain tensors and DTensors of
    different meshes at once; the fused and foreach kernels take one kind per call, so each
    kind gets its own pair of groups there (same settings, one kernel launch per kind)."""
    kinds: dict[object, tuple[list, list]] = {}
    for param in model.parameters():  # parameters() already yields a shared tensor once
        if not param.requires_grad:
            continue
        mesh = getattr(param, "device_mesh", None)
        decay, no_decay = kinds.setdefault(mesh, ([], []))
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = []
    for decay, no_decay in kinds.values() or [([], [])]:
        groups += [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    name: Literal["adamw", "sgd"] = "adamw",
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    momentum: float = 0.9,
    device_type: str = "cpu",
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        # The fused kernel (one launch for all tensors) exists for CUDA and, since torch 2.4, CPU.
        fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in (
            "cuda",
            "cpu",
        )
        extra = {"fused": True} if fused_ok else {"foreach": True}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw or sgd")


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """'adamw (fused)', 'adamw (foreach)', 'sgd (foreach)': the optimizer and the kernel its update
    runs, for a run's summary (fused AdamW is one launch for all tensors, where torch has it)."""
    name = type(optimizer).__name__.lower()
    defaults = optimizer.defaults
    kernel = "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "for-loop"
    return f"{name} ({kernel})"


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up over ``warmup_steps`` optimizer steps, then cosine from max_lr to min_lr."""

    max_lr: float
    min_lr: float
    warmup_steps: int

    def lr(self, step: int, progress: float) -> float:
        """Learning rate for optimizer step ``step`` (0-based) at budget fraction ``progress``.

        ``progress`` is how much of the budget is spent; the cosine covers the part of the
        budget after warm-up, measured in the same units.
        """
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / (self.warmup_steps + 1)
        progress = min(max(progress, 0.0), 1.0)
        coefficient = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
        return self.min_lr + coefficient * (self.max_lr - self.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

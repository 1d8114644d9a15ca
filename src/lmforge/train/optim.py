"""Optimizers and the learning-rate schedules.

Weight decay goes only on matrices (linear and embedding weights): decaying biases and norm
gains towards zero only hurts (Loshchilov & Hutter; GPT-2/nanoGPT practice).

``--optimizer muon`` (Jordan et al. 2024; ``torch.optim.Muon``, batched in ``train/muon.py``) orthogonalises the momentum of
each hidden matrix (the attention and MLP linears) by Newton-Schulz iterations, so every
direction of the update moves alike; it is defined for 2-D hidden weights only, so the
embeddings, the output head (tied or not), norm gains and biases stay with AdamW. The two
optimizers sit behind one object (``MuonWithAdamW``) that the trainer steps, zeroes, schedules
and checkpoints as it does a single optimizer.

Every parameter group remembers its own peak learning rate (``base_lr``); the schedule gives the
learning rate of the main (AdamW) group, and ``set_lr`` scales each group by the same fraction of
its own peak, so Muon's larger rate follows the same curve.

A schedule is linear warm-up, then a function of *progress* in [0, 1] rather than of a step
count, so the same curve can be laid over a step budget (progress = step / max_steps) or a
wall-clock budget (progress = elapsed / max_time):

    cosine  max_lr -> min_lr along half a cosine over the budget
    wsd     warm-up, stable at max_lr, then linear to min_lr over the last ``decay_fraction``
            (the trapezoid of Hägele et al. 2024 and the modded-nanogpt speed-runs)
    linear  max_lr -> min_lr in a straight line over the budget
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.errors import UserInputError


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
    name: Literal["adamw", "sgd", "muon"] = "adamw",
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    momentum: float = 0.9,
    device_type: str = "cpu",
    muon_lr: float = 0.02,
    muon_weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``model``'s trainable parameters; every group records its
    peak learning rate as ``base_lr`` (``set_lr``). ``muon_lr`` and ``muon_weight_decay`` are
    the Muon group's (``name="muon"``); ``lr``, ``weight_decay`` and ``betas`` AdamW's."""
    if name == "muon":
        return _muon_with_adamw(model, lr, weight_decay, betas, device_type, muon_lr, muon_weight_decay)
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        optimizer = _adamw(groups, lr, betas, device_type)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd or muon")
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def _adamw(groups: list[dict], lr: float, betas: tuple[float, float], device_type: str) -> torch.optim.AdamW:
    # The fused kernel (one launch for all tensors) exists for CUDA and, since torch 2.4, CPU.
    fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu")
    if fused_ok:
        from lmforge.train.eager_optim import EagerAdamW  # the same kernel, no torch._dynamo import

        return EagerAdamW(groups, lr=lr, betas=betas, fused=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices for Muon, everything else for AdamW), trainable parameters only.

    The tables a model names in ``embedding_parameters()`` (token and position embeddings, the
    output head, tied or not: the protocol of ``models/protocol.py``) are matrices Muon must not
    take: a row of an embedding is looked up, not multiplied, and the head maps to the
    vocabulary. Every other 2-D parameter is a hidden linear's weight."""
    tables: set[int] = set()
    for module in model.modules():  # the model itself, or the one inside a DDP/compile wrapper
        if callable(getattr(module, "embedding_parameters", None)):
            tables = {id(p) for p in module.embedding_parameters()}
            break
    hidden, rest = [], []
    for param in model.parameters():
        if param.requires_grad:
            (hidden if param.dim() == 2 and id(param) not in tables else rest).append(param)
    return hidden, rest


def _muon_with_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device_type: str,
    muon_lr: float,
    muon_weight_decay: float,
) -> MuonWithAdamW:
    if any(hasattr(p, "device_mesh") for p in model.parameters()):
        raise UserInputError(
            "--optimizer muon orthogonalises whole matrices and cannot update the sharded parameters of "
            "--parallel fsdp or tp; use --optimizer adamw there, or muon with ddp (or one process)"
        )
    hidden, rest = muon_split(model)
    from lmforge.train.muon import BatchedMuon

    muon = BatchedMuon(
        [{"params": hidden, "base_lr": muon_lr}],
        lr=muon_lr,
        weight_decay=muon_weight_decay,
        adjust_lr_fn="original",  # Keller Jordan's sqrt(max(1, rows / cols)) shape scaling
    )
    matrices = [p for p in rest if p.dim() >= 2]
    others = [p for p in rest if p.dim() < 2]
    adamw = _adamw(
        [
            {"params": matrices, "weight_decay": weight_decay, "base_lr": lr},
            {"params": others, "weight_decay": 0.0, "base_lr": lr},
        ],
        lr,
        betas,
        device_type,
    )
    return MuonWithAdamW(muon, adamw)


class MuonWithAdamW:
    """Muon and AdamW stepped as one optimizer: what the trainer, the gradient scaler and
    ``train_state.pt`` need of an optimizer (``param_groups``, ``step``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``), the groups being Muon's then AdamW's."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw
        self.defaults = adamw.defaults  # describe_optimizer reads AdamW's kernel from here

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups  # the groups themselves, not copies

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise UserInputError(
                "this run's optimizer state is not Muon's: resume it with the --optimizer it was trained with"
            )
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """'adamw (fused)', 'adamw (foreach)', 'sgd (foreach)', 'muon + adamw (fused)': the optimizer and the kernel its update
    runs, for a run's summary (fused AdamW is one launch for all tensors, where torch has it)."""
    if isinstance(optimizer, MuonWithAdamW):
        return "muon + " + describe_optimizer(optimizer.adamw)
    name = type(optimizer).__name__.lower().removeprefix("eager")
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


@dataclass(frozen=True)
class WSDSchedule(CosineSchedule):
    """Warm-up, stable at max_lr, then linear decay to min_lr over the last ``decay_fraction`` of
    the budget (``decay_fraction`` 0: no decay at all)."""

    decay_fraction: float = 0.2

    def lr(self, step: int, progress: float) -> float:
        if step < self.warmup_steps:
            return super().lr(step, progress)
        progress = min(max(progress, 0.0), 1.0)
        decay_start = 1.0 - self.decay_fraction
        if progress <= decay_start or self.decay_fraction == 0:
            return self.max_lr
        return self.max_lr + (self.min_lr - self.max_lr) * (progress - decay_start) / self.decay_fraction


@dataclass(frozen=True)
class LinearSchedule(CosineSchedule):
    """Warm-up, then a straight line from max_lr (progress 0) to min_lr (progress 1)."""

    def lr(self, step: int, progress: float) -> float:
        if step < self.warmup_steps:
            return super().lr(step, progress)
        progress = min(max(progress, 0.0), 1.0)
        return self.max_lr + (self.min_lr - self.max_lr) * progress


def make_schedule(
    kind: Literal["cosine", "wsd", "linear"],
    max_lr: float,
    min_lr: float,
    warmup_steps: int,
    decay_fraction: float = 0.2,
) -> CosineSchedule:
    """The schedule ``kind`` (``--schedule``); ``decay_fraction`` is wsd's alone."""
    if kind == "cosine":
        return CosineSchedule(max_lr, min_lr, warmup_steps)
    if kind == "wsd":
        return WSDSchedule(max_lr, min_lr, warmup_steps, decay_fraction)
    if kind == "linear":
        return LinearSchedule(max_lr, min_lr, warmup_steps)
    raise ValueError(f"unknown schedule {kind!r}; choose cosine, wsd or linear")


def set_lr(optimizer: torch.optim.Optimizer, lr: float, max_lr: float | None = None) -> None:
    """Set the schedule's ``lr`` (the fraction lr / max_lr of the peak ``max_lr``) on every group,
    each relative to its own peak ``base_lr``: a group whose peak is ``max_lr`` gets ``lr``
    exactly, Muon's group the same fraction of ``muon_lr``. Without ``max_lr``: ``lr`` on all."""
    for group in optimizer.param_groups:
        base = group.get("base_lr", max_lr)
        group["lr"] = lr if max_lr is None or base == max_lr else base * (lr / max_lr)

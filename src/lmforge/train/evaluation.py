"""Mean cross-entropy over many batches, weighted by target tokens (not by batch).

perplexity = exp(mean loss): the model is, on average, as unsure as a fair die with that many
faces. Used by the trainer's periodic evaluation and by ``lmforge evaluate``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from lmforge.models.loss import IGNORE_INDEX, perplexity  # noqa: F401 - callers import it from here too
from lmforge.train.objectives import count_targets


@torch.no_grad()
def mean_loss(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, int]:
    """(loss per target token, number of target tokens) over all ``batches``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    cast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with cast:
            total += model(**batch, reduction="sum").loss.double()
        count += count_targets(batch)
    model.train(was_training)
    if count == 0:
        return math.nan, 0
    return total.item() / count, count


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """{"loss": per target token, "accuracy": share of targets that are the logits' argmax} over
    ``batches``: for masked-LM evaluation, the targets are the masked positions only."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    right, count = 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model(**batch, reduction="sum")
        total += output.loss.double()
        targets = batch["labels"] != IGNORE_INDEX
        right += int((output.logits.argmax(-1) == batch["labels"])[targets].sum())
        count += int(targets.sum())
    model.train(was_training)
    if count == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    return {"loss": total.item() / count, "accuracy": right / count}


def grouped_losses(
    model: nn.Module, groups: dict[str, list[dict[str, torch.Tensor]]], masked: bool = False
) -> dict[str, float]:
    """{"loss": over every group's targets, "loss_<name>": over one group's} (and "accuracy" when
    ``masked``): each a sum of per-token losses over a count of targets, so "loss" is the mean over
    all targets (the sources of a data mixture in their mixed proportions), not a mean of means.
    A group with no target is left out."""
    figures: dict[str, float] = {}
    loss_sum = correct = 0.0
    targets = 0
    for name, batches in groups.items():
        count = sum(count_targets(batch) for batch in batches)
        if count == 0:
            continue
        if masked:
            result = loss_and_accuracy(model, batches)
            loss, correct = result["loss"], correct + result["accuracy"] * count
        else:
            loss, count = mean_loss(model, batches)
        figures[f"loss_{name}"] = loss
        loss_sum, targets = loss_sum + loss * count, targets + count
    if targets == 0:
        return {"loss": math.nan}
    figures["loss"] = loss_sum / targets
    if masked:
        figures["accuracy"] = correct / targets
    return figures

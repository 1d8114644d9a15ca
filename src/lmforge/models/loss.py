"""The one loss every language model family shares: cross-entropy of logits against aligned labels.

    logits (B, T, V), labels (B, T): labels[b, t] is the token that should follow position t;
    -100 marks a position with nothing to predict (padding, a prompt, a masked-LM non-target).

Computed in fp32 whatever the autocast dtype. ``reduction="sum"`` lets the trainer divide by the
target tokens of a whole optimizer step (train/trainer.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label F.cross_entropy skips (its default ignore_index)


def language_model_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy): as unsure as a fair die with that many faces. Infinite where exp
    overflows a float (a loss past 709): no figure of that size means anything else."""
    return math.exp(loss) if loss < 709.0 else math.inf

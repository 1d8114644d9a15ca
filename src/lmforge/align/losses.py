"""The two preference losses: Bradley-Terry for a reward model, DPO's sigmoid loss for a policy.

A pair is (prompt, chosen, rejected), a person preferring ``chosen``. Bradley and Terry (1952)
model that preference as P(chosen > rejected) = sigmoid(r_chosen - r_rejected), so a reward model
r is fitted by the negative log-likelihood

    bradley_terry = -log sigmoid(r_chosen - r_rejected)          (Ouyang et al. 2022, eq. 1)

    r_chosen = 2.0, r_rejected = 0.5  ->  -log sigmoid(1.5) = 0.2014

DPO (Rafailov et al. 2023) puts the reward inside the policy: the implicit reward of a response y
is beta * (log pi(y|x) - log pi_ref(y|x)), and the same Bradley-Terry likelihood of those rewards is
the loss, with no reward model and no sampling:

    dpo = -log sigmoid(beta * ((log pi(yc) - log ref(yc)) - (log pi(yr) - log ref(yr))))      (eq. 7)

Label smoothing (cDPO, Mitchell 2023) assumes a fraction eps of the labels are flipped:
(1 - eps) * dpo(delta) + eps * dpo(-delta). Both losses equal TRL's (``RewardTrainer.compute_loss``,
``DPOTrainer._compute_loss`` with loss_type "sigmoid"; tests/align/test_losses.py calls them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, reduction: Literal["mean", "sum", "none"] = "mean"
) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected) over pairs (B,): the mean (TRL's), the sum (what the
    trainer's objective returns, beside the pair count) or each pair's."""
    losses = -F.logsigmoid(r_chosen.float() - r_rejected.float())
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses (B,), chosen rewards (B,), rejected rewards (B,)) of DPO's sigmoid loss.

    Each log-probability is a response's summed token log-probabilities (B,). The rewards are the
    implicit ones, beta * (policy - reference), detached: what is logged, not what is trained.
    """
    chosen_logratios = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_logratios = policy_rejected_logps.float() - ref_rejected_logps.float()
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()

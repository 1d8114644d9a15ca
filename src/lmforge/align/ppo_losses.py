"""The clipped surrogate objectives of PPO (Schulman et al. 2017, eq. 7) and its clipped value loss.

Per token, with ratio = exp(logp - old_logp) and advantage A:

    policy loss = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))

e.g. eps = 0.2, A = 2: ratio 1.1 (inside) -> -2.2; ratio 1.5 (outside) -> max(-3.0, -2.4) = -2.4:
the gradient stops once the ratio has moved past the clip range in the direction the advantage
favours. A = -2, ratio 0.5 -> max(1.0, 1.6) = 1.6 (clipped at 0.8). The clip fraction is the share
of tokens where the clipped term won (they pass no gradient).

    value loss = 0.5 * max((V - R)^2, (V_clip - R)^2),  V_clip = old_V + clip(V - old_V, -eps_v, eps_v)

Both are averaged over response tokens: over all tokens of the batch ("token", PPO as in TRL), or
first over each sequence's tokens and then over sequences ("sequence", GRPO as in its paper).
"""

from __future__ import annotations

from typing import Literal

import torch

from lmforge.align.kl import masked_mean

Reduce = Literal["token", "sequence"]


def reduce_tokens(values: torch.Tensor, mask: torch.Tensor, reduce: Reduce = "token") -> torch.Tensor:
    """One number from per-token values (B, T): the masked mean over tokens, or over sequences."""
    if reduce == "sequence":
        return masked_mean(values, mask, dim=1).mean()
    return masked_mean(values, mask)


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    reduce: Reduce = "token",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-token losses, clip fraction); ``advantages`` (B, T) or per sequence (B, 1)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return reduce_tokens(per_token, mask, reduce), per_token, clip_fraction.detach()


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> torch.Tensor:
    """0.5 * the larger of the plain and the clipped squared error, averaged over response tokens."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    error = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(error, mask)

"""Generalised advantage estimation (Schulman et al. 2016) over the tokens of a response, and whitening.

A response of 3 tokens, values V = [0.5, 0.2, 0.1], rewards r = [0, 0, 1] (the score at the last
token), gamma = 1, lambda = 0.9; the episode ends after the last token (V after it is 0):

    delta_t = r_t + gamma * V_{t+1} - V_t        ->  [-0.3, -0.1, 0.9]
    A_t     = delta_t + gamma * lambda * A_{t+1}  ->  A_2 = 0.9, A_1 = -0.1 + 0.81 = 0.71,
                                                     A_0 = -0.3 + 0.639 = 0.339
    returns = A + V                               ->  [0.839, 0.91, 1.0]  (the value head's targets)

Rows are right-padded: ``mask`` is 1 on a row's response tokens, then 0; padded positions get
advantage and return 0 and never pass anything back to the tokens before them.
"""

from __future__ import annotations

import torch


def generalised_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each (B, T), from per-token rewards and values (B, T) and the mask."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    B, T = values.shape
    advantages = torch.zeros_like(values)
    last = torch.zeros(B, dtype=values.dtype, device=values.device)
    for t in reversed(range(T)):
        following = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)  # 0: the episode ended
        next_value = values[:, t + 1] * following if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * following * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked entries (unbiased std, as TRL); 0 elsewhere.

    ``shift_mean`` False keeps the mean (only rescales), as PPO does for rewards."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask

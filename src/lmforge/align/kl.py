"""How far the policy has moved from the frozen reference, per token, from the sampled tokens alone.

    logp = log pi(token)   (policy)     logq = log pi_ref(token)   (reference)
    k1 = logp - logq                      unbiased for KL(pi || pi_ref), but a single token's can be < 0
    k3 = (r - 1) - log r,  r = q / p      also unbiased, and >= 0 for every token (log r <= r - 1)

Both are Schulman's estimators ("Approximating KL divergence", 2020): the true KL needs the whole
vocabulary at every position, the estimators need only the log-probabilities of the tokens that
were sampled from the policy. PPO's reward penalty is beta * k1 per token (what InstructGPT and
TRL subtract); GRPO's loss adds beta * k3 (DeepSeekMath eq. 4), whose gradient is well behaved.

The coefficient beta is fixed, or adapted toward a target KL (Ziegler et al. 2019, sec. 2.2):
beta grows when the measured KL is above the target and shrinks when below, by at most 20% of
the error per ``horizon`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def kl_k1(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """logp - logq, per token (same shape as the inputs)."""
    return logp - logq


def kl_k3(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """(r - 1) - log r with r = q / p, per token: >= 0, and 0 exactly where the two agree."""
    log_ratio = logq - logp
    return torch.expm1(log_ratio) - log_ratio


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


@dataclass
class KLController:
    """The KL coefficient beta: fixed (``target`` None), or adaptive toward ``target`` nats per sequence."""

    beta: float
    target: float | None = None
    horizon: int = 10000  # samples over which a full correction is spread (Ziegler et al. used 10,000)

    def update(self, measured_kl: float, samples: int) -> float:
        """Adjust beta after a batch of ``samples`` sequences whose mean KL was ``measured_kl``."""
        if self.target is not None:
            error = max(-0.2, min(0.2, measured_kl / self.target - 1.0))
            self.beta *= 1.0 + error * samples / self.horizon
        return self.beta

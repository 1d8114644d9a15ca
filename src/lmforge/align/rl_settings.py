"""The flags of ``lmforge align ppo`` and ``align grpo``, declared once (torch-free, so ``--help`` is fast).

The defaults suit the small models lmforge trains on a CPU (a learning rate of 1e-4 where a
billion-parameter model would take 1e-6 to 1e-5); every one is a flag and a ``--config`` key.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.bounds import DEVICE, SEED, Bounds
from lmforge.train.config import check_bounds, setting


@dataclass
class RLConfig:
    """rollouts and updates"""

    iterations: int = setting(20, "rollout-and-update iterations", positive=True)
    batch_size: int = setting(16, "prompts per iteration", positive=True)
    minibatch_size: int = setting(16, "responses per gradient step", positive=True)
    epochs: int = setting(2, "passes over each iteration's responses (PPO epochs)", positive=True)
    max_new_tokens: int = setting(
        32, "the longest response, in tokens (end-of-text ends one sooner)", positive=True
    )
    min_new_tokens: int = setting(
        0, "the shortest response, in tokens: end-of-text cannot be sampled before it", non_negative=True
    )
    temperature: float = setting(
        1.0, "sampling temperature of the rollouts (log-probs use the same)", positive=True
    )
    top_k: int = setting(0, "sample from the k likeliest tokens only (0: no limit)", non_negative=True)
    top_p: float = setting(
        1.0, "nucleus sampling mass (1: no limit)", rule=Bounds(positive=True, at_most=1.0)
    )
    lr: float = setting(1e-4, "AdamW learning rate (constant)", positive=True)
    grad_clip: float = setting(
        1.0, "clip the gradient norm to this value (0: no clipping)", non_negative=True
    )
    beta: float = setting(
        0.05, "KL coefficient: the weight of the KL to the reference policy", non_negative=True
    )
    clip_range: float = setting(
        0.2, "clip the probability ratio to [1 - eps, 1 + eps]", rule=Bounds(positive=True, below=1.0)
    )
    eval_size: int = setting(
        64,
        "held-out prompts sampled before and after training to measure the change (0: none)",
        non_negative=True,
    )
    seed: int = setting(0, "seeds the prompt order, the minibatch order and the sampling", rule=SEED)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)

    def validate(self) -> None:
        check_bounds(self)
        _check_lengths(self)


def _check_lengths(settings: RLConfig) -> None:
    if settings.min_new_tokens > settings.max_new_tokens:
        from lmforge.errors import UserInputError

        raise UserInputError(
            f"--min-new-tokens {settings.min_new_tokens} is more than --max-new-tokens "
            f"{settings.max_new_tokens}; no response could be that long"
        )


@dataclass
class PPOConfig(RLConfig):
    """PPO: rollouts, KL penalty, value head and GAE"""

    kl_target: float | None = setting(
        None, "adapt beta toward this KL per response, in nats (default: beta stays fixed)", positive=True
    )
    vf_coef: float = setting(0.1, "weight of the value loss next to the policy loss", non_negative=True)
    value_clip_range: float = setting(0.2, "clip each value's change per update to +- this", positive=True)
    gamma: float = setting(1.0, "discount per token", rule=Bounds(non_negative=True, at_most=1.0))
    lam: float = setting(
        0.95,
        "GAE lambda: bias (0) versus variance (1) of the advantages",
        rule=Bounds(non_negative=True, at_most=1.0),
    )


@dataclass
class GRPOConfig(RLConfig):
    """GRPO: groups of samples per prompt, no value model"""

    group_size: int = setting(
        8, "responses sampled per prompt (G); advantages are normalised within each group", positive=True
    )
    batch_size: int = setting(4, "prompts per iteration (each sampled group-size times)", positive=True)
    beta: float = setting(0.04, "KL coefficient of the k3 term in the loss", non_negative=True)

    def validate(self) -> None:
        check_bounds(self)
        _check_lengths(self)
        if self.group_size < 2:
            from lmforge.errors import UserInputError

            raise UserInputError(
                f"--group-size must be at least 2: GRPO's advantage compares a response with the others "
                f"of its group; got {self.group_size}"
            )

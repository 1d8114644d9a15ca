"""PPO's critic: a scalar value per position, read by a linear head from the policy's own last hidden
states (one backbone, two heads), as in InstructGPT-era TRL's ``AutoModelForCausalLMWithValueHead``.

    policy_value = PolicyWithValue(policy)
    logits, values = policy_value(input_ids, attention_mask)   # (B, T, V), (B, T)
    # values[:, t]: the expected return before token t is sampled: read from the state at t - 1,
    # the same state whose logits give token t its log-probability (values[:, 0] is 0)

Why a head on the policy and not a separate value model initialised from it: one forward pass per
minibatch gives the log-probabilities and the values together, half the compute and memory of two
models, which is what a CPU budget needs. The price is that the value loss's gradient also moves the
shared trunk; ``vf_coef`` keeps it small next to the policy loss. The head starts at zero, so the
first values are 0 and the first advantages are the rewards themselves.

The saved run is the plain policy (``generate`` and ``chat`` read it as any causal run); the value
head is dropped: it is cheap to learn again, and no command reads it.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.align.rollout import forward_logits


class PolicyWithValue(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = forward_logits(self.policy, input_ids, attention_mask)
        values = self.value_head(out.hidden_states.float())[..., 0]  # (B, T): the value after position t
        values = torch.cat([torch.zeros_like(values[:, :1]), values[:, :-1]], dim=1)  # before token t
        return out.logits, values


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, T): the entropy of the next-token distribution read at t - 1, aligned like the log-probs."""
    logits = logits[:, :-1].float()
    logp = logits.log_softmax(dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return torch.cat([torch.zeros_like(entropy[:, :1]), entropy], dim=1)

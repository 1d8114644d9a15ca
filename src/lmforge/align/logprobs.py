"""Log-probabilities of the tokens a policy produced: what every preference and RL loss is made of.

    ids   = prompt ids + response ids (+ end-of-text)        one row per (prompt, response)
    lp    = sequence_token_logprobs(model, ids, mask)        lp[:, t] = log p(ids[:, t] | ids[:, :t])
    logp(response | prompt) = masked_sum(lp, response_mask)  the chain rule over the response only

Rows may be padded on the right (training batches) or on the left (rollouts, whose prompts are
left-padded for decoding): with left padding, position ids count from each row's first real token,
so a padded row scores exactly like the same row alone. Right padding needs neither mask nor
positions, since a causal model never looks ahead.
"""

from __future__ import annotations

import torch
from torch import nn


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) targets -> (B, T) float32 log p(target): the target's logit minus the
    log-sum-exp, without keeping a (B, T, V) log-softmax alive for the backward pass."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def left_padded(attention_mask: torch.Tensor | None) -> bool:
    return attention_mask is not None and bool((attention_mask[:, 0] == 0).any())


def sequence_token_logprobs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, T): entry t is log p(input_ids[:, t] | input_ids[:, :t]) for t >= 1, entry 0 is 0 (nothing
    predicts the first token). Values at padding positions are meaningless: mask them."""
    if left_padded(attention_mask):
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids, attention_mask=attention_mask, position_ids=positions).logits
    else:
        logits = model(input_ids).logits
    scored = token_logprobs(logits[:, :-1], input_ids[:, 1:])
    return torch.cat([scored.new_zeros(scored.shape[0], 1), scored], dim=1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) values summed over the positions where mask is 1 -> (B,)."""
    return (values * mask.to(values.dtype)).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over every masked-in entry of the batch (0 when there is none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)

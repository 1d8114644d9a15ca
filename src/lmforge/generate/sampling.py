"""Autoregressive decoding: feed the model its own output, one token at a time.

    prompt "ROMEO:" -> ids [30, 27, 25, 17, 27, 10] -> logits for the next token
    -> temperature 0.8 sharpens them, top-k 40 keeps the 40 likeliest, softmax, roll the
    weighted die -> append the token, repeat until ``max_new_tokens`` or end-of-text.

Temperature 0 means greedy (always the likeliest token). Works for any causal model that
follows the model contract (``model(input_ids).logits``) and has a ``block_size``; the
context is cropped from the left when it grows past it.
"""

from __future__ import annotations

import torch
from torch import nn


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row; the rest become -inf (probability 0)."""
    if top_k <= 0 or top_k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    block_size: int,
    temperature: float = 1.0,
    top_k: int = 0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T) prompt -> (B, T + n) ids, n <= max_new_tokens (stops early when every row hit eos)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy); got {temperature}")
    ids = prompt_ids
    finished = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        context = ids[:, -block_size:]
        logits = model(context).logits[:, -1, :].float()  # (B, vocab)
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = apply_top_k(apply_temperature(logits, temperature), top_k)
            next_id = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        if eos_id is not None:
            next_id = next_id.masked_fill(finished[:, None], eos_id)
            finished |= next_id[:, 0] == eos_id
        ids = torch.cat([ids, next_id], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    return ids

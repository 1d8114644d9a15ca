"""Logits processors: small functions that reshape the next-token scores before a token is chosen.

    logits [2.0, 1.0, 0.5, -1.0]   (the model's scores for a 4-token vocabulary)
    -> Temperature(0.5)            [4.0, 2.0, 1.0, -2.0]         sharper: the likeliest gains
    -> TopK(3)                     [4.0, 2.0, 1.0, -inf]         only the 3 likeliest survive
    -> TopP(0.9)                   [4.0, 2.0, -inf, -inf]        the fewest tokens with 90% of the mass
    -> softmax                     [0.88, 0.12, 0, 0]            -> roll the weighted die

Each processor is a callable ``(input_ids (B, L), logits (B, V)) -> logits (B, V)``: ``input_ids``
are the tokens so far (prompt + generated; left padding holds a copy of the row's first token, so
it adds no token the row does not have), and -inf removes a token. They compose as a list, applied
in order by ``apply_processors``. Their semantics are Hugging Face's (``transformers.generation.
logits_process``), tested against it, so settings carry over:

- ``RepetitionPenalty(p)`` (Keskar et al. 2019): every token already in ``input_ids``, prompt
  included, has its score divided by p when positive and multiplied by p when negative;
- ``MinNewTokens(n)``: the end-of-text token is forbidden until n tokens were generated;
- ``TopK(k)``: ties with the k-th score are kept; ``TopP(p)`` keeps tokens until the mass of the
  ones *less* likely falls to 1 - p, always at least one.

``build_processors`` gives HF's order: penalties and constraints first, then temperature, top-k,
top-p (only when sampling; greedy and beam search take the maximum, which temperature cannot move).
Beam search applies the same processors to log-probabilities, as HF does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class LogitsProcessor(Protocol):
    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Temperature:
    """logits / t: below 1 sharpens the distribution, above 1 flattens it (t > 0)."""

    temperature: float

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


@dataclass(frozen=True)
class TopK:
    """Keep the k highest scores of each row (and any tied with the k-th); the rest become -inf."""

    k: int

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


@dataclass(frozen=True)
class TopP:
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of likeliest tokens whose
    probability reaches p; the least likely tokens whose total stays <= 1 - p are removed."""

    p: float

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=False)  # (B, V), least likely first
        tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = tail_mass <= 1 - self.p
        remove[..., -1:] = False  # the likeliest token always stays
        return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))


@dataclass(frozen=True)
class RepetitionPenalty:
    """Scores of tokens already present in ``input_ids``: / penalty if positive, * penalty if not."""

    penalty: float

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = torch.gather(logits, 1, input_ids)  # (B, L), duplicates get the same value
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return logits.scatter(1, input_ids, seen)


@dataclass(frozen=True)
class MinNewTokens:
    """Forbid ``eos_id`` until ``min_new_tokens`` tokens follow the ``prompt_length`` prompt columns."""

    prompt_length: int
    min_new_tokens: int
    eos_id: int

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] - self.prompt_length >= self.min_new_tokens:
            return logits
        logits = logits.clone()
        logits[:, self.eos_id] = -math.inf
        return logits


def apply_processors(
    processors: Sequence[LogitsProcessor], input_ids: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    for processor in processors:
        logits = processor(input_ids, logits)
    return logits


def build_processors(
    *,
    prompt_length: int,
    sampling: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    eos_id: int | None = None,
) -> list[LogitsProcessor]:
    """The processors these settings ask for, in Hugging Face's order; no-op settings add none."""
    processors: list[LogitsProcessor] = []
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(repetition_penalty))
    if min_new_tokens > 0 and eos_id is not None:
        processors.append(MinNewTokens(prompt_length, min_new_tokens, eos_id))
    if sampling:
        if temperature != 1.0:
            processors.append(Temperature(temperature))
        if top_k > 0:
            processors.append(TopK(top_k))
        if top_p < 1.0:
            processors.append(TopP(top_p))
    return processors

"""Choosing each row's next token with that request's own settings, all rows of a step at once.

    raw logits (n, V) of one decode step
    -> penalties (OpenAI): logit[j] -= presence * (count_j > 0) + frequency * count_j,
       counts over the tokens this request generated so far
    -> temperature 0: argmax (one call for all greedy rows)
       else: temperature, top-k, top-p (generate/processors.py, Hugging Face's semantics), softmax,
       one draw from the request's own torch.Generator
    -> logprobs: log_softmax of the *raw* logits (what OpenAI reports), the chosen token's and the
       k likeliest

Each sampled row draws from its own generator with the same operations ``lmforge.generate`` uses
for a prompt alone (processors, softmax, ``torch.multinomial``), so the same seed gives the same
tokens whatever else shares the batch, and the same tokens as ``generate`` with that seed.
What every row shares (argmax, log_softmax) is one batched call; the rest is a short loop over
the rows that need it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from lmforge.generate.processors import LogitsProcessor, apply_processors, build_processors


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int  # new tokens at most
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    presence_penalty: float = 0.0  # logit -= presence * (count > 0) + frequency * count,
    frequency_penalty: float = 0.0  # over this request's generated tokens (OpenAI's meanings)
    seed: int | None = None  # same seed + prompt + params -> same tokens
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob and the top k
    stop_token_ids: tuple[int, ...] = ()  # a stop token ends with finish_reason "stop", not emitted

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0


@dataclass
class TokenEvent:
    token_id: int  # -1 on an "abort" event, which carries no token
    logprob: float | None  # log p of the chosen token under the unprocessed distribution
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)  # likeliest first
    finish_reason: str | None = None  # None while going; "stop", "length" or "abort" on the last


class RowSampler:
    """One request's sampling state: its processors, its generator, its generated-token counts."""

    def __init__(self, params: SamplingParams, vocab_size: int, device: torch.device) -> None:
        self.params = params
        self.processors: list[LogitsProcessor] = build_processors(
            prompt_length=0,
            sampling=not params.greedy,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
        )
        self.generator: torch.Generator | None = None
        if not params.greedy:
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(63)
            self.generator = torch.Generator(device=device).manual_seed(seed)
        self.counts = torch.zeros(vocab_size, device=device) if params.penalised else None

    def penalise(self, scores: torch.Tensor) -> None:
        """In place on this row's scores (V,)."""
        if self.counts is not None:
            p = self.params
            scores -= p.presence_penalty * (self.counts > 0) + p.frequency_penalty * self.counts

    def draw(self, scores: torch.Tensor) -> int:
        """A token from this row's processed scores (V,), as ``generate.sampling.sample`` draws it."""
        processed = apply_processors(self.processors, _NO_IDS, scores[None])
        probs = processed.softmax(dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator)[0, 0])

    def record(self, token: int) -> None:
        if self.counts is not None:
            self.counts[token] += 1


_NO_IDS = torch.zeros(1, 0, dtype=torch.long)  # temperature/top-k/top-p read no previous tokens


def choose(
    logits: torch.Tensor, samplers: list[RowSampler]
) -> tuple[list[int], list[float | None], list[list[tuple[int, float]]]]:
    """(token, chosen logprob or None, top logprobs) per row of the raw logits (n, V)."""
    raw = logits.float()
    scores = raw
    penalised = [i for i, s in enumerate(samplers) if s.counts is not None]
    if penalised:
        scores = raw.clone()
        for i in penalised:
            samplers[i].penalise(scores[i])
    tokens = scores.argmax(dim=-1).tolist()  # the greedy rows' answer; sampled rows overwrite theirs
    for i, sampler in enumerate(samplers):
        if sampler.generator is not None:
            tokens[i] = sampler.draw(scores[i])
        sampler.record(tokens[i])
    chosen: list[float | None] = [None] * len(samplers)
    tops: list[list[tuple[int, float]]] = [[] for _ in samplers]
    wanted = [i for i, s in enumerate(samplers) if s.params.logprobs is not None]
    if wanted:
        logprobs = torch.log_softmax(raw[wanted], dim=-1)  # (m, V)
        picked = logprobs.gather(1, torch.tensor([[tokens[i]] for i in wanted], device=raw.device))
        k = max(samplers[i].params.logprobs for i in wanted)
        values, ids = logprobs.topk(min(k, raw.shape[-1]), dim=-1) if k else (None, None)
        picked_list = picked[:, 0].tolist()
        for j, i in enumerate(wanted):
            chosen[i] = picked_list[j]
            want = samplers[i].params.logprobs
            if want and values is not None:
                tops[i] = list(zip(ids[j, :want].tolist(), values[j, :want].tolist()))
    return tokens, chosen, tops

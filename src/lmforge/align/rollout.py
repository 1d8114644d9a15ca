"""Rollouts: sample responses to a batch of prompts with the decoding suite, and lay them out for the
losses, with the log-probabilities of the sampled tokens under the policy and the frozen reference.

    batch = sample_rollouts(policy, prompt_ids, settings, eos_id=0, generator=g, tokenizer=tok)
    # prompts [[5, 6, 7], [8]], responses [[9, 0], [4, 4, 4]] (0: end-of-text), max_new_tokens 3:
    batch.input_ids      [[5, 6, 7, 9, 0, 0], [8, 8, 8, 4, 4, 4]]   left-padded prompt | right-padded response
    batch.attention_mask [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    batch.response_mask  [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]   end-of-text counts, padding does not
    score_rollouts(batch, policy, reference)                          # batch.logprobs, batch.ref_logprobs

Every prompt ends at the same column (``prompt_width``), so the response tokens of all rows start
at that column: the PPO and GRPO losses work on the response columns ``[:, prompt_width:]``.
Positions follow the attention mask (cumsum - 1), so a left-padded row is scored as it is alone.

The log-probabilities are of the temperature-scaled distribution the tokens were sampled from
(logits / temperature, as TRL does), so at temperature 1 they are the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.generate import GenerationConfig, generate, pad_prompts


@dataclass
class Rollouts:
    prompt_index: list[int]  # which prompt of the batch each row answers (G rows per prompt in GRPO)
    completions: list[str]  # the decoded responses, end-of-text left out
    input_ids: torch.Tensor  # (N, P + R)
    attention_mask: torch.Tensor  # (N, P + R)
    response_mask: torch.Tensor  # (N, P + R)
    prompt_width: int  # P
    finished: torch.Tensor  # (N,) True where the response ended with end-of-text
    logprobs: torch.Tensor | None = None  # (N, P + R) policy, 0 outside the responses
    ref_logprobs: torch.Tensor | None = None  # (N, P + R) reference

    @property
    def response(self) -> slice:
        return slice(self.prompt_width, None)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)

    def prompt_ids(self, row: int) -> list[int]:
        """Row ``row``'s prompt, padding left out."""
        P = self.prompt_width
        return self.input_ids[row, :P][self.attention_mask[row, :P].bool()].tolist()

    def response_ids(self, row: int) -> list[int]:
        """Row ``row``'s sampled response, its end-of-text included when it has one."""
        length = int(self.response_mask[row].sum())
        return self.input_ids[row, self.prompt_width : self.prompt_width + length].tolist()


@torch.no_grad()
def sample_rollouts(
    policy: nn.Module,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    *,
    eos_id: int | None,
    generator: torch.Generator | None,
    tokenizer,
) -> Rollouts:
    """``config.num_return_sequences`` sampled responses per prompt, in one batched decode (KV cache)."""
    device = next(policy.parameters()).device
    results = generate(policy, prompt_ids, config, generator=generator, tokenizer=tokenizer)
    prompts, prompt_mask = pad_prompts(prompt_ids, device)
    copies = config.num_return_sequences
    responses, texts, finished, index = [], [], [], []
    for b, continuations in enumerate(results):
        for c in continuations:
            ended = c.finish == "eos"
            responses.append(list(c.ids) + ([eos_id] if ended else []))
            texts.append(c.text if c.text is not None else tokenizer.decode(c.ids))
            finished.append(ended)
            index.append(b)
    N, P = len(responses), prompts.shape[1]
    R = max(1, max(len(r) for r in responses))
    filler = eos_id if eos_id is not None else 0
    response_ids = torch.full((N, R), filler, dtype=torch.long, device=device)
    response_mask = torch.zeros(N, R, dtype=torch.long, device=device)
    for row, ids in enumerate(responses):
        if ids:
            response_ids[row, : len(ids)] = torch.tensor(ids, device=device)
            response_mask[row, : len(ids)] = 1
    input_ids = torch.cat([prompts.repeat_interleave(copies, dim=0), response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(copies, dim=0), response_mask], dim=1)
    full_response_mask = torch.cat(
        [torch.zeros_like(prompt_mask).repeat_interleave(copies, dim=0), response_mask], dim=1
    )
    return Rollouts(
        index, texts, input_ids, attention_mask, full_response_mask, P, torch.tensor(finished, device=device)
    )


def forward_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The model's output on padded rows, positions counted from each row's first real token."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids, attention_mask=attention_mask, position_ids=position_ids)


def sampled_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T): entry t is log p(input_ids[:, t] | before) under logits / temperature; entry 0 is 0."""
    from lmforge.align.logprobs import token_logprobs

    scaled = logits[:, :-1].float() / (temperature if temperature > 0 else 1.0)
    logprobs = token_logprobs(scaled, input_ids[:, 1:])
    return torch.cat([torch.zeros_like(logprobs[:, :1]), logprobs], dim=1)


@torch.no_grad()
def rollout_logprobs(
    model: nn.Module, batch: Rollouts, temperature: float = 1.0, chunk: int = 64
) -> torch.Tensor:
    """(N, P + R) log-probs of ``batch``'s tokens under ``model`` (no grad), 0 outside the responses."""
    parts = []
    for start in range(0, batch.input_ids.shape[0], chunk):
        ids = batch.input_ids[start : start + chunk]
        out = forward_logits(model, ids, batch.attention_mask[start : start + chunk])
        parts.append(sampled_logprobs(out.logits, ids, temperature))
    return torch.cat(parts) * batch.response_mask


def score_rollouts(
    batch: Rollouts, policy: nn.Module, reference: nn.Module, temperature: float = 1.0
) -> Rollouts:
    """Fill ``batch.logprobs`` (policy) and ``batch.ref_logprobs`` (reference)."""
    batch.logprobs = rollout_logprobs(policy, batch, temperature)
    batch.ref_logprobs = rollout_logprobs(reference, batch, temperature)
    return batch

"""Greedy decoding and ancestral sampling: feed the model its own output, one token at a time.

    prompt "ROMEO:" -> ids [30, 27, 25, 17, 27, 10] -> logits for the next token
    -> processors (temperature 0.8 sharpens them, top-k 40 keeps the 40 likeliest) -> softmax
    -> greedy: the likeliest token; sampling: roll the weighted die (torch.multinomial)
    -> append the token, feed it back, repeat until max_new_tokens, end-of-text or a stop string.

Ancestral sampling draws every token from the model's (processed) conditional distribution, so
with no processors a whole continuation is an exact sample from the model. With
``num_return_sequences`` n, each prompt is computed once and its row repeated n times.

Per step: one model call on one token per row (the model keeps its own state, see step.py), the
processors, and a few (N,)-sized tensor operations; nothing grows with the text except the
token buffer the processors read (preallocated, passed as a view). A row that finished keeps
being fed end-of-text (so the batch stays rectangular) until every row has finished.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.processors import apply_processors
from lmforge.generate.result import EOS, RUNNING, STOP, Decoded
from lmforge.generate.step import StepModel
from lmforge.generate.stopping import StopStrings

# called after each step with the chosen ids (N,) and the probabilities they were chosen from (N, V)
TokenCallback = Callable[[torch.Tensor, torch.Tensor], None]


@torch.inference_mode()
def sample(
    model: StepModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    stop: StopStrings | None = None,
    on_token: TokenCallback | None = None,
) -> Decoded:
    """Greedy (``config.greedy``) or sampled continuations of left-padded prompts (B, P).

    Returns B * config.num_return_sequences rows, prompt-major. ``input_ids`` at padding
    positions should repeat a token of the row (``decode.pad_prompts`` uses its first), since
    processors such as the repetition penalty read every column.
    """
    B, P = input_ids.shape
    n, copies = config.max_new_tokens, config.num_return_sequences
    N, device = B * copies, input_ids.device
    eos, filler = config.eos_id, config.eos_id if config.eos_id is not None else 0
    tokens = torch.full((N, P + n), filler, dtype=torch.long, device=device)  # prompt, then new ids
    tokens[:, :P] = input_ids.repeat_interleave(copies, dim=0)
    token_logprobs = torch.zeros(N, n, device=device)
    lengths = torch.full((N,), n, dtype=torch.long, device=device)
    finish = torch.full((N,), RUNNING, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    decoded = Decoded(tokens[:, P:], token_logprobs, lengths, finish)
    if n == 0:
        return decoded
    processors = config.processors(P)
    logits, state = model.start(input_ids, attention_mask, max_new_tokens=n, copies=copies)  # (N, V)
    for t in range(n):
        scores = apply_processors(processors, tokens[:, : P + t], logits)
        probs = None
        if config.greedy:
            next_ids = scores.argmax(dim=-1)  # (N,)
            if on_token is not None:
                probs = scores.softmax(dim=-1)
        else:
            probs = scores.softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator)[:, 0]
        next_ids = next_ids.masked_fill(finished, filler)
        tokens[:, P + t] = next_ids
        token_logprobs[:, t] = logits.gather(1, next_ids[:, None])[:, 0] - logits.logsumexp(dim=-1)
        if on_token is not None:
            on_token(next_ids, probs)
        newly = torch.zeros_like(finished)
        if eos is not None:
            newly = (next_ids == eos) & ~finished
            finish.masked_fill_(newly, EOS)
        if stop:
            hit = stop.hits(tokens[:, P : P + t + 1], ~finished & ~newly)
            finish.masked_fill_(hit, STOP)
            newly |= hit
        lengths.masked_fill_(newly, t + 1)
        finished |= newly
        if t == n - 1 or bool(finished.all()):
            break
        logits, state = model.step(next_ids, state)
    return decoded

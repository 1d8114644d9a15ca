"""The front door: token-id prompts in, continuations out, whatever the strategy or model family.

    config = GenerationConfig(strategy="sample", temperature=0.8, top_k=40, max_new_tokens=50, eos_id=0)
    results = generate(model, [[5, 6, 7], [8]], config, generator=torch.Generator().manual_seed(1))
    results[1][0].ids      # new ids continuing [8], end-of-text and anything after it left out

Prompts of different lengths run as one batch, padded on the left so every row's next token sits
in the last column:

    [[5, 6, 7], [8]] -> input_ids [[5, 6, 7], [8, 8, 8]], attention_mask [[1, 1, 1], [0, 0, 1]]

Padding repeats the row's first token rather than a pad id: the attention mask hides it from the
model, and the processors that read previous tokens (repetition penalty) see no token the row
lacks. Positions follow the mask (step.py), so a row's greedy continuation in a batch is the one
it gets alone (up to float rounding in the batched matmuls).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmforge.errors import UserInputError
from lmforge.generate.beam import beam_search
from lmforge.generate.config import GenerationConfig
from lmforge.generate.result import Continuation, continuations
from lmforge.generate.sampling import TokenCallback, sample
from lmforge.generate.step import StepModel, as_step_model
from lmforge.generate.stopping import StopStrings


def pad_prompts(
    prompts: Sequence[Sequence[int]], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into (input_ids (B, P), attention_mask (B, P)), padding with each row's first id."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserInputError("every prompt needs at least one token (start from end-of-text for none)")
    width = max(len(p) for p in prompts)
    ids = [[p[0]] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def generate(
    model: nn.Module | StepModel,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    tokenizer=None,
    on_token: TokenCallback | None = None,
) -> list[list[Continuation]]:
    """For each prompt (a list of ids), ``config.num_return_sequences`` continuations.

    model: any language model (its ``decoding`` picks the step interface, step.py) or a StepModel,
        in eval mode, on its device.
    generator: the randomness for sampling (on the model's device); the same seed, the same text.
    tokenizer: needed for stop strings; when given, each continuation also carries its text.
    on_token: called after every step with the chosen ids (N,) and their distribution (N, V)
        (greedy and sampling; rows are prompt-major, num_return_sequences per prompt).
    """
    if config.stop and tokenizer is None:
        raise UserInputError("stop strings are matched on text: pass the tokenizer")
    step_model = as_step_model(model)
    device = _device_of(model)
    check_memory(model, prompts, config, device)
    input_ids, attention_mask = pad_prompts(prompts, device)
    stop = StopStrings(tokenizer, config.stop) if config.stop else None
    if config.strategy == "beam":
        if on_token is not None:
            raise UserInputError("per-token output (streaming, probabilities) needs greedy or sampling")
        decoded = beam_search(step_model, input_ids, attention_mask, config, stop=stop)
    else:
        decoded = sample(
            step_model, input_ids, attention_mask, config, generator=generator, stop=stop, on_token=on_token
        )
    flat = continuations(decoded, tokenizer, stop)
    per = config.num_return_sequences
    return [flat[i * per : (i + 1) * per] for i in range(len(prompts))]


def check_memory(
    model: nn.Module | StepModel, prompts: Sequence[Sequence[int]], config: GenerationConfig, device
) -> None:
    """Refuse a decoding job that clearly cannot fit in memory (``resources.py``): every row's
    ids and log-probabilities, the key-value cache and a step's logits, before any is allocated."""
    from lmforge.resources import check_fits, generation_estimate

    net = getattr(model, "model", model)
    if not isinstance(net, nn.Module):
        return
    beam = config.strategy == "beam"
    copies = config.num_beams if beam else config.num_return_sequences
    cache = 0
    if getattr(net, "decoding", None) == "kv_cache":
        layout = net.cache_layout()
        cache = 2 * layout.layers * layout.heads * layout.head_size * layout.dtype.itemsize  # keys, values
    estimate = generation_estimate(
        net,
        rows=len(prompts) * copies,
        prompt_length=max((len(p) for p in prompts), default=0),
        new_tokens=config.max_new_tokens,
        cache_bytes_per_position=cache,
        context=getattr(net, "context_limit", None),
    )
    what = "beams" if beam else "samples"
    check_fits(
        estimate,
        flags=f"--max-new-tokens {config.max_new_tokens} with {_count(len(prompts), 'prompt')} x {copies} {what}",
        what="the model and its continuations",
        device=device,
        hint=f"lower --max-new-tokens, --{'num-beams' if beam else 'num-samples'} or --batch-size",
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _device_of(model) -> torch.device:
    inner = getattr(model, "model", model)
    if isinstance(inner, nn.Module):
        for param in inner.parameters():
            return param.device
    return torch.device("cpu")

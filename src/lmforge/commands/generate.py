"""``lmforge generate``: continue a prompt with a trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from lmforge.errors import UserInputError


def generate(
    *,
    checkpoint: Path,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 200,
    num_samples: int = 1,
    seed: int = 1337,
    weights: Literal["auto", "best", "last"] = "auto",
    device: str = "auto",
    as_json: bool = False,
) -> dict:
    """Sample a continuation of --prompt from a run's model.

    An empty prompt starts from the end-of-text token, i.e. from the start of a document.
    A prompt longer than the model's context keeps only its last tokens (with a warning).

    Args:
        checkpoint: a run directory written by `lmforge pretrain`.
        prompt: the text to continue.
        max_new_tokens: how many tokens to add at most (stops early at end-of-text).
        temperature: divide the logits by this before sampling; below 1 is more conservative,
            0 is greedy (always the likeliest token).
        top_k: sample only among the k likeliest tokens (0: all of them).
        num_samples: how many independent continuations.
        seed: random seed; the same seed gives the same text.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge generate --checkpoint runs/shakespeare --prompt "ROMEO:" --max-new-tokens 300
    """
    import torch

    from lmforge.generate.sampling import sample
    from lmforge.run import Run
    from lmforge.train.trainer import resolve_device

    if temperature < 0:
        raise UserInputError(f"--temperature must be >= 0 (0 means greedy); got {temperature}")
    if top_k < 0:
        raise UserInputError(f"--top-k must be >= 0 (0 means no limit); got {top_k}")
    if num_samples < 1 or max_new_tokens < 0:
        raise UserInputError("--num-samples must be >= 1 and --max-new-tokens >= 0")
    run = Run.open(checkpoint)
    model = run.load_model(weights)
    tokenizer = run.load_tokenizer()
    device = resolve_device(device)
    model.to(device)
    context = model.config.block_size
    prompt_ids = tokenizer.encode(prompt) if prompt else []
    if not prompt_ids:
        start = (
            tokenizer.document_separator_id
            if tokenizer.document_separator_id is not None
            else tokenizer.bos_id
        )
        if start is None:
            raise UserInputError("this tokenizer has no end-of-text or beginning token; give a --prompt")
        prompt_ids = [start]
    if len(prompt_ids) > context:
        print(
            f"warning: the prompt has {len(prompt_ids)} tokens; keeping its last {context} (the model's context)",
            file=sys.stderr,
        )
        prompt_ids = prompt_ids[-context:]
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = torch.tensor([prompt_ids] * num_samples, device=device)
    out = sample(
        model,
        batch,
        max_new_tokens,
        block_size=context,
        temperature=temperature,
        top_k=top_k,
        eos_id=tokenizer.document_separator_id,
        generator=generator,
    )
    samples = []
    for row in out.tolist():
        new_ids = row[len(prompt_ids) :]
        if tokenizer.document_separator_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.document_separator_id)]
        samples.append({"text": tokenizer.decode(new_ids), "ids": new_ids})
    result = {"prompt_ids": prompt_ids, "samples": samples}
    if as_json:
        print(json.dumps(result))
    else:
        for i, item in enumerate(samples):
            if num_samples > 1:
                print(f"--- sample {i + 1} ---")
            print(prompt + item["text"])
    return result

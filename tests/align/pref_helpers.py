"""Tiny causal runs and separable preference sets for the reward-model and DPO tests.

The synthetic task: prompts are random lowercase words; a chosen response is made of letters from
GOOD ("aeiou"), a rejected one of letters from BAD ("bcdfg"). A model that tells the two sets apart
at the last token separates every pair, so a reward model can reach (near) 100% held-out accuracy,
and ``good_fraction`` is a programmatic reward that DPO on these pairs should raise.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import torch

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.run import Run
from lmforge.tokenizers import train_tokenizer

GOOD, BAD = "aeiou", "bcdfg"
ALPHABET = string.ascii_letters + string.digits + " :\n.,?!'`()"


# A chat template with nothing around the turns but the ":" after the prompt: "abc:" + "aeiou" +
# end-of-text, so a sampled completion is the response itself (the default template's " ...\n\n"
# around it is the same for chosen and rejected, so DPO never learns to start with its space).
BARE_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}"
    "{% if message['role'] == 'user' %}:{% endif %}{% endfor %}"
)


def make_causal_run(path: Path, seed: int = 0, chat_template: str | None = None, **model: object) -> Run:
    """A char-tokenizer GPT run (every character the default chat template and the pairs use)
    with random weights: n_layer 1, n_embd 32 unless ``model`` says otherwise; ``chat_template``
    stored beside its tokenizer (Hugging Face's chat_template.jinja) when given."""
    tokenizer = train_tokenizer("char", ALPHABET)
    settings = {"block_size": 48, "n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0, **model}
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **settings)
    torch.manual_seed(seed)
    net = GPT(config)
    run = Run.create(path)
    run.save_tokenizer(tokenizer)
    if chat_template is not None:
        from lmforge.tokenizers.chat import TEMPLATE_FILE

        (run.tokenizer_dir / TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
    run.write_config({"family": "gpt", "model": config.to_dict()})
    run.save_weights(net)
    return run


def separable_pairs(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def word(letters: str, low: int, high: int) -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(low, high)))

    return [
        {
            "prompt": word(string.ascii_lowercase, 3, 6),
            "chosen": word(GOOD, 3, 8),
            "rejected": word(BAD, 3, 8),
        }
        for _ in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def good_fraction(prompts: list[str], completions: list[str]) -> list[float]:
    """A programmatic reward: the share of a completion's characters that are in GOOD (0 if empty),
    the template's spacing around it (" ... \n\n" with the default one) left out."""
    stripped = [text.strip() for text in completions]
    return [sum(c in GOOD for c in text) / len(text) if text else 0.0 for text in stripped]

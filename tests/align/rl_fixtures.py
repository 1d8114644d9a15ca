"""A tiny causal run and a programmatic reward for the PPO/GRPO tests: a 1-layer, 32-wide GPT with
random weights over a character vocabulary, and the fraction of a completion's characters that
are vowels (about 0.2 for the starting policy, which spreads its mass over ~40 characters)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_run import make_run

PROMPTS = ["Speak", "All", "hear me", "First", "You are", "Before we", "proceed", "famish"]
VOWELS = set("aeiou")


def vowel_fraction(prompts: list[str], completions: list[str]) -> list[float]:
    return [sum(ch in VOWELS for ch in text) / max(len(text), 1) for text in completions]


def tiny_policy(path: Path) -> Path:
    make_run(path, n_layer=1, n_embd=32, block_size=48)
    return path


def prompts_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path

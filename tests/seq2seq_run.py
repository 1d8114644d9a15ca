"""Small seq2seq run directories written directly, for the commands that read them (generate, score,
attention with --source): a character tokenizer over a few letters, an encoder-decoder with random
weights, or trained at library level on the reverse task (source "abc", target "cba") for a few
hundred steps, which is enough for greedy decoding to reverse held-out strings."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lmforge.models.registry import build_model, preset_config
from lmforge.run import Run
from lmforge.tokenizers import train_tokenizer

LETTERS = "abcdefgh"


def reverse_pairs(count: int, seed: int, shortest: int = 3, longest: int = 8) -> list[tuple[str, str]]:
    """Random strings of LETTERS and their reversals."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        text = "".join(rng.choice(LETTERS) for _ in range(rng.randint(shortest, longest)))
        pairs.append((text, text[::-1]))
    return pairs


def _batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """The contract's training batch (models/protocol.py): start + target in, target + end out."""
    start, end = tokenizer.bos_id, tokenizer.eos_id
    sources = [tokenizer.encode(s) for s, _ in pairs]
    targets = [tokenizer.encode(t) for _, t in pairs]
    S, T = max(map(len, sources)), max(map(len, targets)) + 1
    batch = {
        "input_ids": torch.full((len(pairs), S), end),
        "attention_mask": torch.zeros(len(pairs), S, dtype=torch.long),
        "decoder_input_ids": torch.full((len(pairs), T), end),
        "labels": torch.full((len(pairs), T), -100),
    }
    for row, (source, target) in enumerate(zip(sources, targets)):
        batch["input_ids"][row, : len(source)] = torch.tensor(source)
        batch["attention_mask"][row, : len(source)] = 1
        batch["decoder_input_ids"][row, : len(target) + 1] = torch.tensor([start, *target])
        batch["labels"][row, : len(target) + 1] = torch.tensor([*target, end])
    return batch


def make_seq2seq_run(
    path: Path, preset: str = "rnn-attn", steps: int = 0, seed: int = 0, **model: object
) -> Run:
    """A run at ``path``: ``preset`` at a small width (``model`` overrides), random weights, or
    trained ``steps`` steps of 64 reverse pairs (AdamW, linear decay) when ``steps`` > 0."""
    tokenizer = train_tokenizer("char", LETTERS)
    family, config = preset_config(preset)
    small = (
        {"hidden_size": 64, "n_embd": 32}
        if family == "rnn_seq2seq"
        else {"n_encoder_layer": 2, "n_decoder_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0}
    )
    settings = {**config, **small, **model, "vocab_size": tokenizer.vocab_size}
    settings["decoder_start_token_id"] = tokenizer.bos_id
    torch.manual_seed(seed)
    net = build_model(family, settings)
    if steps:
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
        for step in range(steps):
            loss = net(**_batch(tokenizer, reverse_pairs(64, seed=seed * 100_003 + step))).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    else:
        with torch.no_grad():
            for param in net.parameters():
                param.add_(torch.randn_like(param) * 0.1)
    run = Run.create(path)
    run.save_tokenizer(tokenizer)
    run.write_config({"family": family, "model": net.config.to_dict()})
    run.save_weights(net.eval())
    return run


_MADE: dict[tuple, Run] = {}


def cached_run(root: Path, preset: str = "rnn-attn", steps: int = 0, **model: object) -> Run:
    """``make_seq2seq_run`` once per process and arguments (under ``root``), so the test files that
    share a trained run in one pytest worker train it once."""
    key = (preset, steps, *sorted(model.items()))
    if key not in _MADE:
        name = "-".join(str(part) for part in key).replace("/", "_")
        _MADE[key] = make_seq2seq_run(Path(root) / name, preset, steps, **model)
    return _MADE[key]


def one_line_error(code: int, out: str, err: str) -> str:
    """The error line of a refused command: exit 2, one ``error:`` line on stderr, nothing on stdout."""
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]

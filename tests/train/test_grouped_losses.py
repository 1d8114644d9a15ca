"""Validation over groups (the sources of a data mixture): the overall loss is the token-weighted mean."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.train.evaluation import grouped_losses


def batch(seed: int, rows: int, ignore: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 20, (rows, 8), generator=generator)
    y = torch.randint(0, 20, (rows, 8), generator=generator)
    y[:, :ignore] = -100  # groups with different numbers of targets
    return {"input_ids": x, "labels": y}


def test_overall_loss_is_the_mean_over_every_target_not_a_mean_of_group_means():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    groups = {"web": [batch(1, 3), batch(2, 5)], "code": [batch(3, 1, ignore=6)], "empty": []}
    figures = grouped_losses(model, groups)
    model.eval()
    with torch.no_grad():  # the reference: PyTorch's cross-entropy over each group's targets
        sums, counts = {}, {}
        for name, batches in groups.items():
            logits = [model(b["input_ids"]).logits for b in batches]
            sums[name] = sum(
                F.cross_entropy(lg.flatten(0, 1), b["labels"].flatten(), reduction="sum").item()
                for lg, b in zip(logits, batches)
            )
            counts[name] = sum(int((b["labels"] != -100).sum()) for b in batches)
    assert set(figures) == {"loss", "loss_web", "loss_code"}  # a group without targets is left out
    for name in ("web", "code"):
        assert math.isclose(figures[f"loss_{name}"], sums[name] / counts[name], rel_tol=1e-5)
    overall = (sums["web"] + sums["code"]) / (counts["web"] + counts["code"])
    assert math.isclose(figures["loss"], overall, rel_tol=1e-5)
    assert not math.isclose(figures["loss"], (figures["loss_web"] + figures["loss_code"]) / 2, rel_tol=1e-3)

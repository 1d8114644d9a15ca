"""``lmforge inspect``: a model's module tree, with shapes, parameters and FLOPs per token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from lmforge.bounds import RUN_DIR, Bounds
from lmforge.commands._json import print_json
from lmforge.commands.estimate import PRESET, VOCAB


def inspect(
    *,
    model: Annotated[str | None, PRESET] = None,
    checkpoint: Annotated[Path | None, RUN_DIR] = None,
    depth: Annotated[int, Bounds(non_negative=True, at_most=64)] = 4,
    vocab_size: Annotated[int | None, VOCAB] = None,
    as_json: bool = False,
) -> dict:
    """Show a model's module tree: each module's shape, parameters and forward FLOPs per token.

    Then the totals: FLOPs per token forward and for training (3 x forward: the backward pass
    does two matmuls for each of the forward's one), counted at the model's context, and the
    memory the weights take at fp32, bf16 and int8. A stack of identical blocks shows as one
    line, "h.0-11 (12 x Block, each)". The model is built on PyTorch's meta device, so even
    gpt3-175b is inspected at once, without its 700 GB of weights. A parameter shared by two
    modules (a head tied to the token table) is counted once, where it first appears.

    Args:
        model: a preset (gpt2, gpt3-175b, bert-base, lstm ...).
        checkpoint: or a run directory.
        depth: how many levels of the tree to show (0: the totals only).
        vocab_size: the vocabulary (default: the preset's; a run's own).

    Examples:
        lmforge inspect --model gpt2
        lmforge inspect --model gpt3-175b --depth 2
        lmforge inspect --model lstm --json
    """
    from lmforge.estimate import inspect_model

    summary = inspect_model(model, checkpoint, vocab_size=vocab_size, depth=depth)
    if as_json:
        print_json(summary)
    else:
        print("\n".join(report(summary)))
    return summary


def report(summary: dict) -> list[str]:
    rows = summary["modules"]
    width = max([len("  " * row["depth"] + row["name"]) for row in rows] + [6])
    shape_width = max([len(row["shape"]) for row in rows] + [5])
    lines = [f"{summary['model']}: {summary['description']}, vocabulary {summary['vocab_size']:,}"]
    if rows:
        lines.append(
            f"{'module':<{width}}  {'shape':<{shape_width}}  {'parameters':>17}  {'FLOPs/token':>17}"
        )
        for row in rows:
            name = "  " * row["depth"] + row["name"]
            lines.append(
                f"{name:<{width}}  {row['shape']:<{shape_width}}  {row['parameters']:>17,}  {row['flops_per_token']:>17,}"
            )
    forward, training = summary["forward_flops_per_token"], summary["training_flops_per_token"]
    memory = summary["weight_memory_gb"]
    lines += [
        f"parameters {summary['params']:,}",
        f"FLOPs per token at context {summary['context']}: forward {forward:,} "
        f"(attention scores {summary['attention_flops_per_token']:,}), training {training:,}",
        "weights: " + ", ".join(f"{memory[p]:,.3g} GB at {p}" for p in ("fp32", "bf16", "int8")),
    ]
    return lines

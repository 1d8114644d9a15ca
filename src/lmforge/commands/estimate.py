"""``lmforge estimate``: what training a model on N tokens will cost, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import RUN_DIR, Bounds, Named, Text
from lmforge.commands._json import print_json


def _preset_names() -> list[str]:
    from lmforge.models.registry import preset_names

    return preset_names()


def _gpu_names() -> list[str]:
    from lmforge.gpus import gpu_names

    return gpu_names()


PRESET = Named(_preset_names, "model preset")
GPU_NAME = Named(_gpu_names, "GPU")
TOKENS = Bounds(positive=True, at_most=1e15)  # a quadrillion: 50x the largest corpora trained on
GPU_COUNT = Bounds(positive=True, at_most=1_000_000)
VOCAB = Bounds(positive=True, at_most=10_000_000)


def estimate(
    *,
    tokens: Annotated[float, TOKENS],
    model: Annotated[str | None, PRESET] = None,
    checkpoint: Annotated[Path | None, RUN_DIR] = None,
    gpus: Annotated[int, GPU_COUNT] = 1,
    gpu: Annotated[str, GPU_NAME] = "h100",
    precision: Literal["bf16", "fp16", "tf32", "fp32"] = "bf16",
    mfu: Annotated[float, Bounds(positive=True, at_most=1.0)] = 0.4,
    parallel: Annotated[str, Text(what="dp, fsdp, tp=K or tp=K,fsdp")] = "dp",
    batch_tokens: Annotated[float, Bounds(positive=True, at_most=1e10)] = 524_288,
    vocab_size: Annotated[int | None, VOCAB] = None,
    activation_checkpointing: bool = False,
    as_json: bool = False,
) -> dict:
    """Compute, time, memory per GPU and communication of training a model on N tokens.

    Training FLOPs are 6ND (2 per parameter per token forward, 4 backward; Kaplan et al. 2020,
    Hoffmann et al. 2022) plus the attention scores no parameter counts, 6 x layers x context x
    width per token for a causal model; Table D.1 of the GPT-3 paper is the 6ND part alone.
    Time = FLOPs / (GPUs x peak x MFU), peak from the datasheet of --gpu at --precision. Memory
    per GPU: fp32 weights, gradients and AdamW's two moments (16 bytes per parameter), sharded by
    fsdp and tp, and the activations of the largest micro-batch that fits (the rest of a step is
    gradient accumulation). When even one sequence per GPU does not fit, it says so and names the
    first change that fits. Nothing is allocated: the model is built on PyTorch's meta device.

    Args:
        tokens: training tokens (300e9 for GPT-3).
        model: a preset (gpt2, gpt3-175b, bert-base, lstm ...).
        checkpoint: or a run directory, for its model's shape.
        gpus: how many GPUs.
        gpu: which GPU (h100, h200, a100, a100-40gb, v100, l40s, l4, b200, mi300x, h100-pcie).
        precision: the matmuls' precision (peak FLOP/s and activation size).
        mfu: model FLOPs utilisation: the fraction of peak a run sustains (0.3-0.5 is typical).
        parallel: dp (each GPU holds everything), fsdp (weights, gradients and optimizer state
            sharded), tp=K (Megatron tensor parallelism over K GPUs), tp=K,fsdp (both: a 2-D mesh).
        batch_tokens: tokens per optimizer step, all GPUs together.
        vocab_size: the vocabulary (default: the preset's, GPT-2's 50257 for gpt presets).
        activation_checkpointing: keep only each layer's input, recompute the rest in backward
            (less memory, 4/3 of the FLOPs).

    Examples:
        lmforge estimate --model gpt2 --tokens 10e9 --gpus 8 --gpu h100
        lmforge estimate --model gpt3-175b --tokens 300e9 --gpus 1024 --gpu a100 --parallel tp=8,fsdp --batch-tokens 3.2e6
        lmforge estimate --model gpt3-6.7b --tokens 300e9 --gpus 8 --json
    """
    from lmforge.estimate import Parallelism, TrainingPlan, model_shape
    from lmforge.estimate import estimate as run_estimate

    plan = TrainingPlan(
        shape=model_shape(model, checkpoint, vocab_size),
        tokens=tokens,
        gpus=gpus,
        gpu=gpu,
        precision=precision,
        mfu=mfu,
        parallel=Parallelism.parse(parallel),
        batch_tokens=batch_tokens,
        checkpointing=activation_checkpointing,
    )
    result = run_estimate(plan)
    summary = result.to_dict()
    if as_json:
        print_json(summary)
    else:
        print("\n".join(report(result)))
    return summary


def _flops(value: float) -> str:
    return f"{value:.3g}".replace("e+", "e")


def _figure(value: float) -> str:
    """Three significant figures, thousands separated: 3,688, 86.5, 0.0929."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.1f} GB"


def report(result) -> list[str]:
    """The human summary of an ``estimate.Result``."""
    plan, shape = result.plan, result.plan.shape
    ranks = plan.gpus // plan.parallel.tensor
    lines = [
        f"{shape.name}: {shape.parameters:,} parameters ({shape.description}), vocabulary {shape.vocab_size:,}",
        f"training on {plan.tokens:,.0f} tokens:",
        f"  compute    {_flops(result.flops)} FLOPs = 6ND {_flops(result.flops_6nd)} + attention "
        f"{_flops(result.attention_flops)}",
        f"             {_figure(result.pf_days)} petaflop/s-days (6ND alone: {_figure(result.flops_6nd / 86_400e15)})",
        f"  time       {_figure(result.hours)} hours ({_figure(result.hours / 24)} days) on {plan.gpus:,} x {result.device.label} "
        f"at {result.peak / 1e12:,.1f} TFLOP/s {plan.precision}, MFU {plan.mfu:.0%}"
        + (", recomputing the forward" if plan.checkpointing else ""),
        f"  steps      {result.steps:,} of {result.sequences_per_rank * ranks * shape.context:,} tokens: "
        f"{result.sequences_per_rank:,} sequences of {shape.context} per data-parallel rank, micro-batch "
        f"{result.micro_batch:,} x {result.accumulation:,} accumulation",
        f"  memory per GPU, --parallel {plan.parallel}"
        + (" with activation checkpointing" if plan.checkpointing else "")
        + ":",
    ]
    for part, nbytes in result.memory.items():
        lines.append(f"    {part:<30} {_gb(nbytes):>12}")
    other = "with" if not plan.checkpointing else "without"
    lines.append(
        f"    {'total':<30} {_gb(result.memory_total):>12} of {result.device.memory_gb:g} GB "
        f"({other} activation checkpointing: {_gb(sum(result.memory_other.values()))})"
    )
    if result.communication:
        lines.append("  communication per step, each GPU sends:")
        for what, nbytes in result.communication.items():
            lines.append(f"    {what:<38} {_gb(nbytes):>12}")
    if result.finding:  # what is wrong, then what would fit, one line each
        lines += [f"  {clause}" for clause in result.finding.split("; ", 1)]
    else:
        lines.append("  fits in memory")
    return lines

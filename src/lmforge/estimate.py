"""What a training run will cost before it starts: compute, time, memory per GPU, communication.

    plan = TrainingPlan(model_shape("gpt3-175b"), tokens=300e9, gpus=1024, gpu="a100", batch_tokens=3.2e6,
                        parallel=Parallelism.parse("tp=8,fsdp", 1024))
    result = estimate(plan)      # result.flops 3.19e23, result.pf_days 3,690, result.hours ...

Compute is the accounting of Kaplan et al. 2020 (Table 1) and Hoffmann et al. 2022 (appendix F):
6 FLOPs per parameter per token (2 forward, 4 backward) plus the attention scores, which no
parameter counts: 3 x 2 x n_layer x context x d_model per token for a causal model (each query
sees context/2 keys on average; models/flops.py derives it). Table D.1 of Brown et al. 2020
leaves the attention term out ("6ND"): ``flops_6nd`` reproduces that table, ``flops`` adds it
(+1.4% for GPT-3 175B at context 2048, +15% for GPT-3 Small, whose width is small next to its
context). A petaflop/s-day is 1e15 x 86,400 FLOPs.

Time divides the FLOPs the GPUs execute by GPUs x peak (gpus.py, the datasheets) x MFU; with
activation checkpointing they execute one more forward pass: 4/3 of the model's FLOPs.

Memory per GPU is ``resources.sharded_training_estimate``. A step of ``batch_tokens`` is split
over the data-parallel ranks (GPUs / tensor degree); each runs the largest power-of-two
micro-batch of sequences that fits and accumulates gradients over the rest.

Communication per step, bytes each GPU sends (ring algorithms: an all-reduce of S bytes over n
ranks sends 2(n-1)/n x S, an all-gather or reduce-scatter (n-1)/n x S):
    dp     one all-reduce of the fp32 gradients per step
    fsdp   per micro-batch, an all-gather of the weights in the compute precision for forward and
           again for backward; per step, a reduce-scatter of the gradients
    tp=K   per layer and micro-batch, two all-reduces of the activations (B x T x C) forward and
           two backward (Megatron: one after attention, one after the MLP), plus two more when
           checkpointing recomputes the forward
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserInputError
from lmforge.gpus import GPU, gpu

PF_DAY = 1e15 * 86_400
GB = 1e9
ACTIVATION_BYTES = {"bf16": 2, "fp16": 2, "tf32": 4, "fp32": 4}
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class Parallelism:
    """How the GPUs split the work: ``dp``, ``fsdp``, ``tp=K`` or ``tp=K,fsdp``."""

    tensor: int = 1  # K: GPUs that split each layer (Megatron)
    fsdp: bool = False  # shard weights, gradients and optimizer state over the data-parallel ranks

    @classmethod
    def parse(cls, text: str) -> Parallelism:
        text = text.strip().lower()
        if text in ("dp", "ddp"):
            return cls()
        if text == "fsdp":
            return cls(fsdp=True)
        match = re.fullmatch(r"tp=(\d+)(,fsdp)?", text.replace(" ", ""))
        if not match or int(match[1]) < 1:
            raise UserInputError(
                f"--parallel {text!r} is not one of dp, fsdp, tp=K, tp=K,fsdp (K a whole number)"
            )
        return cls(tensor=int(match[1]), fsdp=bool(match[2]))

    def __str__(self) -> str:
        if self.tensor == 1:
            return "fsdp" if self.fsdp else "dp"
        return f"tp={self.tensor}" + (",fsdp" if self.fsdp else "")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model, read from it once on the meta device."""

    name: str
    description: str
    parameters: int
    layers: int
    width: int
    heads: int | None
    vocab_size: int
    context: int
    attention_flops: float  # forward FLOPs per token of the attention scores at ``context``


def _plain(description: str) -> str:
    """A family's describe() without the parentheses some put around it."""
    return description.removeprefix("(").removesuffix(")")


def meta_model(model: str | None = None, checkpoint: Path | None = None, vocab_size: int | None = None):
    """(name, model) for a preset (``model``) or a run directory's config, built on the meta device:
    shapes without memory, so gpt3-175b costs nothing."""
    import torch

    from lmforge.models.registry import build_sketch, is_counted, model_class, preset_config

    if (model is None) == (checkpoint is None):
        raise UserInputError("give --model PRESET or --checkpoint RUN (one of them)")
    if checkpoint is not None:
        from lmforge.run import Run

        config = Run.open(checkpoint).read_config()
        family, settings, name = config["family"], dict(config["model"]), str(checkpoint)
    elif is_counted(model):
        raise UserInputError(
            f"--model {model} is counted from data, not trained by gradient descent: it has no modules, "
            "FLOPs or optimizer state to show"
        )
    else:
        try:
            family, settings = preset_config(model)
        except ValueError as error:
            raise UserInputError(str(error)) from None
        name = model
    if vocab_size is not None:
        settings["vocab_size"] = vocab_size
    if not issubclass(model_class(family), torch.nn.Module):
        raise UserInputError(
            f"{name} holds a model counted from data, not trained by gradient descent: it has no modules, "
            "FLOPs or optimizer state to show"
        )
    return name, build_sketch(family, settings)


def model_shape(
    model: str | None = None, checkpoint: Path | None = None, vocab_size: int | None = None
) -> ModelShape:
    """The shape of a preset (``model``) or of a run directory's model, built without memory."""
    from lmforge.models.flops import attention_flops_per_token

    name, net = meta_model(model, checkpoint, vocab_size)
    config = net.config
    context = config.block_size
    return ModelShape(
        name=name,
        description=_plain(net.describe()),
        parameters=net.num_parameters(),
        layers=getattr(config, "n_layer", 1) or 1,
        width=max(getattr(config, "n_embd", 0) or 0, getattr(config, "hidden_size", 0) or 0),
        heads=getattr(config, "n_head", None),
        vocab_size=config.vocab_size,
        context=context,
        attention_flops=attention_flops_per_token(net, context),
    )


@dataclass(frozen=True)
class TrainingPlan:
    shape: ModelShape
    tokens: float
    gpus: int = 1
    gpu: str = "h100"
    precision: str = "bf16"
    mfu: float = 0.4
    parallel: Parallelism = field(default_factory=Parallelism)
    batch_tokens: float = 524_288
    checkpointing: bool = False


@dataclass
class Result:
    plan: TrainingPlan
    device: GPU
    flops_6nd: float
    attention_flops: float
    peak: float  # FLOP/s per GPU
    steps: int
    sequences_per_rank: int
    micro_batch: int  # sequences a GPU runs at once
    memory: dict[str, float]  # part -> bytes per GPU, at the chosen micro-batch
    memory_other: dict[str, float]  # the same with activation checkpointing switched the other way
    communication: dict[str, float]  # what -> bytes per GPU per step
    finding: str | None  # None: it fits

    @property
    def flops(self) -> float:
        return self.flops_6nd + self.attention_flops

    @property
    def pf_days(self) -> float:
        return self.flops / PF_DAY

    @property
    def hours(self) -> float:
        executed = self.flops * (4 / 3 if self.plan.checkpointing else 1)
        return executed / (self.plan.gpus * self.peak * self.plan.mfu) / 3600

    @property
    def memory_total(self) -> float:
        return sum(self.memory.values())

    @property
    def accumulation(self) -> int:
        return math.ceil(self.sequences_per_rank / self.micro_batch)

    def to_dict(self) -> dict:
        plan, shape = self.plan, self.plan.shape
        return {
            "model": shape.name,
            "params": shape.parameters,
            "tokens": plan.tokens,
            "flops": self.flops,
            "flops_6nd": self.flops_6nd,
            "attention_flops": self.attention_flops,
            "pf_days": self.pf_days,
            "pf_days_6nd": self.flops_6nd / PF_DAY,
            "gpu": self.device.label,
            "gpus": plan.gpus,
            "precision": plan.precision,
            "peak_tflops": self.peak / 1e12,
            "mfu": plan.mfu,
            "hours": self.hours,
            "parallel": str(plan.parallel),
            "activation_checkpointing": plan.checkpointing,
            "steps": self.steps,
            "micro_batch": self.micro_batch,
            "accumulation": self.accumulation,
            "memory_gb": self.memory_total / GB,
            "memory_parts_gb": {part: nbytes / GB for part, nbytes in self.memory.items()},
            "memory_gb_other_checkpointing": sum(self.memory_other.values()) / GB,
            "gpu_memory_gb": self.device.memory_gb,
            "fits": self.finding is None,
            "communication_gb_per_step": {what: nbytes / GB for what, nbytes in self.communication.items()},
            "finding": self.finding,
        }


def _check(plan: TrainingPlan) -> int:
    """The data-parallel degree, after refusing a split that cannot be made."""
    shape, tensor = plan.shape, plan.parallel.tensor
    if plan.gpus % tensor:
        raise UserInputError(
            f"--parallel {plan.parallel} needs --gpus a multiple of {tensor}; got {plan.gpus}"
        )
    if tensor > 1 and not shape.heads:
        raise UserInputError(
            f"tensor parallelism splits attention heads across GPUs, and {shape.name} ({shape.description}) has none; "
            "use --parallel dp or fsdp"
        )
    if tensor > 1 and shape.heads % tensor:
        raise UserInputError(
            f"--parallel {plan.parallel}: the {shape.heads} attention heads of {shape.name} do not split evenly over "
            f"{tensor} GPUs; choose K dividing {shape.heads}"
        )
    ranks = plan.gpus // tensor
    if plan.batch_tokens < shape.context * ranks:
        raise UserInputError(
            f"--batch-tokens {plan.batch_tokens:,.0f} is less than one sequence of {shape.context} tokens for each of the "
            f"{ranks} data-parallel ranks; give at least {shape.context * ranks:,}"
        )
    return ranks


def _memory(plan: TrainingPlan, ranks: int, sequences: int, checkpointing: bool) -> dict[str, float]:
    from lmforge.resources import sharded_training_estimate

    shape = plan.shape
    return sharded_training_estimate(
        parameters=shape.parameters,
        layers=shape.layers,
        width=shape.width,
        vocab_size=shape.vocab_size,
        sequence_tokens=sequences * shape.context,
        tensor=plan.parallel.tensor,
        shards=ranks if plan.parallel.fsdp else 1,
        activation_bytes=ACTIVATION_BYTES[plan.precision],
        checkpointing=checkpointing,
    ).parts


def _micro_batch(plan: TrainingPlan, ranks: int, per_rank: int, checkpointing: bool) -> int:
    """The largest power-of-two number of sequences (at most ``per_rank``) that fits; 1 if none does."""
    limit = gpu(plan.gpu).memory_gb * GB
    micro = 1 << (per_rank.bit_length() - 1)
    while micro > 1 and sum(_memory(plan, ranks, micro, checkpointing).values()) > limit:
        micro //= 2
    return micro


def _communication(plan: TrainingPlan, ranks: int, micro: int, accumulation: int) -> dict[str, float]:
    shape, tensor = plan.shape, plan.parallel.tensor
    compute_bytes = ACTIVATION_BYTES[plan.precision]
    share = shape.parameters / tensor
    found: dict[str, float] = {}
    if ranks > 1:
        ring = (ranks - 1) / ranks
        if plan.parallel.fsdp:
            found["FSDP all-gathers of the weights"] = 2 * accumulation * ring * share * compute_bytes
            found["FSDP reduce-scatter of the gradients"] = ring * share * 4
        else:
            found["all-reduce of the gradients"] = 2 * ring * share * 4
    if tensor > 1:
        per_layer = 6 if plan.checkpointing else 4
        size = micro * shape.context * shape.width * compute_bytes
        found["tensor-parallel all-reduces"] = (
            shape.layers * per_layer * accumulation * 2 * (tensor - 1) / tensor * size
        )
    return found


def estimate(plan: TrainingPlan) -> Result:
    """Compute, time, memory per GPU and communication of ``plan`` (see the module docstring)."""
    device = gpu(plan.gpu)
    peak = device.peak(plan.precision)
    ranks = _check(plan)
    shape = plan.shape
    per_rank = int(plan.batch_tokens // (shape.context * ranks))
    micro = _micro_batch(plan, ranks, per_rank, plan.checkpointing)
    memory = _memory(plan, ranks, micro, plan.checkpointing)
    other = _memory(plan, ranks, micro, not plan.checkpointing)
    accumulation = math.ceil(per_rank / micro)
    tokens_per_step = per_rank * ranks * shape.context
    return Result(
        plan=plan,
        device=device,
        flops_6nd=6 * shape.parameters * plan.tokens,
        attention_flops=3 * shape.attention_flops * plan.tokens,
        peak=peak,
        steps=math.ceil(plan.tokens / tokens_per_step),
        sequences_per_rank=per_rank,
        micro_batch=micro,
        memory=memory,
        memory_other=other,
        communication=_communication(plan, ranks, micro, accumulation),
        finding=_finding(plan, memory, device) if sum(memory.values()) > device.memory_gb * GB else None,
    )


def _fits(plan: TrainingPlan) -> float | None:
    """GB per GPU of ``plan`` at one sequence per micro-batch, when that fits; else None."""
    try:
        ranks = _check(plan)
    except UserInputError:
        return None
    total = sum(_memory(plan, ranks, 1, plan.checkpointing).values())
    return total / GB if total <= gpu(plan.gpu).memory_gb * GB else None


def _finding(plan: TrainingPlan, memory: dict[str, float], device: GPU) -> str:
    """Why ``plan`` does not fit even one sequence per GPU, and the first change that makes it fit."""
    from dataclasses import replace

    part, largest = max(memory.items(), key=lambda item: item[1])
    said = (
        f"does not fit: {sum(memory.values()) / GB:,.1f} GB per GPU at one sequence per micro-batch, "
        f"the {device.label} has {device.memory_gb:g} GB (largest part: {part}, {largest / GB:,.1f} GB)"
    )
    heads = plan.shape.heads or 1
    candidates = []
    if not plan.checkpointing:
        candidates.append(("--activation-checkpointing", replace(plan, checkpointing=True)))
    for tensor in (1, 2, 4, 8):
        for checkpointing in (plan.checkpointing, True):
            option = Parallelism(tensor=tensor, fsdp=True)
            if heads % tensor or option == plan.parallel and checkpointing == plan.checkpointing:
                continue
            flags = f"--parallel {option}" + (
                " --activation-checkpointing" if checkpointing and not plan.checkpointing else ""
            )
            candidates.append((flags, replace(plan, parallel=option, checkpointing=checkpointing)))
    for flags, candidate in candidates:
        needed = _fits(candidate)
        if needed is not None:
            return f"{said}; it fits with {flags} ({needed:,.1f} GB per GPU)"
    sharded = plan.shape.parameters * 16 / (device.memory_gb * GB)
    return (
        f"{said}; no split of {plan.gpus} GPUs fits: weights, gradients and AdamW state alone need "
        f"{math.ceil(sharded):,} {device.label}s under --parallel fsdp; raise --gpus"
    )


def inspect_model(
    model: str | None = None, checkpoint: Path | None = None, *, vocab_size: int | None = None, depth: int = 4
) -> dict:
    """``lmforge inspect``'s summary: the module tree (models/summary.py) and the totals."""
    from lmforge.models.flops import TRAINING_MULTIPLIER, attention_flops_per_token, forward_flops_per_token
    from lmforge.models.summary import module_rows

    name, net = meta_model(model, checkpoint, vocab_size)
    context = net.config.block_size
    parameters = net.num_parameters()
    forward = forward_flops_per_token(net, context)
    return {
        "model": name,
        "description": _plain(net.describe()),
        "vocab_size": net.config.vocab_size,
        "context": context,
        "params": parameters,
        "modules": module_rows(net, context, depth),
        "forward_flops_per_token": forward,
        "attention_flops_per_token": attention_flops_per_token(net, context),
        "training_flops_per_token": TRAINING_MULTIPLIER * forward,
        "weight_memory_gb": {precision: parameters * size / GB for precision, size in WEIGHT_BYTES.items()},
    }

"""Will a job fit in memory? A rough floor of the bytes it needs, checked before anything is
allocated, so that a huge ``--block-size`` or ``--batch-size`` is one line naming the flags and
the limit, not an allocator's crash (or the kernel's OOM killer) minutes later:

    error: --block-size 999999999 with --batch-size 12 needs about 1,192.1 GiB for the model and
    one training step (most of it activations: 953.7 GiB); this machine has 23.4 GiB: lower
    --block-size or --batch-size

The figures are floors, counted from the tensors a job cannot do without, so a refusal means the
job clearly cannot fit; a job that passes may still be too big once allocator overhead and
temporaries are added. Not counted: the T x T attention scores, which PyTorch's fused SDPA
kernels (the path lmforge's attention takes) never hold whole.

    pretraining   weights, gradients and optimizer state (16 bytes per parameter with AdamW: fp32
                  weight, gradient and two moments; 12 with SGD's momentum), buffers (position
                  tables), the activations one step keeps for backward (ACTIVATION_FLOATS numbers
                  per token, layer and unit of width), the logits and their gradient, and the int64
                  token windows of a training batch and of the fixed evaluation set
    evaluation    weights, one window batch, one layer's activations, the logits and log-softmax
    generation    weights, the key-value cache, every row's token ids (prompt + new) and
                  log-probabilities, and one step's logits

``sharded_training_estimate`` is the same count for planning a run on GPUs (``lmforge estimate``):
per GPU, under data parallelism, FSDP and tensor parallelism, with the activations a Transformer
layer really keeps (Korthikanti et al. 2022) rather than the refusal's floor.

The machine's memory is the total RAM (``os.sysconf``, lowered to a cgroup's ``memory.max``
when a container sets one), or a CUDA device's own memory. ``LMFORGE_MEMORY`` overrides it
("8GiB", "512MiB" or a number of bytes): to budget less than the machine has, and for tests.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from lmforge.errors import UserInputError

MEMORY_ENV = "LMFORGE_MEMORY"
GIB = 1024**3
# Numbers a GPT block keeps per token for backward, in units of its width: the residual input and
# output of each norm (4), q, k and v (3), the attention output (1), the MLP's hidden layer before
# and after its activation (2 x 4): about 16. Half of it is a floor for every family (an LSTM keeps
# its 4 gates, cell and output per step: about 6 x hidden).
ACTIVATION_FLOATS = 8
# Mixed-precision AdamW as lmforge trains (autocast over fp32 parameters): bytes per parameter.
ADAMW_BYTES = {"weights": 4, "gradients": 4, "AdamW state (two moments)": 8}
# Bytes a Transformer layer keeps for backward per token and unit of width in 16-bit activations,
# tensor-parallel over t GPUs: 10 + 24/t (Korthikanti et al. 2022, "Reducing Activation
# Recomputation in Large Transformer Models", eq. 2 and section 4.1), without its 5as/h term: the
# T x T attention scores, which the fused SDPA kernels never keep.
LAYER_BYTES_SHARED, LAYER_BYTES_SPLIT = 10, 24
INT64 = 8
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": GIB, "t": 1024**4}


@dataclass
class Estimate:
    """Bytes a job needs, by part: {"weights, gradients and optimizer state": 13_686_784, ...}."""

    parts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, nbytes: float) -> Estimate:
        self.parts[what] = self.parts.get(what, 0) + int(nbytes)
        return self

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> tuple[str, int]:
        return max(self.parts.items(), key=lambda item: item[1])


def gib(nbytes: float) -> str:
    """'953.7 GiB', '12.0 MiB': one decimal in the largest unit that is at least 1."""
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= size:
            return f"{nbytes / size:,.1f} {unit}"
    return f"{int(nbytes)} bytes"


# --- what the machine has -------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """'8GiB', '8G', '512 MiB', '1e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise UserInputError(
            f"{MEMORY_ENV}={text!r} is not a size; give bytes or a number with a unit: 8GiB, 512MiB"
        )
    return int(float(match[1]) * _UNITS[match[2]])


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as limit:
                return int(limit.read().strip())
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
    return None


def machine_memory(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """(bytes, what they are: 'this machine', 'GPU cuda:0'); bytes None where it cannot be told."""
    override = os.environ.get(MEMORY_ENV, "").strip()
    device = torch.device(device)
    where = "this machine" if device.type == "cpu" else f"the {device.type} device"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        where = f"GPU cuda:{index}"
        if not override:
            return torch.cuda.get_device_properties(index).total_memory, where
    if override:
        return parse_size(override), where
    if device.type != "cpu":
        return None, where
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None, where
    limit = _cgroup_limit()
    return (min(total, limit) if limit else total), where


def check_fits(estimate: Estimate, *, flags: str, what: str, device: torch.device | str, hint: str) -> None:
    """Refuse ``estimate`` when it exceeds the device's memory, naming ``flags`` and the limit.

    flags: the values that size the job, as the user wrote them ("--block-size 999999999 with
    --batch-size 12"); what: what they size ("the model and one training step"); hint: the way out."""
    available, where = machine_memory(device)
    if available is None or estimate.total <= available:
        return
    part, size = estimate.largest()
    raise UserInputError(
        f"{flags} needs about {gib(estimate.total)} for {what} (most of it {part}: {gib(size)}); "
        f"{where} has {gib(available)}: {hint}"
    )


# --- what a job needs -------------------------------------------------------------------------------
def _model_shape(net: nn.Module) -> tuple[int, int, int, int]:
    """(parameters, buffer bytes, width, layers) of a model, built on the meta device or not."""
    config = getattr(net, "config", None)
    width = max(getattr(config, "n_embd", 0) or 0, getattr(config, "hidden_size", 0) or 0)
    layers = getattr(config, "n_layer", 1) or 1
    parameters = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    return parameters, buffers, width, layers


def _vocab_size(net: nn.Module) -> int:
    return getattr(getattr(net, "config", None), "vocab_size", 0) or 0


def training_estimate(
    net: nn.Module,
    *,
    batch_size: int,
    block_size: int,
    eval_batches: int,
    optimizer: str = "adamw",
    half_precision: bool = False,
    checkpointing: bool = False,
) -> Estimate:
    """One training step of ``net`` (a meta-device copy is enough: only shapes are read).

    checkpointing: activation checkpointing keeps each layer's input (1 number per token and unit
    of width) plus the inside of the one layer being recomputed, instead of every layer's inside."""
    parameters, buffers, width, layers = _model_shape(net)
    tokens = batch_size * block_size
    number = 2 if half_precision else 4  # autocast keeps activations in bf16/fp16
    per_parameter = sum(ADAMW_BYTES.values()) if optimizer in ("adamw", "muon") else 12
    kept = layers + ACTIVATION_FLOATS if checkpointing else layers * ACTIVATION_FLOATS
    return (
        Estimate()
        .add("weights, gradients and optimizer state", parameters * per_parameter)
        .add("the model's buffers (position tables)", buffers)
        .add("activations", tokens * width * kept * number)
        .add("logits and their gradient", 2 * tokens * _vocab_size(net) * 4)
        # a batch's gathered rows, x and y; the fixed evaluation set's x and y
        .add("token batches", 3 * tokens * INT64 + eval_batches * 2 * tokens * INT64)
    )


def evaluation_estimate(net: nn.Module, *, batch_size: int, block_size: int) -> Estimate:
    """One forward pass without gradients over ``batch_size`` windows of ``block_size`` tokens."""
    parameters, buffers, width, layers = _model_shape(net)
    tokens = batch_size * block_size
    return (
        Estimate()
        .add("weights", parameters * _element_size(net) + buffers)
        .add("activations", tokens * width * 4 * 4)  # one layer's input, output and norm at a time
        .add("logits and log-probabilities", 2 * tokens * _vocab_size(net) * 4)
        .add("token batches", 3 * tokens * INT64)
    )


def generation_estimate(
    net: nn.Module,
    *,
    rows: int,
    prompt_length: int,
    new_tokens: int,
    cache_bytes_per_position: int = 0,
    context: int | None = None,
) -> Estimate:
    """Decoding ``rows`` sequences (prompts x samples, or prompts x beams) at once.

    ``cache_bytes_per_position``: key-value bytes one row adds per position, all layers together
    (0 for a model without a cache); the cache holds at most ``context`` positions."""
    parameters, buffers, _, _ = _model_shape(net)
    length = prompt_length + new_tokens
    cached = min(length, context) if context else length
    return (
        Estimate()
        .add("weights", parameters * _element_size(net) + buffers)
        .add("the key-value cache", rows * cached * cache_bytes_per_position)
        # the decoder's and the model's copy of the ids, each new token's log-probability, the
        # Python list of new ids handed back
        .add("token ids and log-probabilities", rows * (2 * length * INT64 + new_tokens * (4 + 8)))
        .add("one step's logits", 3 * rows * _vocab_size(net) * 4)
    )


def _element_size(net: nn.Module) -> int:
    for param in net.parameters():
        return param.element_size()
    return 4


def sharded_training_estimate(
    *,
    parameters: int,
    layers: int,
    width: int,
    vocab_size: int,
    sequence_tokens: int,
    tensor: int = 1,
    shards: int = 1,
    activation_bytes: int = 2,
    checkpointing: bool = False,
) -> Estimate:
    """Bytes one GPU holds training a Transformer on ``sequence_tokens`` tokens at once (its micro-batch).

    tensor: the tensor-parallel degree t (Megatron: each GPU holds 1/t of every layer's matrices
    and of the vocabulary); shards: how many GPUs FSDP shards the rest over (1: none, each holds
    all, as DDP does); activation_bytes: 2 under bf16/fp16 autocast, 4 in fp32; checkpointing:
    keep only each layer's input and recompute the rest during backward (one layer at a time)."""
    estimate = Estimate()
    split = tensor * shards
    for part, nbytes in ADAMW_BYTES.items():
        estimate.add(part, parameters * nbytes / split)
    if shards > 1:  # FSDP gathers a layer's full weights to compute it, the next one prefetched
        estimate.add("FSDP's gathered layers", 2 * parameters / max(layers, 1) * activation_bytes / tensor)
    scale = activation_bytes / 2  # the per-layer figures are for 16-bit activations
    per_layer = sequence_tokens * width * (LAYER_BYTES_SHARED + LAYER_BYTES_SPLIT / tensor) * scale
    if checkpointing:  # each layer's input, plus the one layer being recomputed
        kept = layers * sequence_tokens * width * activation_bytes + per_layer
    else:
        kept = layers * per_layer
    estimate.add("activations", kept)
    estimate.add("logits and their gradient", 2 * sequence_tokens * vocab_size * 4 / tensor)
    return estimate

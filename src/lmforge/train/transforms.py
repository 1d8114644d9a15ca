"""Model transforms: how a plain model is made ready for training, from outside (the torchtitan way).

    model = build_model(...)                               # plain, knows nothing of devices
    model = apply_transforms(model, training_transforms(config, device, precision))
    trainer = Trainer(model, ...)                          # builds the optimizer on what it gets

Each transform takes a module and returns the module to train: the same object changed in place
(oneDNN linears share the parameters they replace) or a wrapper around it (torch.compile, and
later DDP, FSDP, tensor parallelism and LoRA). They run before the optimizer exists, so it sees
the final parameters. A transform must keep tied weights tied; ``tied_parameters`` lets a caller
check that it did.

Order: activation checkpointing (a flag on each Transformer block, so names stay unchanged), then
oneDNN linears, then torch.compile (which traces the checkpointed blocks as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.errors import UserInputError

ModelTransform = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class Named:
    """A transform with a name, for the summary line (``transforms: onednn-linears, compile``)."""

    name: str
    apply: ModelTransform

    def __call__(self, model: nn.Module) -> nn.Module:
        return self.apply(model)


def apply_transforms(model: nn.Module, transforms: Sequence[ModelTransform]) -> nn.Module:
    for transform in transforms:
        model = transform(model)
    return model


def onednn_linears(model: nn.Module) -> nn.Module:
    from lmforge.train.onednn_linear import use_onednn_linears

    use_onednn_linears(model)
    return model


def compiled(model: nn.Module) -> nn.Module:
    return torch.compile(model)


def _blocks(model: nn.Module) -> list[nn.Module]:
    from lmforge.models.layers import Block

    return [module for module in model.modules() if isinstance(module, Block)]


def check_checkpointable(model: nn.Module) -> None:
    """Refuse ``--activation-checkpointing`` for a model without Transformer blocks (an LSTM, the
    fixed-window model): one clear line before any work, rather than a flag that silently does
    nothing. ``model`` may be a meta-device sketch."""
    if not _blocks(model):
        kind = type(model).__name__
        raise UserInputError(
            f"--activation-checkpointing recomputes Transformer blocks, and a {kind} model has none; "
            "use it with a GPT or BERT model, or leave it out"
        )


def activation_checkpointing(model: nn.Module) -> nn.Module:
    """Every Transformer block keeps only its input for backward and recomputes the rest there
    (``Block.checkpointed``): activations of about one block instead of all of them, for one more
    forward pass (4/3 of the step's FLOPs). Same loss, same gradients; same parameter names."""
    check_checkpointable(model)
    for block in _blocks(model):
        block.checkpointed = True
    return model


def training_transforms(
    *,
    device: torch.device,
    precision: str,
    compile: bool,
    model: nn.Module | None = None,
    spread: bool = False,
    checkpointing: bool = False,
) -> list[Named]:
    """The transforms a single-process run gets: activation checkpointing when asked; fp32 linears
    through oneDNN on a CPU where a race against MKL at ``model``'s shapes says they pay off (same
    math; bf16 autocast already uses oneDNN; not for a model ``spread`` over processes, whose
    linears hold DTensors); torch.compile when asked."""
    from lmforge.train.onednn_linear import onednn_linears_pay_off

    transforms = []
    if checkpointing:
        transforms.append(Named("activation-checkpointing", activation_checkpointing))
    if (
        device.type == "cpu"
        and precision == "fp32"
        and not compile
        and not spread
        and onednn_linears_pay_off(device, model)
    ):
        transforms.append(Named("onednn-linears", onednn_linears))
    if compile:
        transforms.append(Named("compile", compiled))
    return transforms


def ready_for_training(
    model: nn.Module, config, *, parallel=None, mesh=None
) -> tuple[nn.Module, list[Named], torch.device]:
    """``model`` moved to ``config``'s device and given the transforms its settings call for:
    (the module to train, the transforms applied, the device). Pretraining and fine-tuning both
    start here, so they train at the same speed. Under torchrun, ``parallel`` and ``mesh``
    (``parallel/launch.py``) add the transforms that spread the model: tensor parallelism and FSDP go
    first (they replace parameters with DTensors), DDP and torch.compile wrap last."""
    from lmforge.hardware import resolve_device, resolve_precision
    from lmforge.parallel.launch import parallel_transforms

    device = resolve_device(config.device)
    model.to(device)
    precision = resolve_precision(config.precision, device)
    spread = parallel_transforms(parallel, mesh, precision=precision) if parallel is not None else []
    local = training_transforms(
        device=device,
        precision=precision,
        compile=config.compile,
        model=model,
        spread=bool(spread),
        checkpointing=config.activation_checkpointing,
    )
    wrappers = [t for t in spread if t.name == "ddp"]
    transforms = [t for t in local if t.name != "compile"] + [t for t in spread if t.name != "ddp"]
    transforms += wrappers + [t for t in local if t.name == "compile"]
    return apply_transforms(model, transforms), transforms, device


def tied_parameters(model: nn.Module) -> list[tuple[str, str]]:
    """Pairs of parameter names that are one tensor (e.g. lm_head.weight and wte.weight)."""
    first: dict[int, str] = {}
    ties = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            ties.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return ties

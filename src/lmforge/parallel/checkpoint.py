"""Checkpoints of a model spread over processes, through ``torch.distributed.checkpoint`` (DCP).

Under FSDP or tensor parallelism no rank holds the whole model or optimizer state, so each rank
writes its own shards into one directory (``train_state.dcp/``: a ``.metadata`` file and one
``__R_0.distcp`` per rank; it must be on a file system every rank sees). DCP records where every
shard lies in the whole tensor, so the directory loads into any other layout: another world size,
another ``--parallel``, or one process without a process group at all (``load``).

Keys are the plain model's parameter names (``h.0.attn.c_attn.weight``), the same whatever the
parallelism. The one exception to DCP's own resharding is the fused q/k/v (and SwiGLU gate/up)
weights under tensor parallelism: their strided shards are not one contiguous block per rank,
which DCP cannot describe, so they and their Adam moments are saved whole (``full_tensor``) and
split again on load. The model's weights are also written whole, as ``model.safetensors``, by
rank 0 (``full_state``), so every other command reads a run the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import CheckpointError
from lmforge.parallel.tensor import _split_by_heads, full_tensor, load_full_tensor
from lmforge.train import distributed
from lmforge.train.transforms import tied_parameters

DCP_DIR = "train_state.dcp"


def full_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(every weight gathered whole on the CPU, the tied names) of a sharded or plain model; a
    collective call: every rank must make it. Tied duplicates are left out, as safetensors wants."""
    ties = dict(tied_parameters(model))
    tensors = {}
    for name, tensor in _module(model).state_dict().items():
        if name not in ties:
            tensors[name] = full_tensor(tensor.detach()).contiguous().cpu()
    return tensors, ties


def _module(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP's wrapped model; FSDP2 and TP change it in place


def _states(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(_module(model), optimizer)


def _strided(model_state: dict, optim_state: dict) -> list[tuple[dict, str, Any]]:
    """(dict, key, DTensor) for each strided DTensor of the two state dicts (weights and moments):
    the entries DCP cannot shard, which are saved and loaded whole instead."""
    containers = [model_state, *optim_state.get("state", {}).values()]
    return [(c, key, value) for c in containers for key, value in c.items() if _split_by_heads(value)]


def save(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write model and optimizer shards to ``directory`` (a collective call). Written beside it
    under a temporary name, then renamed by rank 0, so a crash mid-save keeps the last one."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    model_state, optim_state = _states(model, optimizer)
    for container, key, value in _strided(model_state, optim_state):
        container[key] = full_tensor(value)
    partial = directory.with_name(directory.name + ".partial")
    if distributed.is_main_process() and partial.exists():
        shutil.rmtree(partial)
    if distributed.is_initialized():
        dist.barrier()
    dcp.save({"model": model_state, "optimizer": optim_state["state"]}, checkpoint_id=str(partial))
    if distributed.is_initialized():
        dist.barrier()
    if distributed.is_main_process():
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            directory.rename(old)
        partial.rename(directory)
        if old.exists():
            shutil.rmtree(old)
    if distributed.is_initialized():
        dist.barrier()


def load(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a ``save``d directory into ``model`` and ``optimizer`` in whatever layout they are now
    (plain, DDP, FSDP, tensor parallel, any world size)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    if not (directory / ".metadata").exists():
        raise CheckpointError(f"{directory} is not a complete distributed checkpoint; it cannot be resumed")
    model_state, optim_state = _states(model, optimizer)
    replaced = _strided(model_state, optim_state)
    for container, key, value in replaced:  # read whole, then split into the DTensor below
        container[key] = torch.zeros(value.shape, dtype=value.dtype)
    try:
        dcp.load({"model": model_state, "optimizer": optim_state["state"]}, checkpoint_id=str(directory))
    except Exception as error:  # noqa: BLE001 - DCP raises its own wrapper of any mismatch
        raise CheckpointError(
            f"{directory} does not fit this model ({str(error).splitlines()[0][:200]})"
        ) from None
    for container, key, target in replaced:
        with torch.no_grad():
            load_full_tensor(target, container[key])
        container[key] = target
    set_state_dict(_module(model), optimizer, model_state_dict=model_state, optim_state_dict=optim_state)


def load_whole(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict,
    optimizer_state: dict | None,
    plain: nn.Module,
) -> None:
    """Resume a run saved whole (one process or DDP: ``model.safetensors`` and a plain optimizer
    state) into a sharded ``model``: ``plain`` is an unsharded model of the same shape, used to
    name the plain optimizer's tensors."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from lmforge.train.optim import build_optimizer

    model_state, optim_state = _states(model, optimizer)
    with torch.no_grad():
        for name, target in model_state.items():
            load_full_tensor(target, weights[name])
    if optimizer_state is not None:
        plain_optimizer = build_optimizer(plain, lr=0.0)
        plain_optimizer.load_state_dict(optimizer_state)
        _, whole = get_state_dict(plain, plain_optimizer)
        with torch.no_grad():
            for name, moments in optim_state["state"].items():
                for key, target in moments.items():
                    if isinstance(target, torch.Tensor) and target.ndim:
                        load_full_tensor(target, whole["state"][name][key])
                    elif isinstance(target, torch.Tensor):
                        target.copy_(whole["state"][name][key])
    set_state_dict(_module(model), optimizer, model_state_dict=model_state, optim_state_dict=optim_state)

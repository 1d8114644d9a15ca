"""How a run spreads over processes: ``--parallel ddp | fsdp | tp=K[,fsdp][,sp]`` under torchrun.

    torchrun --nproc-per-node 4 -m lmforge pretrain ... --parallel tp=2,fsdp

The processes form a 2-D ``DeviceMesh`` of shape (dp, tp): ranks in one row hold the same
replica's shards and read different data ("dp", data parallel: DDP or FSDP2); ranks in one
column split each block's matmuls and read the same data ("tp", Megatron tensor parallel,
``parallel/tensor.py``). dp = world size / K. The transforms below are applied before the
optimizer is built, innermost first: tensor parallelism, then FSDP2's ``fully_shard`` (each block,
then the root) over the dp dimension, or DDP over all of it.

``setup`` starts the process group torchrun describes in its environment (gloo on a CPU, nccl on
CUDA, a timeout so a rank that died ends the others instead of hanging them) and tells
``distributed.py`` which ranks share data, so the trainer normalises the loss over them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

from lmforge.errors import LostProcessError, UserInputError
from lmforge.train import distributed
from lmforge.train.transforms import Named


@dataclass(frozen=True)
class Parallelism:
    data: str = "none"  # "none", "ddp" or "fsdp": how ranks that read different data share the model
    tensor: int = 1  # the tensor-parallel degree K
    sequence_parallel: bool = False

    @property
    def sharded(self) -> bool:
        """True when a rank holds only part of the weights: checkpoints go through DCP."""
        return self.data == "fsdp" or self.tensor > 1

    def __str__(self) -> str:
        parts = [f"tp={self.tensor}"] if self.tensor > 1 else []
        if self.sequence_parallel:
            parts.append("sp")
        if self.data != "none":
            parts.insert(0 if not parts else 1, self.data)
        return ",".join(parts) or "none"


def parse_parallel(text: str) -> Parallelism:
    """``none``, ``ddp``, ``fsdp``, ``tp=K``, ``tp=K,fsdp``, with ``,sp`` after a tp."""
    items = [item.strip() for item in text.lower().split(",") if item.strip()]
    if not items:
        raise UserInputError("--parallel is empty; give none, ddp, fsdp, tp=K or tp=K,fsdp")
    data, tensor, sequence = "none", 1, False
    for item in items:
        if item in ("none", "ddp", "fsdp", "dp"):
            if data != "none" and item != "none":
                raise UserInputError(f"--parallel {text}: choose one of ddp and fsdp")
            data = "ddp" if item == "dp" else item
        elif match := re.fullmatch(r"tp=(\d+)", item):
            tensor = int(match.group(1))
            if not 1 <= tensor <= 4096:
                raise UserInputError(f"--parallel {text}: the tensor-parallel degree must be 1 to 4096")
        elif item == "sp":
            sequence = True
        else:
            raise UserInputError(f"--parallel {text}: {item!r} is not ddp, fsdp, tp=K or sp")
    if sequence and tensor == 1:
        raise UserInputError(f"--parallel {text}: sequence parallelism (sp) comes with tp=K, K > 1")
    if tensor > 1 and data == "ddp":
        raise UserInputError(f"--parallel {text}: tensor parallelism composes with fsdp, not ddp")
    return Parallelism(data, tensor, sequence)


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun), before any process group."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), before any process group."""
    return int(os.environ.get("RANK", "0"))


def resolve_parallel(parallel: Parallelism) -> Parallelism:
    """``none`` under torchrun with several processes means ddp: the same command, spread."""
    if launched_world_size() > 1 and parallel == Parallelism():
        return Parallelism("ddp")
    return parallel


def setup(parallel: Parallelism, device: torch.device, *, timeout_s: float = 300.0):
    """Start the process group (if torchrun started us) and return the mesh, or None for one
    process. Refuses a mismatch between ``--parallel`` and how the job was launched."""
    world = launched_world_size()
    if world == 1:
        if parallel.tensor > 1:
            raise UserInputError(
                f"--parallel {parallel} needs {parallel.tensor} processes; launch with "
                f"torchrun --nproc-per-node {parallel.tensor} -m lmforge pretrain ..."
            )
        return None
    if world % parallel.tensor:
        raise UserInputError(
            f"--parallel {parallel}: {world} processes do not split into groups of {parallel.tensor}"
        )
    if parallel.data == "none" and world > parallel.tensor:
        raise UserInputError(
            f"{world} processes with --parallel {parallel} leave {world // parallel.tensor} copies "
            "reading the same data; add ,fsdp (or use ddp)"
        )
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    mesh = init_device_mesh(
        device.type, (world // parallel.tensor, parallel.tensor), mesh_dim_names=("dp", "tp")
    )
    distributed.set_data_parallel(mesh["dp"].get_group(), mesh["dp"].size(), mesh["dp"].get_local_rank())
    return mesh


_LOST = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "nccl", "gloo")


def lost_contact(error: BaseException, timeout_s: float) -> LostProcessError | None:
    """The one line for a collective that failed because another rank died or hung, else None."""
    import torch.distributed as dist

    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not isinstance(error, getattr(dist, "DistError", ())) and not (
        isinstance(error, RuntimeError) and any(word in message.lower() for word in _LOST)
    ):
        return None
    where = (
        f"rank {distributed.rank()} of {distributed.world_size()}"
        if distributed.is_initialized()
        else "a rank"
    )
    return LostProcessError(
        f"{where} lost contact with the other processes ({message[:160]}); another rank died or hung "
        f"(see its output and torchrun's summary above), or a collective waited more than "
        f"--dist-timeout {timeout_s:g} s"
    )


def teardown() -> None:
    import torch.distributed as dist

    distributed.set_data_parallel(None, 1, 0)
    if dist.is_initialized():
        dist.destroy_process_group()


def parallel_transforms(parallel: Parallelism, mesh, *, precision: str) -> list[Named]:
    """The transforms that spread a plain model over ``mesh`` (innermost first)."""
    if mesh is None:
        return []
    transforms = []
    if parallel.tensor > 1:
        from lmforge.parallel.tensor import apply_tensor_parallel

        tp_mesh = mesh["tp"]
        sp = parallel.sequence_parallel
        name = f"tensor-parallel={parallel.tensor}" + (",sequence-parallel" if sp else "")
        transforms.append(Named(name, lambda m: apply_tensor_parallel(m, tp_mesh, sequence_parallel=sp)))
    if parallel.data == "fsdp":
        transforms.append(Named("fsdp", lambda m: fully_sharded(m, mesh["dp"], precision)))
    elif parallel.data == "ddp":
        transforms.append(Named("ddp", lambda m: data_parallel(m, mesh["dp"])))
    return transforms


def data_parallel(model: nn.Module, mesh) -> nn.Module:
    """DDP: every rank holds the whole model; gradients are averaged over ranks in buckets."""
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        process_group=mesh.get_group(),
    )


def fully_sharded(model: nn.Module, mesh, precision: str) -> nn.Module:
    """FSDP2: each block, then the rest, as one all-gathered / reduce-scattered unit. With bf16 the
    parameters are gathered in bf16 and gradients reduced in fp32 (the mixed precision policy);
    the sharded master weights and the optimizer stay fp32. A parameter that tensor parallelism
    already split by rows is sharded by columns here, so the two splits stay independent."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor, Shard

    from lmforge.parallel.tensor import _split_by_heads

    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if precision == "bf16" else None,
        reduce_dtype=torch.float32 if precision == "bf16" else None,
    )

    def placement(param: nn.Parameter):
        if (
            isinstance(param, DTensor)
            and param.ndim == 2
            and (_split_by_heads(param) or param.placements[0].is_shard(0))
        ):
            return Shard(1)
        return Shard(0)

    blocks = getattr(model, "h", None)
    if isinstance(blocks, nn.ModuleList):
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, mp_policy=policy, shard_placement_fn=placement)
    return model

"""What the trainer needs to know about data-parallel ranks, and nothing more.

Under ``torchrun`` every rank runs the same recipe. Ranks that read *different* data form the
data-parallel group (all ranks under DDP or FSDP; one rank per tensor-parallel group under
``tp=K,fsdp``, see ``parallel/launch.py``). The trainer asks how many of them there are (to undo the
gradient averaging of DDP and FSDP), the sum of a count over them (the target tokens of an
optimizer step, so the loss is the global token mean), and whether it is rank 0 (the one that
prints, logs and writes the run directory). Without an initialised process group these are 1,
the value itself and True, so single-process training pays nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
import torch.distributed as dist

_data_group = None  # None: every rank (the default group)
_data_size: int | None = None
_data_rank: int | None = None


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def set_data_parallel(group, size: int, rank_in_group: int) -> None:
    """Called by ``parallel.setup``: the ranks that read different data, and this rank's place."""
    global _data_group, _data_size, _data_rank
    _data_group, _data_size, _data_rank = group, size, rank_in_group


def data_parallel_size() -> int:
    return _data_size if _data_size is not None else world_size()


def data_parallel_rank() -> int:
    return _data_rank if _data_rank is not None else rank()


def sum_over_ranks(value: float, device: torch.device) -> float:
    """``value`` summed over the data-parallel ranks (float64 on the wire: exact for token counts)."""
    if not is_initialized():
        return value
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=_data_group)
    return total.item()


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` also for a model whose parameters live on different meshes
    (tensor-parallel blocks on the 2-D mesh, the rest on the dp mesh, or plain replicated
    tensors): the norm of each group is reduced across its own mesh, then the groups combined.

    A DTensor exists only once ``torch.distributed.tensor`` is loaded; importing it just to ask
    costs a one-process run 0.5 s of its first step (it pulls in sympy)."""
    params = [p for p in parameters if p.grad is not None]
    dtensor_module = sys.modules.get("torch.distributed.tensor")
    DTensor = getattr(dtensor_module, "DTensor", None)
    if DTensor is None or not any(isinstance(p.grad, DTensor) for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    groups: dict[object, list[torch.Tensor]] = {}
    for param in params:
        grad = param.grad
        key = (grad.device_mesh, tuple(grad.placements)) if isinstance(grad, DTensor) else None
        groups.setdefault(key, []).append(grad)
    squares = []
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, foreach=False)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares.append(norm.float() ** 2)
    total = torch.stack(squares).sum().sqrt()
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grads in groups.values():
        for grad in grads:
            (grad.to_local() if isinstance(grad, DTensor) else grad).mul_(scale.to(grad.dtype))
    return total


def all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every rank (one all-reduce): lets ranks that did not fail leave
    together with the one that did, instead of waiting for it in the next collective."""
    if not is_initialized():
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class RankSlice:
    """This data-parallel rank's rows of every batch of ``source`` (a BatchSource), which draws
    the *global* batch from one seed on every rank: N ranks together train on exactly the
    batches one process would, and the source's state (saved by rank 0) resumes at any N."""

    def __init__(self, source, rank: int, size: int) -> None:
        self.source, self.rank, self.size = source, rank, size

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.source.next_batch()
        return {key: value.tensor_split(self.size)[self.rank] for key, value in batch.items()}

    def state_dict(self):
        return self.source.state_dict()

    def __getattr__(self, name: str):  # the source's own figures (a mixture's tokens per source)
        return getattr(self.source, name)

    def load_state_dict(self, state) -> None:
        self.source.load_state_dict(state)


def gather_rows(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The data-parallel ranks' ``tensor``s concatenated along ``dim``, in rank order (every rank
    gets the whole; equal shapes). The tensor itself without a process group."""
    if not is_initialized() or data_parallel_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(data_parallel_size())]
    dist.all_gather(parts, tensor.contiguous(), group=_data_group)
    return torch.cat(parts, dim=dim)

"""What the trainer needs to know about data-parallel ranks, and nothing more.

Under ``torchrun`` every rank runs the same recipe on its own part of the data. The trainer asks
three things: how many ranks there are (to undo DDP's gradient averaging), the sum of a count over
all ranks (the target tokens of an optimizer step, so the loss is the global token mean), and
whether it is rank 0 (the one that prints, logs and writes the run directory). Without an
initialised process group these are 1, the value itself and True, so single-process training
pays nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def sum_over_ranks(value: float, device: torch.device) -> float:
    """``value`` summed over every rank (float64 on the wire: exact for token counts)."""
    if not is_initialized():
        return value
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item()

"""A padded batch's rows run in groups of similar length: the same logits, far less padding.

    groups = length_groups(lengths, group_cost)          # [[row, ...], ...], shortest rows first
    logits = by_groups(x, attention_mask, groups, run)   # run(x_g, mask_g) per group, rows put back

A batch of texts is padded to its longest row, and real text varies: the built-in
``stdlib-topics`` task (MiniLM's WordPiece) averages 31 tokens and reaches 294, so a random batch
of 16 is 62% padding at a context of 128 and a batch of 32 is 70%. A classifier's rows are
independent of one another and padding changes no real position (BERT masks padded keys; causal
attention never looks right), so a row's logits do not depend on which rows share its pass:
split into groups of rows of similar length, each cut to its own longest row, a batch gives the
same logits (within float rounding) and gradients from far fewer positions.

Each group is a pass of its own through the blocks (every op's fixed cost again, smaller
matmuls), so the split is chosen by dynamic programming over the rows sorted by length,
minimising positions computed + ``group_cost`` per group. The embeddings are looked up once for
the whole batch and sliced: a lookup per group would give the embedding table a dense gradient
per group (MiniLM's 30,522 x 384: 47 MB zeroed, filled and summed each time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

GROUP_COST = 0.1  # a group's fixed cost, as a fraction of the positions of the whole padded batch


def length_groups(lengths: Sequence[int], group_cost: float) -> list[list[int]]:
    """Row indices in groups (each in ascending length, groups shortest first) minimising
    sum(rows x longest row) + ``group_cost`` x groups over contiguous runs of the sorted rows."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    sorted_lengths = [lengths[row] for row in order]
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of the j shortest rows
    start = [0] * (len(order) + 1)  # start[j]: where the last group of that best split begins
    for end in range(1, len(order) + 1):
        for first in range(end):  # a group of sorted rows first..end-1, padded to the last's length
            cost = best[first] + (end - first) * sorted_lengths[end - 1] + group_cost
            if cost < best[end]:
                best[end], start[end] = cost, first
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[start[end] : end])
        end = start[end]
    return groups[::-1]


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """What the model's matmuls run in here: autocast's dtype inside autocast, else its weights'."""
    weights = next(model.parameters())
    if torch.is_autocast_enabled(weights.device.type):
        return torch.get_autocast_dtype(weights.device.type)
    return weights.dtype


def plan_groups(
    attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32, group_cost: float = GROUP_COST
) -> list[list[int]] | None:
    """The groups for a right-padded batch's mask (B, T) whose matmuls run in ``dtype``, or None
    where one padded pass is best. Only fp32 on a CPU is split: oneDNN compiles a bf16 matmul
    for every new shape, and groups of every size and width made bf16 fine-tuning of bert-nano
    on an AMX Xeon 2x slower; on a GPU a pass's fixed cost (kernel launches) weighs more and
    the split was not measured."""
    if attention_mask.device.type != "cpu" or dtype != torch.float32:
        return None
    rows, width = attention_mask.shape
    groups = length_groups(attention_mask.sum(dim=1).tolist(), group_cost * rows * width)
    return groups if len(groups) > 1 else None


def by_groups(
    x: torch.Tensor,
    attention_mask: torch.Tensor,
    groups: Sequence[Sequence[int]],
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``run(x[rows, :longest], attention_mask[rows, :longest])`` for each group of rows, the
    results (one row each) concatenated back in the batch's row order."""
    lengths = attention_mask.sum(dim=1)
    parts, order = [], []
    for rows in groups:
        index = torch.tensor(rows, device=x.device)
        width = max(int(lengths[index].max()), 1)
        parts.append(run(x[index, :width], attention_mask[index, :width]))
        order.extend(rows)
    if sorted(order) != list(range(x.shape[0])):
        raise ValueError(f"the groups must hold every row of the batch once; got {sorted(order)}")
    inverse = torch.empty(len(order), dtype=torch.long, device=x.device)
    inverse[torch.tensor(order, device=x.device)] = torch.arange(len(order), device=x.device)
    return torch.cat(parts)[inverse]

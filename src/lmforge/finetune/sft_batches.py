"""SFT rows into batches: packed several to a block with block-diagonal masks, or one per row, padded.

    rows (input ids | labels):  A = [5 6 7 | -100 7 2]   B = [8 9 | 9 2]   C = [4 | 2]     block 6
    pack_groups(rows, 6)  -> [[A, B], [C]]      best fit, longest first (data/packing.py's rule)
    collate(rows, [[A, B]], packed=True):
        input_ids     [5 6 7 8 9]        labels [-100 7 2 9 2]
        position_ids  [0 1 2 0 1]        restart per example, as if each were alone
        document_ids  [0 0 0 1 1]     -> attention_mask = document_causal_mask: B never sees A

Each row's labels were made for the row alone (finetune/chat_data.py), so packing never creates a
target across examples, and with positions restarting and attention kept inside each example a
packed row gives every example the loss it has alone (tests/finetune/test_sft.py checks it).
A padded batch (``packed=False``) is right-padded with label -100 and needs no mask: a causal
model never looks right, so the padding changes nothing at real positions. Given the context, a
batch's width is rounded up to a multiple of 16 within it (``data/batching.padded_width``), so that
bf16's compiled matmul shapes repeat.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

from lmforge.data.batching import EpochOrder, padded_width
from lmforge.data.packing import PAD_DOCUMENT, document_causal_mask
from lmforge.finetune.chat_data import ChatRow
from lmforge.models.loss import IGNORE_INDEX


def pack_groups(rows: Sequence[ChatRow], block_size: int) -> list[list[int]]:
    """Row indices grouped into blocks of at most ``block_size`` tokens: each row, longest first,
    goes into the fullest block it still fits in (best-fit decreasing)."""
    groups: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, group index) of groups not yet full
    for index in sorted(range(len(rows)), key=lambda i: -len(rows[i].input_ids)):
        size = len(rows[index].input_ids)
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            groups.append([index])
            space, group = block_size - size, len(groups) - 1
        else:
            space, group = free.pop(slot)
            groups[group].append(index)
            space -= size
        if space > 0:
            bisect.insort(free, (space, group))
    return groups


def collate(
    rows: Sequence[ChatRow],
    groups: Sequence[Sequence[int]],
    pad_id: int,
    packed: bool,
    context: int | None = None,
) -> dict[str, torch.Tensor]:
    """Model keyword arguments for the ``groups`` (one batch row each): ``input_ids``, ``labels``,
    and when packed the document mask as ``attention_mask`` and restarting ``position_ids``; with
    ``context``, as wide as the longest row rounded up to a multiple of 16 within it."""
    width = padded_width(max(sum(len(rows[i].input_ids) for i in group) for group in groups), context)
    shape = (len(groups), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    documents = torch.full(shape, PAD_DOCUMENT, dtype=torch.long)
    for r, group in enumerate(groups):
        start = 0
        for k, index in enumerate(group):
            row = rows[index]
            end = start + len(row.input_ids)
            input_ids[r, start:end] = torch.tensor(row.input_ids)
            labels[r, start:end] = torch.tensor(row.labels)
            positions[r, start:end] = torch.arange(end - start)
            documents[r, start:end] = k
            start = end
    batch = {"input_ids": input_ids, "labels": labels}
    if packed:
        batch["attention_mask"] = document_causal_mask(documents)
        batch["position_ids"] = positions
    return batch


class SFTBatches:
    """Epochs of the training groups in a seeded order, ``batch_size`` groups at a time; its state
    (epoch, position) resumes the order exactly (each epoch's order is drawn from seed and epoch)."""

    def __init__(
        self,
        rows: Sequence[ChatRow],
        groups: Sequence[Sequence[int]],
        batch_size: int,
        pad_id: int,
        seed: int,
        packed: bool,
        context: int | None = None,
    ) -> None:
        self.rows, self.groups = list(rows), [list(g) for g in groups]
        self.batch_size, self.pad_id, self.seed, self.packed = batch_size, pad_id, seed, packed
        self.context = context
        self.order = EpochOrder(len(self.groups), seed)

    def next_batch(self) -> dict[str, torch.Tensor]:
        chosen = self.order.take(self.batch_size)
        return collate(self.rows, [self.groups[i] for i in chosen], self.pad_id, self.packed, self.context)

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


@torch.no_grad()
def assistant_loss(
    model: torch.nn.Module, rows: Sequence[ChatRow], pad_id: int, batch_size: int
) -> tuple[float, int]:
    """(cross-entropy summed over every assistant token of ``rows``, how many there are), in
    padded batches of similar lengths (so little padding is computed)."""
    device = next(model.parameters()).device
    context = getattr(model, "context_limit", None)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        groups = [[i] for i in order[start : start + batch_size]]
        batch = collate(rows, groups, pad_id, packed=False, context=context)
        batch = {k: v.to(device) for k, v in batch.items()}
        total += float(model(**batch, reduction="sum").loss)
        count += int((batch["labels"] != IGNORE_INDEX).sum())
    return total, count

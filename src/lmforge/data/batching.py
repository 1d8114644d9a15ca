"""Token ids -> batches: random windows for pretraining, sequential windows for evaluation,
padded batches for variable-length sequences.

Windows cut a flat token array (``train.bin``) into (inputs, targets) pairs, targets = inputs
shifted by one, so ``targets[b, t]`` is the token that follows ``inputs[b, t]``:

    data = [10, 11, 12, 13, 14, 15, 16],  block_size=3,  a window starting at 2
    -> x = [12, 13, 14],  y = [13, 14, 15]

Padding makes a rectangle of variable-length sequences with the tokenizer's own pad id
(padding with 0 whatever the pad id is, as the lecture's ``PadSequence`` did, turns padding into
a real token whenever id 0 is one):

    pad_batch([[5, 6, 7], [8]], pad_id=3)
    -> input_ids      [[5, 6, 7], [8,    3,    3]]
       attention_mask [[1, 1, 1], [1,    0,    0]]
       labels         [[5, 6, 7], [8, -100, -100]]

    pad_batch([[5, 6, 7], [8]], pad_id=3, shift_labels=True)   # lmforge causal models
    -> labels         [[6, 7, -100], [-100, -100, -100]]

lmforge models do not shift labels inside: ``labels[b, t]`` is the target of position t, as in
the windows' ``y``. ``shift_labels=True`` gives that for causal LM fine-tuning; the default
(labels = input ids) is what masked-LM masking and sequence tasks start from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from lmforge.errors import DataError, TokenizerError, UserInputError
from lmforge.models.loss import IGNORE_INDEX


def _to_device(tensor: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    if device is None:
        return tensor
    device = torch.device(device)
    return tensor.to(device, non_blocking=device.type == "cuda")


def _check_tokens(data: np.ndarray, needed: int, block_size: int) -> None:
    if data.ndim != 1:
        raise DataError(f"token data must be a flat array of ids; got shape {data.shape}")
    if block_size < 1:
        raise UserInputError(f"block_size must be at least 1; got {block_size}")
    if len(data) < needed:
        raise DataError(
            f"the split holds {len(data)} tokens but a window of block_size={block_size} needs "
            f"{needed} (block_size + 1, for the shifted targets); lower --block-size or add data"
        )


# --- random windows (pretraining) ---------------------------------------------------------
def random_windows(
    data: np.ndarray,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at uniformly random starts: (x, y), each int64 (B, T), y = x shifted.

    ``data`` is a 1-D array of ids, typically an ``np.memmap`` of uint16/uint32. Starts come
    from ``generator`` (a CPU one) only, so saving ``generator.get_state()`` resumes the exact batch stream.
    """
    _check_tokens(data, block_size + 1, block_size)
    # the last valid start is len - block_size - 1: its target window ends at the last token
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    # one strided view, one row gather (memcpy per row), one widening cast, one from_numpy
    rows = np.lib.stride_tricks.sliding_window_view(data, block_size + 1)[starts]  # (B, T+1)
    chunk = torch.from_numpy(rows.astype(np.int64))
    # x and y overlap in chunk: clones, so that editing one in place leaves the other
    x, y = chunk[:, :-1].clone(), chunk[:, 1:].clone()
    return _to_device(x, device), _to_device(y, device)


class WindowSampler:
    """The trainer's batch source over random windows: ``next_batch()`` -> {input_ids, labels}.

    Its whole state is the generator's, so a checkpoint of ``state_dict()`` resumes exactly.
    In DDP give each rank its own seed (e.g. ``seed + rank``).
    """

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        block_size: int,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        _check_tokens(data, block_size + 1, block_size)
        self.data, self.batch_size, self.block_size, self.device = data, batch_size, block_size, device
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict[str, torch.Tensor]:
        x, y = random_windows(self.data, self.batch_size, self.block_size, self.generator, self.device)
        return {"input_ids": x, "labels": y}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# --- sequential windows (evaluation) ------------------------------------------------------
def sequential_window_starts(
    num_tokens: int, block_size: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, already_scored) of the windows that score every target token exactly once.

    Targets are tokens 1..num_tokens-1. Windows start every ``stride`` tokens (default
    ``block_size``: no overlap); the last one is moved back to end on the last token so every
    window has the same length, and the leading ``already_scored[i]`` targets of window i,
    scored by an earlier window, get label -100. With stride < block_size each window after
    the first scores only its last ``stride`` targets, seeing up to ``block_size - stride``
    tokens of extra context: the Hugging Face perplexity-with-stride recipe.
    """
    if num_tokens < 2:
        raise DataError(f"the split holds {num_tokens} tokens; evaluation needs at least 2 (one target)")
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise UserInputError(
            f"stride must be between 1 and block_size={block_size}; got {stride} "
            "(a larger stride would skip tokens)"
        )
    length = min(block_size, num_tokens - 1)  # a split shorter than a block is one short window
    last = num_tokens - 1 - length
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    ends = starts + length  # index of each window's last target
    scored = np.zeros_like(starts)
    scored[1:] = np.maximum(ends[:-1] - starts[1:], 0)
    return starts, scored


def sequential_windows(
    data: np.ndarray,
    block_size: int,
    batch_size: int = 1,
    stride: int | None = None,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Every target of ``data`` exactly once, in order: {input_ids, labels} batches for evaluation.

    Labels are the shifted targets with -100 on those an earlier window already scored, so
    ``sum(loss) / count(labels != -100)`` over all batches is the split's exact mean loss. In DDP
    each rank takes every ``world_size``-th window; summing the ranks' sums and counts gives
    the same figure.
    """
    _check_tokens(data, 2, block_size)
    starts, scored = sequential_window_starts(len(data), block_size, stride)
    starts, scored = starts[rank::world_size], scored[rank::world_size]
    length = min(block_size, len(data) - 1)
    view = np.lib.stride_tricks.sliding_window_view(data, length + 1)
    offsets = np.arange(length)
    for i in range(0, len(starts), batch_size):
        chunk = torch.from_numpy(view[starts[i : i + batch_size]].astype(np.int64))
        # x and y overlap in chunk: clones, so that editing one in place leaves the other
        x, y = chunk[:, :-1].clone(), chunk[:, 1:].clone()
        y[torch.from_numpy(offsets[None, :] < scored[i : i + batch_size, None])] = IGNORE_INDEX
        yield {"input_ids": _to_device(x, device), "labels": _to_device(y, device)}


# --- padded batches (variable-length sequences) -------------------------------------------
@dataclass
class Batch:
    """A padded batch, each field int64 (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 real token, 0 padding
    labels: torch.Tensor  # -100 where no loss is taken

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(_to_device(getattr(self, f.name), device) for f in fields(self)))

    def as_dict(self) -> dict[str, torch.Tensor]:
        """For ``model(**batch.as_dict())`` and the trainer's batch sources."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int | None,
    block_size: int | None = None,
    padding_side: Literal["right", "left"] = "right",
    truncation_side: Literal["right", "left"] = "right",
    pad_to_block_size: bool = False,
    shift_labels: bool = False,
) -> Batch:
    """Truncate to ``block_size``, pad with ``pad_id`` on ``padding_side``, mask and label.

    padding_side: "right" for training; "left" for batched generation, so every row's last
        real token sits at the same column (position ids then come from the mask, not 0..T-1).
    truncation_side: "right" keeps the first ``block_size`` tokens; "left" keeps the last
        (a prompt's most recent context).
    pad_to_block_size: every batch exactly ``block_size`` wide (static shapes for compiled models).
    shift_labels: labels[t] = input_ids[t+1] (what lmforge causal models take), -100 where
        either token is padding; otherwise labels = input_ids with -100 on padding.
    """
    if pad_id is None:
        raise TokenizerError(
            "this tokenizer has no pad token; pass pad_id explicitly (GPT-style models can reuse "
            "eos_id: padded positions are masked out and never scored) or train the tokenizer "
            "with a pad special token"
        )
    for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
        if side not in ("right", "left"):
            raise UserInputError(f"{name} must be 'right' or 'left'; got {side!r}")
    if block_size is not None and block_size < 1:
        raise UserInputError(f"block_size must be at least 1; got {block_size}")
    if pad_to_block_size and block_size is None:
        raise UserInputError("pad_to_block_size needs a block_size")
    if len(sequences) == 0:
        raise DataError("no sequences to batch; the batch is empty")
    rows = [np.asarray(seq, dtype=np.int64).reshape(-1) for seq in sequences]
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise DataError(
                f"sequence {i} of the batch is empty; drop empty texts before batching "
                "(a row of only padding has nothing to attend to or predict)"
            )
    if block_size is not None:
        rows = [row[:block_size] if truncation_side == "right" else row[-block_size:] for row in rows]
    width = block_size if pad_to_block_size else max(len(row) for row in rows)

    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
        input_ids[i, span] = row
        attention_mask[i, span] = 1
    input_ids_t, attention_mask_t = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
    real = attention_mask_t.bool()  # from the mask, never from ids == pad_id: pad_id may be a real token
    if shift_labels:
        labels = torch.full_like(input_ids_t, IGNORE_INDEX)
        both_real = real[:, :-1] & real[:, 1:]
        labels[:, :-1] = torch.where(both_real, input_ids_t[:, 1:], IGNORE_INDEX)
    else:
        labels = input_ids_t.masked_fill(~real, IGNORE_INDEX)
    return Batch(input_ids_t, attention_mask_t, labels)


WIDTH_MULTIPLE = 16  # padded batches' widths are rounded up to a multiple of this (padded_width)


def padded_width(longest: int, context: int | None) -> int:
    """The width of a padded batch whose longest row has ``longest`` tokens: rounded up to a
    multiple of ``WIDTH_MULTIPLE`` without passing ``context`` (the longest row as it is when no
    context is given, or when the row alone passes it).

    oneDNN compiles a bf16 matmul for every new shape, so batches of every width keep bf16
    training on a CPU with bf16 hardware compiling: gpt-nano at batch 8, widths 15 to 63, took
    37-44 ms a step against 20-21 ms on widths it had seen (Emerald Rapids Xeon, 2 threads); in
    steps of 16 the shapes repeat and every step took 21 ms. The padding changes no result (it
    is masked, or after every real token of a causal row) and costs a little compute in fp32.
    """
    if context is None:
        return longest
    return max(longest, min(-(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, context))


def evenly_spread(items: Sequence, limit: int) -> list:
    """At most ``limit`` items spread evenly over ``items`` (all of them when there are fewer): a
    subset that keeps the mix of a list sorted or grouped by label."""
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


class EpochOrder:
    """Indices 0..size-1 in a fresh seeded permutation per epoch, handed out ``take(n)`` at a time
    across epoch boundaries. The state (epoch, position) resumes the order exactly: each epoch's
    permutation is drawn from (seed, epoch), so no generator state needs saving."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < count:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            part = self._order[self.position : self.position + count - len(chosen)]
            chosen += part
            self.position += len(part)
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()

"""Parallel streams of consecutive windows: the batch source for truncated backpropagation through time.

The token array is cut into ``batch_size`` contiguous streams, one per batch row, and each batch
holds the next ``block_size`` tokens of every stream (the classic Penn Treebank scheme of
Zaremba et al. 2014). Row b of batch i+1 continues row b of batch i, so a recurrent model can
start each window from the hidden state the previous one ended with:

    data = [0, 1, 2, ..., 20] (21 tokens),  batch_size=2,  block_size=3
    streams: row 0 reads tokens 0..10, row 1 reads tokens 10..20  (10 inputs + 1 target each)
    batch 0: x [[0, 1, 2], [10, 11, 12]]   y [[1, 2, 3], [11, 12, 13]]   carry_state [False, False]
    batch 1: x [[3, 4, 5], [13, 14, 15]]   y [[4, 5, 6], [14, 15, 16]]   carry_state [True, True]
    batch 2: x [[6, 7, 8], [16, 17, 18]]   y [[7, 8, 9], [17, 18, 19]]   carry_state [True, True]
    batch 3: the next epoch, from the start again                        carry_state [False, False]

The few tokens at the end of each stream that do not fill a window (token 9 -> 10 above) are
skipped. ``carry_state`` is what tells the model to carry its state (models/rnn.py); the trainer
passes it along like any other batch field. The position (epoch, window) is the whole state, so
``state_dict()`` resumes exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmforge.data.batching import _to_device
from lmforge.errors import DataError, UserInputError


class StreamSampler:
    """The trainer's batch source over parallel streams: ``next_batch()`` -> {input_ids, labels, carry_state}."""

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        block_size: int,
        device: torch.device | str | None = None,
    ) -> None:
        if data.ndim != 1:
            raise DataError(f"token data must be a flat array of ids; got shape {data.shape}")
        if batch_size < 1 or block_size < 1:
            raise UserInputError(
                f"batch_size and block_size must be positive; got {batch_size}, {block_size}"
            )
        self.stream_length = (len(data) - 1) // batch_size  # inputs per stream
        self.windows_per_epoch = self.stream_length // block_size
        if self.windows_per_epoch < 1:
            raise DataError(
                f"{len(data)} tokens cut into {batch_size} streams give {self.stream_length} tokens each, "
                f"fewer than one window of block_size={block_size}; lower --batch-size or --block-size, "
                "or add data"
            )
        self.data, self.batch_size, self.block_size, self.device = data, batch_size, block_size, device
        self.epoch, self.window = 0, 0
        self._starts = np.arange(batch_size, dtype=np.int64) * self.stream_length  # (B,)

    def next_batch(self) -> dict[str, torch.Tensor]:
        offsets = self._starts + self.window * self.block_size  # (B,)
        rows = np.lib.stride_tricks.sliding_window_view(self.data, self.block_size + 1)[offsets]
        chunk = torch.from_numpy(rows.astype(np.int64))  # (B, T + 1)
        x, y = chunk[:, :-1].clone(), chunk[:, 1:].clone()
        carry = torch.full((self.batch_size,), self.window > 0)
        self.window += 1
        if self.window == self.windows_per_epoch:
            self.epoch, self.window = self.epoch + 1, 0
        return {
            "input_ids": _to_device(x, self.device),
            "labels": _to_device(y, self.device),
            "carry_state": _to_device(carry, self.device),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "window": self.window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.window = int(state["epoch"]), int(state["window"])

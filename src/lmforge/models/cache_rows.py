"""Beam reordering of a preallocated key/value cache, shared by the decoder-only and the
encoder-decoder caches (generate/cache.py, models/seq2seq_cache.py)."""

from __future__ import annotations

import torch


def reorder_rows(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor, end: int) -> None:
    """Row i of (L, B, nh, S_max, hs) ``keys`` and ``values`` becomes old row ``index[i]``, over the
    first ``end`` positions, in place; rows past ``index`` are left as they are.

    Only the rows that change are copied: most steps of a beam search keep some beams where they
    are, and each copy reads and writes a row of every layer (84 MB a step for GPT-2 with 4 beams
    at 288 positions, where gathering every row and copying it back cost a third of the step).
    The gather makes its copy before the scatter writes, so a row that is both a source and a
    target (a swap, a cycle) still gives its old content."""
    moved = (index != torch.arange(index.numel(), device=index.device)).nonzero().flatten()
    if moved.numel() == 0:
        return
    source = index[moved]
    keys[:, moved, :, :end] = keys[:, source, :, :end]
    values[:, moved, :, :end] = values[:, source, :, :end]

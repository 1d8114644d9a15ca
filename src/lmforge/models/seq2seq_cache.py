"""The decoding state of the seq2seq Transformer (models/seq2seq.py): what ``start_decoding``
returns and ``decode`` advances.

    start_decoding(memory (B, S, C), mask, max_length=12)
      -> self-attention keys/values (n_layer, B, nh, 12, hs), preallocated, nothing cached yet
      -> cross-attention keys/values per layer (B, nh, S, hs), projected from the memory ONCE
    decode(3 target tokens)   positions 0..2 written, length 3
    reorder([2, 2, 0, 1, 1])  5 rows from 3: caches copied row by row (new storage, since the rows
                              outgrow it), cross keys/values gathered because rows changed source
    reorder([1, 0, 2, 4, 3])  beams swap within their source: caches copied in place, the cross
                              keys/values left as they are (a source's rows share them)

It is also the ``kv_cache`` the decoder's self-attention writes into (``update``, ``advance``), the
contract of generate/cache.py's KVCache, which ``models/`` cannot import (floors, DESIGN.md).
"""

from __future__ import annotations

import torch

from lmforge.models.cache_rows import reorder_rows


class Seq2SeqState:
    """A decode in progress: the decoder's self-attention keys and values of past target tokens,
    preallocated (n_layer, rows, nh, max_length, hs), and each layer's cross-attention keys and
    values of the memory, computed once per source.

    It is the ``kv_cache`` the decoder's self-attention writes into (``update``, ``advance``)."""

    def __init__(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor | None,
        source_rows: torch.Tensor,
    ) -> None:
        self.keys, self.values = keys, values
        self.memory_kv = memory_kv  # per decoder layer (rows, nh, S, hs) each
        self.memory_mask = memory_mask  # (rows, 1, 1, S) bool, or None: no source padding
        self.source_rows = source_rows  # (rows,): which source each row reads
        self.length = 0  # target positions cached

    @property
    def max_length(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return (B, nh, length + T, hs) views."""
        batch, end = k.shape[0], self.length + k.shape[2]
        self.keys[layer, :batch, :, self.length : end] = k
        self.values[layer, :batch, :, self.length : end] = v
        return self.keys[layer, :batch, :, :end], self.values[layer, :batch, :, :end]

    def advance(self, length: int) -> None:
        self.length += length

    def reorder(self, index: torch.Tensor) -> None:
        """Row i continues old row index[i]: self-attention caches copied (in place while the rows
        fit the storage, else into new storage), cross-attention keys and values and the source
        mask gathered only when a row changes source (beam reordering within a source leaves them)."""
        rows, end = index.numel(), self.length
        if rows <= self.keys.shape[1]:
            reorder_rows(self.keys, self.values, index, end)
        else:
            shape = (self.keys.shape[0], rows, *self.keys.shape[2:])
            keys = self.keys.new_empty(shape)
            values = self.values.new_empty(shape)
            keys[:, :, :, :end] = self.keys[:, :, :, :end].index_select(1, index)
            values[:, :, :, :end] = self.values[:, :, :, :end].index_select(1, index)
            self.keys, self.values = keys, values
        sources = self.source_rows.index_select(0, index)
        if sources.shape == self.source_rows.shape and torch.equal(sources, self.source_rows):
            return  # every row still reads the source it read: the cross keys and values stand
        self.memory_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory_kv]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)
        self.source_rows = sources

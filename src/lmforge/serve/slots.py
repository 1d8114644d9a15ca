"""The batch's key-value storage: one preallocated cache whose rows each hold a request of its own length.

    rows 0..n-1: running requests, each at its own length      lengths [7, 3, 12]
    row n:       the request being prefilled, chunk by chunk    (at most one)
    decode step: row i writes its new key/value at position lengths[i] and attends to keys
                 0..lengths[i]; keys are read up to the longest running row only
    a row leaves: the last running row moves into its hole (and the prefilling row after it),
                 so the running rows stay rows 0..n-1 and the batch is a view, never a gather

Storage is (n_layer, max_batch, kv_heads, context, head_size) for keys and for values, from the
model's ``cache_layout()`` (grouped-query models have fewer KV heads than query heads). It is
zero-filled once: a masked key is still multiplied by its query, and never-written memory could
hold NaN bit patterns, which a -inf mask does not cancel (NaN + -inf = NaN).

The model's side of the contract (models/gpt.py ``_blocks``): ``length`` is the past length it
uses for default positions and the causal mask, ``update(layer, k, v)`` returns the keys and
values to attend to, ``advance(T)`` runs once per forward. The two views below speak it:
``PrefillView`` (one row, past = its filled length: the model's own positions and causal mask
apply) and ``DecodeView`` (every running row, ``length`` 0: the engine passes explicit
``position_ids`` and a bool mask, so rows of different lengths share one forward pass).
"""

from __future__ import annotations

import torch


class KVSlots:
    def __init__(
        self,
        n_layer: int,
        max_batch: int,
        kv_heads: int,
        context: int,
        head_size: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (n_layer, max_batch, kv_heads, context, head_size)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, nkv, S_max, hs)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.device = device

    @property
    def context(self) -> int:
        return self.keys.shape[3]

    @property
    def max_batch(self) -> int:
        return self.keys.shape[1]

    def move(self, source: int, target: int, length: int) -> None:
        """Row ``target`` takes the first ``length`` positions of row ``source`` (compaction)."""
        if source != target and length > 0:
            self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
            self.values[:, target, :, :length] = self.values[:, source, :, :length]

    def prefill_view(self, row: int, start: int) -> PrefillView:
        return PrefillView(self, row, start)

    def decode_view(self, lengths: torch.Tensor, span: int) -> DecodeView:
        return DecodeView(self, lengths, span)


class PrefillView:
    """Row ``row`` alone, ``start`` positions already filled: a chunk of T prompt tokens goes to
    positions start..start+T-1 and attends to 0..start+T-1 (the model adds the causal mask)."""

    def __init__(self, slots: KVSlots, row: int, start: int) -> None:
        self.slots, self.row, self.length = slots, row, start

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]  # k, v (1, nkv, T, hs)
        keys, values, row = self.slots.keys, self.slots.values, self.row
        keys[layer, row, :, self.length : end] = k[0]
        values[layer, row, :, self.length : end] = v[0]
        return keys[layer, row : row + 1, :, :end], values[layer, row : row + 1, :, :end]

    def advance(self, length: int) -> None:
        """The engine counts each row's length itself."""


class DecodeView:
    """Rows 0..n-1, one new token each: row i writes at position ``lengths[i]`` and the forward
    returns keys 0..span-1 (span = the longest row + 1); the caller's mask hides each row's
    positions past its own length."""

    length = 0  # explicit position_ids and a 4-D mask: the model needs no past length

    def __init__(self, slots: KVSlots, lengths: torch.Tensor, span: int) -> None:
        self.slots, self.lengths, self.span = slots, lengths, span
        self.rows = torch.arange(lengths.shape[0], device=lengths.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.rows.shape[0]  # k, v (n, nkv, 1, hs)
        keys, values = self.slots.keys[layer], self.slots.values[layer]  # (B, nkv, S_max, hs)
        # advanced indices on dims 0 and 2 put the row dimension first: the target is (n, nkv, hs)
        keys[self.rows, :, self.lengths] = k[:, :, 0]
        values[self.rows, :, self.lengths] = v[:, :, 0]
        return keys[:n, :, : self.span], values[:n, :, : self.span]

    def advance(self, length: int) -> None:
        """The engine counts each row's length itself."""

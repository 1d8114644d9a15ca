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

    def decode_view(
        self, lengths: torch.Tensor, span: int, past: int | None = None, row_keys: list[int] | None = None
    ) -> DecodeView:
        return DecodeView(self, lengths, span, span - 1 if past is None else past, row_keys)


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
    positions past its own length.

    ``length`` (the past the model sees) is the longest row's, span - 1: the engine passes explicit
    ``position_ids`` and a 4-D mask, so the model uses it only to bound positions (a lazily grown
    rotary table grows to span). A sliding-window model is given 0 instead once span exceeds its
    window, so it adds no window of its own, measured from the longest row (the engine's mask holds
    each row's window).

    ``row_keys`` (row i attends to its first row_keys[i] keys, all of them visible): the attention
    may then run row by row over each row's own keys (models/attention.py ``attend_rows``) instead
    of over ``span`` keys for every row under the mask; the engine gives it where rows' lengths
    differ enough for that to pay (serve/engine.py ``RAGGED_FILL``)."""

    def __init__(
        self, slots: KVSlots, lengths: torch.Tensor, span: int, past: int, row_keys: list[int] | None = None
    ) -> None:
        self.slots, self.span, self.n, self.length = slots, span, lengths.shape[0], past
        self.row_keys = row_keys
        _, _, heads, context, _ = slots.keys.shape
        rows = torch.arange(self.n, device=lengths.device)
        # each (row, head)'s new position as a row of one layer's storage seen as (B * nkv * S_max, hs):
        # one index_copy_ per layer and kind (advanced-index assignment is ~500x slower on a CPU)
        head_offsets = torch.arange(heads, device=lengths.device) * context
        self.targets = (
            (rows * heads * context)[:, None] + head_offsets[None, :] + lengths[:, None]
        ).flatten()

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.slots.keys[layer], self.slots.values[layer]  # (B, nkv, S_max, hs), contiguous
        hs = keys.shape[-1]
        keys.view(-1, hs).index_copy_(0, self.targets, k.reshape(-1, hs))  # k, v (n, nkv, 1, hs)
        values.view(-1, hs).index_copy_(0, self.targets, v.reshape(-1, hs))
        return keys[: self.n, :, : self.span], values[: self.n, :, : self.span]

    def advance(self, length: int) -> None:
        """The engine counts each row's length itself."""

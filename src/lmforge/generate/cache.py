"""Key-value cache: the keys and values of every past token, so each decoding step runs one token.

    prompt "ROMEO:" (6 tokens), max 4 new tokens -> KVCache(n_layer, batch, n_head, 6 + 4, hs)
    prefill: each layer writes its keys/values of positions 0..5, length 0 -> 6
    step 1:  the new token's keys/values go to position 6, attention reads positions 0..6
    ...      no step allocates: every write lands in the storage made up front

Only keys and values are kept: a new query attends to all past keys, but past queries and
attention scores are never needed again. Storage is one tensor per kind for all layers,
(n_layer, B, nh, S_max, hs), preallocated to the longest sequence the decode can reach
(prompt + max_new_tokens, at most the model's block_size), so a step costs one copy of the new
token's keys and values per layer and nothing that grows with the sequence.

Beam search keeps the best beams after each step; ``reorder(index)`` copies rows along the batch
dimension in place (only the rows that change, ``models/cache_rows.py``), so a beam that continues another beam's
prefix inherits its keys and values instead of recomputing them. The same call expands a prefilled
prompt row into several beams or samples: rows beyond the index are left unused.

The model side of the contract (models/gpt.py): ``length`` (tokens cached), ``update(layer, k, v)``
with k, v (B, nh, T, hs) -> all keys and values (B, nh, length + T, hs), and ``advance(T)`` once
every layer has written.
"""

from __future__ import annotations

import torch

from lmforge.models.cache_rows import reorder_rows


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_length: int,
        head_size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_length, head_size)
        # uninitialised: only positions < length are ever read
        self.keys = torch.empty(shape, dtype=dtype, device=device)  # (L, B, nh, S_max, hs)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled, the same for every row and layer

    @property
    def max_length(self) -> int:
        return self.keys.shape[3]

    @property
    def capacity(self) -> int:
        """Rows allocated (the batch size may use fewer, e.g. before a prompt is expanded)."""
        return self.keys.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return (B, nh, length + T, hs) views."""
        batch, end = k.shape[0], self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {end} were asked for")
        self.keys[layer, :batch, :, self.length : end] = k
        self.values[layer, :batch, :, self.length : end] = v
        return self.keys[layer, :batch, :, :end], self.values[layer, :batch, :, :end]

    def advance(self, length: int) -> None:
        self.length += length

    def reorder(self, index: torch.Tensor) -> None:
        """Row i becomes old row index[i] (beam reordering, or expanding a prompt into copies)."""
        if index.numel() > self.capacity:
            raise ValueError(f"KV cache has {self.capacity} rows; {index.numel()} were asked for")
        reorder_rows(self.keys, self.values, index, self.length)

    def reset(self) -> None:
        """Forget every position (the storage stays)."""
        self.length = 0

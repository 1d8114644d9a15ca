"""Pack several short documents into each block, with no attention or target across them.

Padding short documents to the block wastes the compute spent on padding; packing fills the
block instead. Without care, though, a token would attend to the unrelated document before it and
the last token of one document would be trained to predict the first token of the next. Here
each document keeps its own positions, attends only within itself, and has no target outside it:

    pack_documents([[1, 2, 3], [4, 5], [6]], block_size=4, pad_id=0)
    -> input_ids    [[1, 2, 3,    6],   [4,    5,    0,    0]]
       document_ids [[0, 0, 0,    1],   [0,    0,   -1,   -1]]     # -1: padding
       position_ids [[0, 1, 2,    0],   [0,    1,    0,    0]]     # restart per document
       labels       [[2, 3, -100, -100], [5, -100, -100, -100]]    # next token, same document only

(best fit, longest first: [1, 2, 3] opens row 0, [4, 5] does not fit beside it and opens row 1,
[6] fills row 0.) ``labels[t]`` is the target of position t, the lmforge causal-model convention.
``document_causal_mask(document_ids)`` gives the (B, 1, T, T) bool mask, True where attention
is allowed, that ``scaled_dot_product_attention`` and lmforge models take as ``attention_mask``.
Append an end-of-text id to each document first if the model should learn where documents end.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch

from lmforge.data.batching import IGNORE_INDEX, _to_device
from lmforge.errors import DataError, UserInputError

PAD_DOCUMENT = -1  # document id of padding positions


@dataclass
class PackedBatch:
    """Packed rows, each field int64 (R, T)."""

    input_ids: torch.Tensor
    labels: torch.Tensor  # next token of the same document, else -100
    position_ids: torch.Tensor  # 0.. within each document; 0 on padding
    document_ids: torch.Tensor  # 0.. within each row; -1 on padding

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(*(_to_device(getattr(self, f.name), device) for f in fields(self)))

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Model keyword arguments: ids, the document mask as ``attention_mask``, labels, positions."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": document_causal_mask(self.document_ids),
            "labels": self.labels,
            "position_ids": self.position_ids,
        }


def _chunks(documents: Sequence[Sequence[int]], block_size: int) -> list[np.ndarray]:
    """Documents longer than the block, split into block-sized pieces (each then a document)."""
    chunks = []
    for doc in documents:
        doc = np.asarray(doc, dtype=np.int64).reshape(-1)
        chunks.extend(doc[i : i + block_size] for i in range(0, len(doc), block_size))
    return chunks


def _best_fit_rows(chunks: list[np.ndarray], block_size: int) -> list[list[np.ndarray]]:
    """Best-fit decreasing: each chunk, longest first, goes to the fullest row it still fits in."""
    rows: list[list[np.ndarray]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, row index) of rows not yet full
    for index in sorted(range(len(chunks)), key=lambda i: -len(chunks[i])):  # stable: ties in order
        chunk = chunks[index]
        slot = bisect.bisect_left(free, (len(chunk), -1))
        if slot == len(free):
            rows.append([chunk])
            space, row = block_size - len(chunk), len(rows) - 1
        else:
            space, row = free.pop(slot)
            rows[row].append(chunk)
            space -= len(chunk)
        if space > 0:
            bisect.insort(free, (space, row))
    return rows


def _sequential_rows(chunks: list[np.ndarray], block_size: int) -> list[list[np.ndarray]]:
    """Documents end to end in their order, cut every ``block_size`` tokens (a cut starts a new piece)."""
    rows: list[list[np.ndarray]] = [[]]
    space = block_size
    for chunk in chunks:
        while len(chunk):
            if space == 0:
                rows.append([])
                space = block_size
            rows[-1].append(chunk[:space])
            chunk, space = chunk[space:], space - min(space, len(chunk))
    return rows


def pack_documents(
    documents: Sequence[Sequence[int]],
    block_size: int,
    pad_id: int,
    strategy: Literal["best_fit", "sequential"] = "best_fit",
) -> PackedBatch:
    """Pack ``documents`` (lists of token ids) into rows of ``block_size`` tokens.

    strategy: "best_fit" (longest first, into the fullest row with room) splits only documents
        longer than the block and leaves little padding; "sequential" keeps document order and
        pads only the last row, but splits every document that crosses a row boundary.
    pad_id: any id works, since padding is masked out and never a target; GPT-style tokenizers
        without a pad token can pass their eos id.
    A split piece is treated as a document of its own (positions from 0, its own mask).
    Empty documents are skipped.
    """
    if block_size < 1:
        raise UserInputError(f"block_size must be at least 1; got {block_size}")
    if strategy not in ("best_fit", "sequential"):
        raise UserInputError(f"strategy must be 'best_fit' or 'sequential'; got {strategy!r}")
    chunks = [c for c in _chunks(documents, block_size) if len(c)]
    if not chunks:
        raise DataError(f"nothing to pack: {len(documents)} documents and no tokens among them")
    pack = _best_fit_rows if strategy == "best_fit" else _sequential_rows
    rows = pack(chunks, block_size)

    shape = (len(rows), block_size)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros(shape, dtype=np.int64)
    document_ids = np.full(shape, PAD_DOCUMENT, dtype=np.int64)
    for r, pieces in enumerate(rows):
        start = 0
        for k, piece in enumerate(pieces):
            end = start + len(piece)
            input_ids[r, start:end] = piece
            labels[r, start : end - 1] = piece[1:]  # the last token's successor is not in this piece
            position_ids[r, start:end] = np.arange(len(piece))
            document_ids[r, start:end] = k
            start = end
    return PackedBatch(*(torch.from_numpy(a) for a in (input_ids, labels, position_ids, document_ids)))


def document_causal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool, True where query t may attend to key s: same document and s <= t.

    Padding (document id -1) attends to earlier padding and itself, so no query row is all
    False (an all -inf score row is NaN after softmax); its output is garbage no label reads.
    """
    if document_ids.dim() == 1:
        document_ids = document_ids[None]  # (1, T)
    T = document_ids.shape[1]
    same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    return (same & causal)[:, None]  # the diagonal is always allowed: a token is its own document

"""Labelled texts as model inputs: token rows shaped for the family, and shuffled padded batches.

    cls_text_sep (BERT):  [CLS] text [SEP]                 token_type_ids 0 ... 0
                          [CLS] text [SEP] pair [SEP]      token_type_ids 0 ... 0 1 ... 1  (a pair)
    text_end (GPT):       text <|endoftext|>               the classifier reads the state of the last
                          text <|endoftext|> pair <|endoftext|>   token, which has read everything

A model family names its layout (``model.sequence_layout``), so nothing here asks which family it is.

Rows are right-padded, with ``attention_mask`` 0 on padding: BERT masks those keys, and a causal
model never looks right, so neither changes a real position. Given the model's context, a batch's
width is rounded up to a multiple of 16 within it (``data/batching.padded_width``: oneDNN compiles
a bf16 matmul for every new shape; bf16 fine-tuning of bert-nano on the built-in task took 44-51
ms a step on batches of every width from 3 to 128 against 12-13 on widths it had seen, and 17-30
with the widths in steps of 16). A text longer than the context is
cut at its end (for a pair, the longer text loses tokens first, as Hugging Face's
``truncation="longest_first"``); ``encode_examples`` says how many were cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.data.batching import EpochOrder, padded_width
from lmforge.errors import DataError
from lmforge.finetune.examples import Example


@dataclass
class EncodedRow:
    ids: list[int]
    types: list[int]  # segment of each token (0: first text, 1: the pair)


def _cut_longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    first, second = list(first), list(second)
    while len(first) + len(second) > budget:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second


def row_builder(tokenizer, layout: str, limit: int):
    """A function (text, pair) -> (EncodedRow, was it cut) for the input ``layout``."""
    if layout == "cls_text_sep":
        cls, sep = tokenizer.cls_id, tokenizer.sep_id
        if cls is None or sep is None:
            raise DataError(
                "this run's tokenizer has no [CLS] and [SEP] tokens, which a BERT classifier reads; "
                "pretrain it on data prepared with --tokenizer wordpiece"
            )
        opening, separators = [cls], [sep]
    else:
        end = tokenizer.document_separator_id
        opening, separators = [], [] if end is None else [end]

    def build(text: str, pair: str | None) -> tuple[EncodedRow, bool]:
        first = tokenizer.encode(text)
        second = tokenizer.encode(pair) if pair is not None else None
        fixed = len(opening) + len(separators) * (1 if second is None else 2)
        budget = max(limit - fixed, 2)
        total = len(first) + (len(second) if second is not None else 0)
        if second is None:
            first = first[:budget]
        else:
            first, second = _cut_longest_first(first, second, budget)
        ids = opening + first + separators
        types = [0] * len(ids)
        if second is not None:
            ids += second + separators
            types += [1] * (len(second) + len(separators))
        if not ids:
            raise DataError(f"the text {text!r:.40} encodes to no tokens")
        return EncodedRow(ids, types), total > budget

    return build


def encode_examples(
    examples: Sequence[Example], tokenizer, layout: str, limit: int
) -> tuple[list[EncodedRow], int]:
    """(one row per example, how many texts were cut to fit ``limit`` tokens)."""
    build = row_builder(tokenizer, layout, limit)
    rows, cut = [], 0
    for example in examples:
        row, was_cut = build(example.text, example.pair)
        rows.append(row)
        cut += was_cut
    return rows, cut


def collate(
    rows: Sequence[EncodedRow], labels: Sequence[int] | None, pad_id: int, context: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``token_type_ids`` (and ``labels``); with
    ``context``, as wide as the longest row rounded up to a multiple of 16 within it."""
    width = padded_width(max(len(row.ids) for row in rows), context)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row.ids)] = torch.tensor(row.ids)
        mask[index, : len(row.ids)] = 1
        types[index, : len(row.types)] = torch.tensor(row.types)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if labels is not None:
        batch["labels"] = torch.tensor(list(labels), dtype=torch.long)
    return batch


class ShuffledBatches:
    """Epochs of the training rows in a seeded random order, ``batch_size`` at a time.

    Its state (epoch and position) resumes the order exactly; every epoch is a fresh permutation
    drawn from (seed, epoch), so no generator state needs saving.
    """

    def __init__(
        self,
        rows: Sequence[EncodedRow],
        labels: Sequence[int],
        batch_size: int,
        pad_id: int,
        seed: int,
        context: int | None = None,
    ) -> None:
        self.rows, self.labels = list(rows), list(labels)
        self.batch_size, self.pad_id, self.seed, self.context = batch_size, pad_id, seed, context
        self.order = EpochOrder(len(self.rows), seed)

    def next_batch(self) -> dict[str, torch.Tensor]:
        chosen = self.order.take(self.batch_size)
        rows, labels = [self.rows[i] for i in chosen], [self.labels[i] for i in chosen]
        return collate(rows, labels, self.pad_id, self.context)

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


def padding_id(tokenizer) -> int:
    """The pad token, else end-of-text, else 0: padded positions are masked, so any id works."""
    for candidate in (tokenizer.pad_id, tokenizer.document_separator_id):
        if candidate is not None:
            return candidate
    return 0

"""Source/target pairs -> the batches an encoder-decoder model trains on (models/protocol.py).

The decoder reads the target shifted right behind a start token and predicts it followed by the
end token (teacher forcing); sources and targets are right-padded, and padding is never scored:

    sources [[5, 6, 7], [8]]   targets [[20, 21], [22, 23, 24]]   start 1, end 2, pad 0
    -> input_ids          [[5, 6, 7], [8, 0, 0]]
       attention_mask     [[1, 1, 1], [1, 0, 0]]
       decoder_input_ids  [[1, 20, 21,    0], [1, 22, 23, 24]]
       labels             [[20, 21, 2, -100], [22, 23, 24, 2]]

The ids come from the target tokenizer (``target_special_ids``): start = bos, else eos, else cls
(WordPiece has neither); end = eos, else sep; pad = pad, else the end id (masked out anyway).

Length limits (a model's ``context_limit`` for sources, ``target_limit`` for the decoder's input):
a longer source keeps its first ``max_source_length`` tokens; a longer target keeps its first
``max_target_length`` tokens as labels, with no end token (the text does not end there, so the
model is not taught to stop there). ``on_long="refuse"`` stops instead, naming the limit, the
number of pairs over it and the longest. ``length_report`` counts them before training.

``Seq2SeqBatches`` (training) shuffles the pairs every epoch from (seed, epoch) and, by default,
batches pairs of similar length: each pool of ``pool * batch_size`` shuffled pairs is sorted by
length and cut into batches, and the batches are shuffled, so a batch wastes little on padding
while the order stays random (the fairseq / torchtext bucketing recipe). Its state is (epoch,
position), so a resumed run draws exactly the batches it would have. ``fixed_eval_batches`` is
the same validation subset at every evaluation; ``pair_batches`` visits every pair once, in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from lmforge.data.batching import padded_width
from lmforge.data.seq2seq_shards import PairSplit
from lmforge.errors import DataError, TokenizerError, UserInputError
from lmforge.models.loss import IGNORE_INDEX

OnLong = Literal["truncate", "refuse"]
DEFAULT_POOL = 50  # batches' worth of pairs sorted together: enough to group lengths, still shuffled


@dataclass(frozen=True)
class TargetIds:
    """The decoder's start token, the end of a target, and the padding id."""

    start: int
    end: int
    pad: int


def target_special_ids(tokenizer: Any) -> TargetIds:
    """Start, end and pad ids of a target tokenizer (see the module docstring for the fallbacks)."""
    start = next((i for i in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.cls_id) if i is not None), None)
    end = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    if start is None or end is None:
        raise TokenizerError(
            f"the target tokenizer ({tokenizer.kind}) has no end-of-text token (eos or sep), so a decoder "
            "could not learn where a target ends; train it with one, e.g. --special eos='</s>'"
        )
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end
    return TargetIds(start, end, pad)


def length_report(
    split: PairSplit,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    on_long: OnLong = "truncate",
    what: str = "",
) -> dict[str, int]:
    """How many sources and targets exceed the limits (and the longest of each); with
    ``on_long="refuse"`` any is a ``DataError``. ``max_target_length`` bounds the decoder input,
    which is one longer than the target (the start token)."""
    if on_long not in ("truncate", "refuse"):
        raise UserInputError(f"on_long must be 'truncate' or 'refuse'; got {on_long!r}")
    report = {"pairs": len(split)}
    for side, rows, limit, extra in (
        ("source", split.sources, max_source_length, 0),
        ("target", split.targets, max_target_length, 1),
    ):
        if limit is not None and limit < 1 + extra:
            raise UserInputError(f"the {side} length limit must be at least {1 + extra}; got {limit}")
        lengths = rows.lengths + extra
        longest = int(lengths.max()) if len(lengths) else 0
        over = int((lengths > limit).sum()) if limit is not None else 0
        report[f"longest_{side}"] = longest - extra
        report[f"{side}s_truncated"] = over
        if over and on_long == "refuse":
            model_limit = "source limit" if side == "source" else "target limit (start token included)"
            raise DataError(
                f"{over:,} of {len(split):,} {what + ' ' if what else ''}{side}s are longer than the model's "
                f"{model_limit} of {limit:,} tokens (the longest: {longest:,}); use a model with a longer "
                "context, or let them be truncated"
            )
    return report


def collate_pairs(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    ids: TargetIds,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """One batch: input_ids, attention_mask (B, S); decoder_input_ids, labels (B, T); int64."""
    if len(sources) != len(targets) or not sources:
        raise DataError(
            f"a batch needs as many targets as sources, at least one; got {len(sources)}, {len(targets)}"
        )
    source_rows = [np.asarray(row, dtype=np.int64)[:max_source_length] for row in sources]
    decoder_rows, label_rows = [], []
    for index, (source, target) in enumerate(zip(source_rows, targets)):
        target = np.asarray(target, dtype=np.int64)
        if len(source) == 0 or len(target) == 0:
            raise DataError(f"pair {index} of the batch has an empty side; a seq2seq pair needs both")
        if max_target_length is not None and len(target) + 1 > max_target_length:
            labels = target[:max_target_length]  # cut: no end token where the text goes on
        else:
            labels = np.append(target, ids.end)
        decoder_rows.append(np.concatenate([[ids.start], labels[:-1]]))
        label_rows.append(labels)
    # in steps of 16 within the limits, so that bf16's compiled matmul shapes repeat (padded_width)
    width_s = padded_width(max(len(row) for row in source_rows), max_source_length)
    width_t = padded_width(max(len(row) for row in label_rows), max_target_length)
    input_ids = np.full((len(sources), width_s), ids.pad, dtype=np.int64)
    attention_mask = np.zeros((len(sources), width_s), dtype=np.int64)
    decoder_input_ids = np.full((len(sources), width_t), ids.pad, dtype=np.int64)
    labels = np.full((len(sources), width_t), IGNORE_INDEX, dtype=np.int64)
    for i, (source, decoder, label) in enumerate(zip(source_rows, decoder_rows, label_rows)):
        input_ids[i, : len(source)] = source
        attention_mask[i, : len(source)] = 1
        decoder_input_ids[i, : len(decoder)] = decoder
        labels[i, : len(label)] = label
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }
    out = {}
    for name, array in batch.items():
        tensor = torch.from_numpy(array)
        if device is not None:
            device = torch.device(device)
            tensor = tensor.to(device, non_blocking=device.type == "cuda")
        out[name] = tensor
    return out


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1; got {batch_size}")


def _pair_lengths(
    split: PairSplit, max_source_length: int | None, max_target_length: int | None
) -> np.ndarray:
    sources = (
        split.sources.lengths
        if max_source_length is None
        else np.minimum(split.sources.lengths, max_source_length)
    )
    targets = split.targets.lengths + 1
    if max_target_length is not None:
        targets = np.minimum(targets, max_target_length)
    return np.maximum(sources, targets)  # the wider of the two pads the batch the most


class Seq2SeqBatches:
    """The trainer's batch source over pairs: ``next_batch()`` -> the dict of ``collate_pairs``.

    ``truncated`` says how many training sources and targets exceed the limits (``length_report``).
    In DDP give each rank its own seed (e.g. ``seed + rank``).
    """

    def __init__(
        self,
        split: PairSplit,
        batch_size: int,
        ids: TargetIds,
        *,
        seed: int = 0,
        max_source_length: int | None = None,
        max_target_length: int | None = None,
        on_long: OnLong = "truncate",
        by_length: bool = True,
        pool: int = DEFAULT_POOL,
        device: torch.device | str | None = None,
    ) -> None:
        _check_batch_size(batch_size)
        if len(split) == 0:
            raise DataError("the training split holds no pairs")
        self.truncated = length_report(split, max_source_length, max_target_length, on_long, "training")
        self.split, self.batch_size, self.ids, self.seed = split, batch_size, ids, seed
        self.limits = (max_source_length, max_target_length)
        self.by_length, self.pool, self.device = by_length, max(pool, 1), device
        self.lengths = _pair_lengths(split, max_source_length, max_target_length)
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches()

    def _epoch_batches(self) -> list[np.ndarray]:
        """This epoch's batches of pair indices, from (seed, epoch) alone."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.split), generator=generator).numpy()
        if not self.by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches = []
        span = self.batch_size * self.pool
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.position == len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches()
        chosen = self._batches[self.position]
        self.position += 1
        return collate_pairs(
            [self.split.sources[i] for i in chosen],
            [self.split.targets[i] for i in chosen],
            self.ids,
            *self.limits,
            device=self.device,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches()


def pair_batches(
    split: PairSplit,
    batch_size: int,
    ids: TargetIds,
    *,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """Every pair exactly once, in order, ``batch_size`` at a time: summing the loss and the
    count of labels over all batches gives the split's exact mean loss. In DDP each rank takes
    every ``world_size``-th pair."""
    _check_batch_size(batch_size)
    indices = np.arange(rank, len(split), world_size)
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        yield collate_pairs(
            [split.sources[i] for i in chosen],
            [split.targets[i] for i in chosen],
            ids,
            max_source_length,
            max_target_length,
            device=device,
        )


def fixed_eval_batches(
    split: PairSplit,
    batch_size: int,
    ids: TargetIds,
    num_batches: int,
    *,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The validation batches of every evaluation during training: at most ``num_batches *
    batch_size`` pairs spread evenly over the split (no randomness, so runs compare), batched by
    length."""
    from lmforge.data.batching import evenly_spread

    _check_batch_size(batch_size)
    if num_batches < 1:
        raise UserInputError(f"num_batches must be at least 1; got {num_batches}")
    chosen = np.asarray(evenly_spread(range(len(split)), num_batches * batch_size), dtype=np.int64)
    lengths = _pair_lengths(split, max_source_length, max_target_length)
    chosen = chosen[np.argsort(lengths[chosen], kind="stable")]
    return [
        collate_pairs(
            [split.sources[i] for i in chosen[start : start + batch_size]],
            [split.targets[i] for i in chosen[start : start + batch_size]],
            ids,
            max_source_length,
            max_target_length,
        )
        for start in range(0, len(chosen), batch_size)
    ]

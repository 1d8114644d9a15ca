"""What the trainer minimises: an objective maps (model, batch) to (summed loss, target count).

    loss_sum, n_targets = objective(model, {"input_ids": x, "labels": y})
    gradient of one optimizer step = d/dθ [ sum of loss_sum over its micro-batches
                                           / sum of n_targets over them (and over ranks) ]

Returning a *sum* and a *count* rather than a mean is what lets the trainer normalise by the
targets of the whole optimizer step, so padding or uneven micro-batches never reweight examples.
Each training objective is one small function of this shape: the causal and masked LM loss
(labels already say which positions count), and later classification, SFT, a reward model's
pairwise loss or DPO's. An objective that carries state between batches (truncated BPTT) also
has ``state_dict()`` / ``load_state_dict()``; the trainer saves it with the rest for an exact resume.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from lmforge.models.loss import IGNORE_INDEX
from lmforge.train import distributed


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]: ...


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """Label positions that count (not IGNORE_INDEX): what a token-level loss is averaged over."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


def language_model_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over labels != IGNORE_INDEX: the causal LM loss, and the masked LM loss
    when the batch's labels hold only the masked positions (data/masking.py)."""
    return model(**batch, reduction="sum").loss, count_targets(batch)


def masked_language_model_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``language_model_loss`` for a masked model, with the vocabulary-wide head run only at the
    masked positions (``labelled_logits_only``, models/protocol.py): the same sum, a seventh of
    the head's work."""
    return model(**batch, reduction="sum", labelled_logits_only=True).loss, count_targets(batch)


class CarriedStateLoss:
    """The language-model loss over consecutive windows of parallel streams (data/streams.py),
    each starting from the recurrent state the previous window of its stream ended with.

    Batches carry ``carry_state`` (B,): True where a row continues the previous batch's row. The
    state is detached between windows (the truncation of truncated BPTT) and reset to zeros for
    rows that start a stream. It lives here, not in the model, so the model stays a pure function
    of its inputs, and it is saved with the training state for an exact resume.
    """

    def __init__(self) -> None:
        self.state: tuple[torch.Tensor, ...] | None = None

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        batch = dict(batch)
        carry = batch.pop("carry_state")
        output = model(**batch, state=self._start(carry, batch["input_ids"]), reduction="sum")
        self.state = tuple(s.detach() for s in output.state)
        return output.loss, count_targets(batch)

    def _start(self, carry: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The stored state with rows that start a new stream zeroed; None (zeros) when nothing fits."""
        stored = self.state
        if stored is None or stored[0].shape[1] != carry.shape[0] or stored[0].device != input_ids.device:
            return None
        keep = carry.to(stored[0].dtype)[None, :, None]  # (1, B, 1)
        return tuple(s * keep for s in stored)

    def state_dict(self) -> dict[str, Any]:
        """The state of every stream: under data parallelism each rank carries its own rows of the
        global batch (``distributed.RankSlice``), gathered here so a resume at any number of
        processes continues every stream (a collective call: every rank makes it)."""
        if self.state is None:
            return {"carried_state": None}
        return {"carried_state": [distributed.gather_rows(s, dim=1).cpu() for s in self.state]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        saved = state.get("carried_state")
        if saved is None:
            self.state = None
            return
        rows = [
            s.tensor_split(distributed.data_parallel_size(), dim=1)[distributed.data_parallel_rank()]
            for s in saved
        ]
        self.state = tuple(s.to(device) for s in rows)

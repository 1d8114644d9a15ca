"""Data mixtures: several prepared datasets, each with a weight that decides what a batch holds.

    --data web/:0.6 books/:0.3 code/:0.1
    -> every row of every batch is drawn from web with probability 0.6, books 0.3, code 0.1,
       whatever the sizes of the three (GPT-3's Table 2.2: weights, not sizes, set the mix; a
       small source with a large weight is read for several epochs, a large one for a fraction)

A mixture entry is a directory written by ``lmforge prepare``, optionally followed by
``:WEIGHT`` (a trailing ``:<number>``; a directory whose own name ends in ``:<number>`` is
written with a trailing slash, ``run:3/``). The sources must share one tokenizer (the recipe
compares their fingerprints); weights must be positive and finite and are normalised to sum to 1.
A single directory with no weight is not a mixture: it trains exactly as ``--data DIR`` always did.

The draw, per batch, from one ``torch.Generator`` (so the batch depends only on the seed and the
state, never on the process that draws it):

    sources = torch.multinomial(probabilities, batch_size, replacement=True)   # (B,) source per row
    then, source by source in order, uniform window starts for that source's rows (``random_windows``)

Over many batches each source's share of rows is Binomial(rows, weight) / rows, so it converges to
its weight; ``tokens_seen`` counts the tokens read from each source, and ``epochs = tokens_seen /
train tokens`` is the figure Table 2.2 reports.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge.bounds import split_weight
from lmforge.data.batching import _check_tokens, _to_device
from lmforge.errors import UserInputError

if TYPE_CHECKING:
    from lmforge.tokenizers import Tokenizer


@dataclass(frozen=True)
class MixtureEntry:
    """One source of a mixture: its directory, the weight as given and normalised, a short name."""

    path: Path
    given_weight: float | None  # None: the single source of a plain ``--data DIR``
    weight: float  # normalised: the weights of a mixture sum to 1
    name: str  # for the summary and the per-source validation losses (val_loss_<name>)

    @property
    def spec(self) -> str:
        """The entry as ``--data`` takes it again (what ``--resume`` reads back from config.json)."""
        return str(self.path) if self.given_weight is None else f"{self.path}:{self.given_weight:g}"


def parse_mixture(specs: str | Path | list[str | Path]) -> list[MixtureEntry]:
    """``["a/:0.7", "b/:0.3"]`` -> entries with normalised weights; one line naming what is wrong.

    One entry may omit its weight (a plain dataset); in a mixture of several every entry needs one,
    so that the mix is what the user wrote rather than a default the user did not see.
    """
    items = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not items:
        raise UserInputError("--data needs a prepared dataset directory (or several, each DIR:WEIGHT)")
    parsed: list[tuple[Path, float | None]] = []
    for item in items:
        path, weight_text = split_weight(str(item))
        weight = None
        if weight_text is not None:
            weight = float(weight_text)
            if not math.isfinite(weight) or weight <= 0:
                raise UserInputError(
                    f"--data {item}: a mixture weight must be a positive finite number; got {weight_text}"
                )
        parsed.append((Path(path), weight))
    if len(parsed) > 1 and any(weight is None for _, weight in parsed):
        bare = next(str(path) for path, weight in parsed if weight is None)
        raise UserInputError(
            f"--data {bare} has no weight: in a mixture give every directory one, e.g. "
            f"--data {parsed[0][0]}:0.5 {parsed[1][0]}:0.5 (weights are normalised to sum to 1)"
        )
    seen: dict[Path, str] = {}
    for path, _ in parsed:
        if path.resolve() in seen:
            raise UserInputError(f"--data names {path} twice; give each dataset once, with its whole weight")
        seen[path.resolve()] = str(path)
    total = sum(weight or 1.0 for _, weight in parsed)
    names = _names([path for path, _ in parsed])
    return [
        MixtureEntry(path, weight, (weight or 1.0) / total, name)
        for (path, weight), name in zip(parsed, names)
    ]


def _names(paths: list[Path]) -> list[str]:
    """Short names from the directories' own names (letters, digits, - and _), made unique."""
    names: list[str] = []
    for index, path in enumerate(paths):
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", path.resolve().name).strip("_") or f"source{index}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def check_one_tokenizer(entries: list[MixtureEntry], datasets: list[Any], fingerprints: list[str]) -> None:
    """Refuse sources tokenized differently (``fingerprints``: of each one's tokenizer directory): the
    same id would mean different text in different rows of one batch."""
    for entry, fingerprint in zip(entries[1:], fingerprints[1:]):
        if fingerprint != fingerprints[0]:
            raise UserInputError(
                f"--data {entry.path} was tokenized with another tokenizer than {entries[0].path}; a mixture "
                f"needs one: prepare each source with --tokenizer {datasets[0].tokenizer_dir}"
            )


def describe_mixture(entries: list[MixtureEntry], datasets: list[Any], fingerprints: list[str]) -> list[dict]:
    """What config.json records of a mixture: enough for ``--resume`` to read the same sources with
    the same weights, and to notice a source re-prepared with another tokenizer."""
    return [
        {
            "path": str(entry.path.resolve()),
            "weight": entry.given_weight,
            "normalised_weight": entry.weight,
            "name": entry.name,
            "tokenizer_fingerprint": fingerprint,
            "train_tokens": data.num_tokens("train"),
            "val_tokens": data.num_tokens("val"),
        }
        for entry, data, fingerprint in zip(entries, datasets, fingerprints)
    ]


def sources_summary(
    entries: list[MixtureEntry], datasets: list[Any], tokens_seen: list[int], val: dict[str, float]
) -> list[dict]:
    """Per source, as Table 2.2 of GPT-3: its weight, tokens read, and epochs (tokens read / its train
    tokens), with its last validation loss (``val["loss_<name>"]``) when it had rows in the fixed set."""
    return [
        {
            "name": entry.name,
            "path": str(entry.path),
            "weight": entry.weight,
            "tokens": seen,
            "train_tokens": data.num_tokens("train"),
            "epochs": seen / data.num_tokens("train"),
            "val_loss": val.get(f"loss_{entry.name}"),
        }
        for entry, data, seen in zip(entries, datasets, tokens_seen)
    ]


def mixed_windows(
    splits: list[np.ndarray],
    probabilities: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, source): ``batch_size`` windows, row i from ``splits[source[i]]`` with probability
    ``probabilities[source[i]]``; x, y int64 (B, T) as ``random_windows`` gives, source int64 (B,)."""
    from lmforge.data.batching import random_windows

    source = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
    x = torch.empty(batch_size, block_size, dtype=torch.int64)
    y = torch.empty(batch_size, block_size, dtype=torch.int64)
    for index, data in enumerate(splits):
        rows = (source == index).nonzero().squeeze(1)
        if len(rows):
            x[rows], y[rows] = random_windows(data, len(rows), block_size, generator)
    return x, y, source


class MixtureSampler:
    """The trainer's batch source over a mixture: ``next_batch()`` -> {input_ids, labels}.

    Causal rows are windows and their shifted targets (as ``WindowSampler``); given a
    ``tokenizer``, rows are masked-LM rows ([CLS] window [SEP], 15% masked, as
    ``MaskedWindowSampler``). The state is the generator and the tokens read from each source,
    so ``state_dict()`` resumes the exact batch stream and the per-source counts.
    """

    def __init__(
        self,
        splits: list[np.ndarray],
        weights: list[float],
        batch_size: int,
        block_size: int,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if len(splits) != len(weights) or not splits:
            raise UserInputError("a mixture needs one weight per source, and at least one source")
        self.masked = tokenizer is not None
        self.window = block_size - 2 if self.masked else block_size  # data tokens per row
        if self.masked:
            from lmforge.data.masking import _special_ids

            if block_size < 3:
                raise UserInputError(
                    f"a masked-LM window needs block_size >= 3 ([CLS] x [SEP]); got {block_size}"
                )
            self.mask_id, self.cls_id, self.sep_id = _special_ids(tokenizer)
            self.special_ids, self.vocab_size = tokenizer.all_special_ids, tokenizer.vocab_size
        for data in splits:
            _check_tokens(data, self.window + 1, self.window)
        self.splits, self.batch_size, self.device = splits, batch_size, device
        self.probabilities = torch.tensor(weights, dtype=torch.float64)
        self.probabilities /= self.probabilities.sum()
        self.generator = torch.Generator().manual_seed(seed)
        self.tokens_seen = [0] * len(splits)

    def next_batch(self) -> dict[str, torch.Tensor]:
        x, y, source = mixed_windows(
            self.splits, self.probabilities, self.batch_size, self.window, self.generator
        )
        for index, count in enumerate(torch.bincount(source, minlength=len(self.splits)).tolist()):
            self.tokens_seen[index] += count * self.window
        if self.masked:
            x, y = self._mask(x)
        return {"input_ids": _to_device(x, self.device), "labels": _to_device(y, self.device)}

    def _mask(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from lmforge.data.masking import _wrap, mask_tokens

        ids = _wrap(windows, self.cls_id, self.sep_id)
        return mask_tokens(ids, self.mask_id, self.vocab_size, self.special_ids, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "tokens_seen": list(self.tokens_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("tokens_seen", ())) != len(self.splits):
            raise UserInputError(
                f"the saved data position is for a mixture of {len(state.get('tokens_seen', ()))} sources, "
                f"not {len(self.splits)}; resume with the run's own --data"
            )
        self.generator.set_state(state["generator"])
        self.tokens_seen = [int(n) for n in state["tokens_seen"]]


def mixed_eval_batches(
    splits: list[np.ndarray],
    weights: list[float],
    batch_size: int,
    block_size: int,
    num_batches: int,
    seed: int,
    tokenizer: Tokenizer | None = None,
) -> list[list[dict[str, torch.Tensor]]]:
    """A fixed validation set: ``num_batches`` mixture batches of the val splits (drawn as in
    training, seeded by ``seed``), each cut by source; returns, per source, its sub-batches.

    The overall validation loss sums over all of them (so it is the mixture's loss, each source
    weighted as in training), and each source's own list gives its ``val_loss_<name>``.
    """
    sampler = MixtureSampler(splits, weights, batch_size, block_size, seed, tokenizer)
    per_source: list[list[dict[str, torch.Tensor]]] = [[] for _ in splits]
    for _ in range(num_batches):
        x, y, source = mixed_windows(
            splits, sampler.probabilities, batch_size, sampler.window, sampler.generator
        )
        if sampler.masked:
            x, y = sampler._mask(x)
        for index in range(len(splits)):
            rows = (source == index).nonzero().squeeze(1)
            if len(rows):
                per_source[index].append({"input_ids": x[rows], "labels": y[rows]})
    return per_source

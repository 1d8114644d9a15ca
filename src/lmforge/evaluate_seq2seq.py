"""``lmforge evaluate`` for a seq2seq run: how well its model writes the targets of held-out sources.

    result = evaluate_seq2seq("runs/copy", ["data/copy"], split="val", num_beams=1)
    -> {"loss": 0.004, "perplexity": 1.004,            teacher-forced, per target token (end included)
        "bleu": 99.8, "chrf": 99.9, "exact_match": 99.7, of the decoded outputs against the references
        "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:char|smooth:exp|version:2.6.0", ...
        "pairs": 300, "target_tokens": 1978, "decoding": "greedy"}

Two measures of one model. The loss (and perplexity = exp(loss)) scores the reference target token
by token given the source and the reference prefix (teacher forcing), exactly as training's
validation did. BLEU, chrF (sacrebleu, corpus level, with signatures: data/seq2seq_metrics.py) and
exact match score what the model writes on its own: greedy decoding, or beam search with
``num_beams`` > 1, from the decoder's start token until the end token or ``max_new_tokens``.

The pairs: a prepared seq2seq dataset's split (its ids, which must come from the run's tokenizers;
the references of the val split are its stored texts, those of the train split the decoded ids), a
built-in task (``builtin:copy?...``: the split ``prepare`` would make with its default
``--val-fraction`` and ``--seed``, so a run prepared from the same spec is scored on pairs it never
saw), or raw pairs (.jsonl, .tsv, two parallel files: every pair); raw text is tokenized with the
run's tokenizers. ``max_pairs`` keeps that many, spread evenly over the split.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.run import Run

DECODE_BATCH = 64  # sources decoded together (beam search multiplies the rows by num_beams)
PREPARE_VAL_FRACTION, PREPARE_SEED = 0.1, 0  # `lmforge prepare --task seq2seq`'s defaults


@dataclass
class EvalPairs:
    """The pairs to score: token ids of both sides, the reference texts, and what they are."""

    sources: list[list[int]]
    targets: list[list[int]]
    references: list[str]
    described: str


def pairs_for_evaluation(
    data: Sequence[str],
    run: Run,
    source_tokenizer: Any,
    target_tokenizer: Any,
    *,
    split: str = "val",
    source_field: str = "source",
    target_field: str = "target",
    errors: str = "strict",
) -> EvalPairs:
    """The pairs of a prepared seq2seq dataset's split, a built-in task's split, or raw pair files."""
    from lmforge.data.seq2seq_shards import TASK, dataset_task

    if split not in ("train", "val"):
        raise UserInputError(f"--split must be train or val; got {split!r}")
    data = [str(spec) for spec in data]
    if len(data) == 1 and Path(data[0]).is_dir() and (Path(data[0]) / "meta.json").exists():
        task = dataset_task(data[0])
        if task != TASK:
            raise UserInputError(
                f"{data[0]} is a language-model dataset (one token stream), and {run.path} holds a seq2seq "
                "model: evaluate it on source/target pairs (a dataset from `lmforge prepare --task "
                "seq2seq`, a .jsonl/.tsv file of pairs or a builtin task)"
            )
        return _prepared_pairs(Path(data[0]), run, target_tokenizer, split)
    from lmforge.data.pairs import read_pairs, resolve_pairs

    source = resolve_pairs(data, source_field, target_field)
    pairs = read_pairs(source, source_field, target_field, errors=errors)
    described = " ".join(data)
    if source.kind == "builtin":
        from lmforge.data.seq2seq_prepare import split_pairs

        train, val, _ = split_pairs(pairs, PREPARE_VAL_FRACTION, PREPARE_SEED)
        pairs, described = (val if split == "val" else train), f"{described} ({split} split)"
    return EvalPairs(
        [source_tokenizer.encode(pair.source) for pair in pairs],
        [target_tokenizer.encode(pair.target) for pair in pairs],
        [pair.target for pair in pairs],
        described,
    )


def _prepared_pairs(path: Path, run: Run, target_tokenizer: Any, split: str) -> EvalPairs:
    from lmforge.data.seq2seq_shards import load_seq2seq
    from lmforge.recipe_seq2seq import run_tokenizer_fingerprint, tokenizer_fingerprint

    dataset = load_seq2seq(path)
    if tokenizer_fingerprint(dataset) != run_tokenizer_fingerprint(run):
        raise CheckpointError(
            f"{path} was prepared with other tokenizers than {run.path}; prepare the pairs with the run's "
            f"(--tokenizer {run.tokenizer_dir}), or pass the raw pairs file instead"
        )
    pairs = dataset.pairs(split)
    sources = [row.tolist() for row in (pairs.sources[i] for i in range(len(pairs)))]
    targets = [row.tolist() for row in (pairs.targets[i] for i in range(len(pairs)))]
    if split == "val":
        references = [target for _, target in dataset.texts("val")]
    else:  # only the val split keeps its text; the ids read back are the reference
        references = [target_tokenizer.decode(ids) for ids in targets]
    return EvalPairs(sources, targets, references, f"{path} ({split} split)")


def _keep(pairs: EvalPairs, max_pairs: int | None) -> EvalPairs:
    from lmforge.data.batching import evenly_spread

    if not pairs.sources:
        raise DataError(f"{pairs.described} holds no pairs; there is nothing to evaluate")
    if max_pairs is None or max_pairs >= len(pairs.sources):
        return pairs
    chosen = evenly_spread(range(len(pairs.sources)), max_pairs)
    return EvalPairs(
        [pairs.sources[i] for i in chosen],
        [pairs.targets[i] for i in chosen],
        [pairs.references[i] for i in chosen],
        f"{pairs.described}, {max_pairs:,} of {len(pairs.sources):,} pairs",
    )


def evaluate_seq2seq(
    checkpoint: str | Path,
    data: Sequence[str],
    *,
    split: str = "val",
    weights: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    max_pairs: int | None = None,
    source_field: str = "source",
    target_field: str = "target",
    errors: str = "strict",
    progress: bool = True,
    examples: int = 0,
) -> dict[str, Any]:
    """Loss, perplexity, BLEU, chrF and exact match of a seq2seq run on ``data`` (module docstring);
    ``examples`` > 0 adds that many {"source", "output", "reference"} under "examples"."""
    from lmforge.data.seq2seq_metrics import seq2seq_scores
    from lmforge.hardware import resolve_device
    from lmforge.models.loss import perplexity

    run = Run.open(checkpoint)
    model = run.load_model(weights)
    if model.lm_kind != "seq2seq":
        raise UserInputError(f"{run.path} holds a {model.lm_kind} language model, not a seq2seq model")
    resolved = resolve_device(device)
    model.to(resolved)
    target_tokenizer, source_tokenizer = run.load_tokenizer(), run.load_source_tokenizer()
    pairs = pairs_for_evaluation(
        data,
        run,
        source_tokenizer,
        target_tokenizer,
        split=split,
        source_field=source_field,
        target_field=target_field,
        errors=errors,
    )
    pairs = _keep(pairs, max_pairs)
    ids = _target_ids(model, target_tokenizer)
    loss, count = teacher_forced_loss(model, pairs, ids, batch_size, resolved)
    outputs = decode_sources(
        model,
        pairs.sources,
        ids,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        device=resolved,
        progress=progress,
    )
    hypotheses = [target_tokenizer.decode(output) for output in outputs]
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        **seq2seq_scores(hypotheses, pairs.references),
        "pairs": len(pairs.sources),
        "target_tokens": count,
        "decoding": "greedy" if num_beams == 1 else f"beam search, {num_beams} beams",
        "data": pairs.described,
        **({"examples": _examples(source_tokenizer, pairs, hypotheses, examples)} if examples > 0 else {}),
    }


def _examples(tokenizer: Any, pairs: EvalPairs, hypotheses: list[str], count: int) -> list[dict[str, str]]:
    from lmforge.data.batching import evenly_spread

    return [
        {
            "source": tokenizer.decode(pairs.sources[i]),
            "output": hypotheses[i],
            "reference": pairs.references[i],
        }
        for i in evenly_spread(range(len(hypotheses)), count)
    ]


def _target_ids(model: Any, tokenizer: Any) -> Any:
    """The decoder's start id (the model's own), the end and the pad ids of the target tokenizer."""
    from lmforge.data.seq2seq_batches import TargetIds, target_special_ids

    special = target_special_ids(tokenizer)
    return TargetIds(start=int(model.config.decoder_start_token_id), end=special.end, pad=special.pad)


@torch.no_grad()
def teacher_forced_loss(
    model: Any, pairs: EvalPairs, ids: Any, batch_size: int, device: torch.device
) -> tuple[float, int]:
    """(loss per target token, target tokens) over every pair, batched by length as in training."""
    from lmforge.data.seq2seq_batches import collate_pairs
    from lmforge.train.evaluation import mean_loss

    limits = (getattr(model, "context_limit", None), getattr(model, "target_limit", None))
    order = sorted(range(len(pairs.sources)), key=lambda i: (len(pairs.sources[i]), len(pairs.targets[i])))
    batches = (
        collate_pairs(
            [pairs.sources[i] for i in order[start : start + batch_size]],
            [pairs.targets[i] for i in order[start : start + batch_size]],
            ids,
            *limits,
        )
        for start in range(0, len(order), batch_size)
    )
    return mean_loss(model, batches, device=device)


@torch.no_grad()
def decode_sources(
    model: Any,
    sources: Sequence[Sequence[int]],
    ids: Any,
    *,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> list[list[int]]:
    """The model's output ids for every source (end token left out), in the order given: greedy,
    or beam search with ``num_beams`` > 1 (the highest-scoring finished hypothesis). Sources are decoded ``DECODE_BATCH`` at a time, sorted
    by length (little padding); ``max_new_tokens`` None allows 2 x the longest source of a batch
    + 10, within the model's target limit."""
    from tqdm.auto import tqdm

    from lmforge.generate import GenerationConfig, generate
    from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources

    if num_beams < 1:
        raise UserInputError(f"--num-beams must be at least 1; got {num_beams}")
    source_limit, target_limit = getattr(model, "context_limit", None), getattr(model, "target_limit", None)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[list[int]] = [[] for _ in sources]
    bar = tqdm(
        total=len(sources),
        unit="pair",
        desc="decoding",
        disable=not (progress and sys.stderr.isatty()),
        leave=False,
    )
    try:
        for start in range(0, len(order), DECODE_BATCH):
            chosen = order[start : start + DECODE_BATCH]
            rows = [list(sources[i])[:source_limit] for i in chosen]
            budget = max_new_tokens if max_new_tokens is not None else 2 * max(len(r) for r in rows) + 10
            if target_limit is not None:
                budget = min(budget, target_limit - 1)
            config = GenerationConfig(
                strategy="beam" if num_beams > 1 else "greedy",
                num_beams=num_beams,
                max_new_tokens=budget,
                eos_id=ids.end,
                # stop when no running beam can beat the finished ones (Hugging Face's default), not at
                # the first num_beams finished: a confident model's runner-up candidates are often an
                # early end token, and stopping on them returns a cut output whose score is far worse
                early_stopping=False,
            )
            source_ids, source_mask = pad_sources(rows, ids.pad, device=device)
            step_model = EncoderDecoderStepModel(model, source_ids, source_mask)
            results = generate(step_model, [[ids.start]] * len(rows), config)
            for index, result in zip(chosen, results):
                outputs[index] = list(result[0].ids)
            bar.update(len(chosen))
    finally:
        bar.close()
    return outputs

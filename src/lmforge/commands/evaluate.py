"""``lmforge evaluate``: loss and perplexity of a trained model over a whole split or text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from lmforge.errors import CheckpointError, DataError, UserInputError


def _token_stream(data: list[str], run, tokenizer, split: str, text_field: str):
    """Token ids to score: a prepared split, or raw text tokenized with the run's tokenizer."""
    import numpy as np

    from lmforge.run import directory_fingerprint

    if len(data) == 1 and Path(data[0]).is_dir() and (Path(data[0]) / "meta.json").exists():
        from lmforge.data.shards import load_prepared

        dataset = load_prepared(data[0])
        if directory_fingerprint(dataset.tokenizer_dir) != directory_fingerprint(run.tokenizer_dir):
            raise CheckpointError(
                f"{data[0]} was prepared with a different tokenizer than {run.path}; re-run `lmforge prepare` "
                f"with --tokenizer {run.tokenizer_dir}, or pass raw text instead"
            )
        if split not in ("train", "val"):
            raise UserInputError(f"--split must be train or val; got {split!r}")
        return dataset.split(split), f"{data[0]} ({split} split)"
    from lmforge.data.corpora import iter_texts

    separator = tokenizer.document_separator_id
    ids: list[int] = []
    for text in iter_texts(data, text_field=text_field):
        ids.extend(tokenizer.encode(text))
        if separator is not None:
            ids.append(separator)
    if separator is not None and ids:
        ids.pop()  # nothing follows the last document
    return np.asarray(ids, dtype=np.int64), " ".join(data)


def evaluate(
    *,
    checkpoint: Path,
    data: list[str],
    split: str = "val",
    stride: int | None = None,
    block_size: int | None = None,
    batch_size: int = 8,
    weights: Literal["auto", "best", "last"] = "auto",
    text_field: str = "text",
    device: str = "auto",
    as_json: bool = False,
) -> dict:
    """Loss and perplexity of a run's model over every token of a split or a text source.

    Perplexity = exp(mean cross-entropy per token). Windows do not overlap by default, so a
    token early in a window sees little context; --stride S slides windows by S tokens and
    scores only the last S of each, giving every token nearly a full context (slower).
    Recurrent and window models read inputs of any length: each window starts from a zero
    state, and --block-size may exceed their training window.

    Args:
        checkpoint: a run directory written by `lmforge pretrain`.
        data: a prepared dataset directory, or raw text sources (files, directories, globs,
            .jsonl, tables, corpus names, URLs, hf:NAME, builtin:NAME) tokenized with the run's
            tokenizer.
        split: which split of a prepared dataset: val or train.
        stride: slide windows by this many tokens (default: block size, no overlap).
        block_size: window length (default: the model's block size; for gpt also the maximum).
        batch_size: windows per forward pass.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        text_field: the field (.jsonl) or column (hf:, .parquet, .csv, .arrow) holding the text.
        device: auto, cpu, cuda.

    Examples:
        lmforge evaluate --checkpoint runs/shakespeare --data data/shakespeare-char
        lmforge evaluate --checkpoint runs/shakespeare --data notes.txt --stride 32 --json
        lmforge evaluate --checkpoint runs/shakespeare --data wikitext-2-test
    """
    import numpy as np

    from lmforge.data.batching import sequential_windows
    from lmforge.models.registry import context_limit
    from lmforge.run import Run
    from lmforge.train.evaluation import mean_loss
    from lmforge.train.trainer import resolve_device

    run = Run.open(checkpoint)
    model = run.load_model(weights)
    tokenizer = run.load_tokenizer()
    if model.family == "ngram":  # counts, not a network: score the whole stream at once
        tokens, described = _token_stream(data, run, tokenizer, split, text_field)
        if len(tokens) < 2:
            raise DataError(
                f"{described} holds {len(tokens)} tokens; at least 2 are needed to score a prediction"
            )
        logprobs = model.logprobs(np.asarray(tokens))[1:]  # the tokens a windowed model scores
        return _report(float(-logprobs.mean()), len(logprobs), described, as_json)
    context = context_limit(model)
    block_size = block_size or model.config.block_size
    if context is not None and block_size > context:
        raise UserInputError(
            f"--block-size {block_size} is larger than the model's context of {context} tokens"
        )
    if stride is not None and not 0 < stride <= block_size:
        raise UserInputError(f"--stride must be between 1 and the block size {block_size}; got {stride}")
    tokens, described = _token_stream(data, run, tokenizer, split, text_field)
    if len(tokens) < 2:
        raise DataError(
            f"{described} holds {len(tokens)} tokens; at least 2 are needed to score a prediction"
        )
    block_size = min(block_size, len(tokens) - 1)
    device = resolve_device(device)
    model.to(device)
    windows = sequential_windows(tokens, block_size, batch_size=batch_size, stride=stride)
    loss, count = mean_loss(model, windows, device)
    return _report(loss, count, described, as_json)


def _report(loss: float, count: int, described: str, as_json: bool) -> dict:
    from lmforge.train.evaluation import perplexity

    result = {"loss": loss, "perplexity": perplexity(loss), "tokens": count}
    if as_json:
        print(json.dumps(result))
    else:
        print(
            f"{described}: {count:,} tokens scored, loss {loss:.4f} nats/token, perplexity {result['perplexity']:.3f}"
        )
    return result

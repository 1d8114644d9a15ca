"""``lmforge evaluate``: loss and perplexity of a trained model over a whole split or text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, POSITIVE, RUN_DIR, SOURCES, Bounds, Text
from lmforge.commands._json import print_json
from lmforge.errors import DataError


def evaluate(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    data: Annotated[list[str], SOURCES],
    split: Literal["val", "train"] = "val",
    stride: Annotated[int | None, POSITIVE] = None,
    block_size: Annotated[int | None, POSITIVE] = None,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 8,
    weights: Literal["auto", "best", "last"] = "auto",
    text_field: Annotated[str, Text(what="a field name")] = "text",
    errors: Literal["strict", "replace"] = "strict",
    device: Annotated[str, DEVICE] = "auto",
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
        errors: bytes that are not UTF-8: stop and say where (strict), or read them as U+FFFD (replace).
        device: auto, cpu, cuda.

    Examples:
        lmforge evaluate --checkpoint runs/stdlib --data data/stdlib-char
        lmforge evaluate --checkpoint runs/stdlib --data my_notes.txt --stride 32 --json
        lmforge evaluate --checkpoint runs/stdlib --data wikitext-2-test
    """
    from lmforge.inference import check_window, evaluation_tokens, load_for_inference, stream_loss

    loaded = load_for_inference(checkpoint, causal_for="lmforge evaluate", weights=weights, device=device)
    window = check_window(loaded.model, block_size, stride)  # None: scored as one stream (n-gram)
    tokens, described = evaluation_tokens(data, loaded.run, loaded.tokenizer, split, text_field, errors)
    if len(tokens) < 2:
        raise DataError(
            f"{described} holds {len(tokens)} tokens; at least 2 are needed to score a prediction"
        )
    loss, count = stream_loss(
        loaded.model, tokens, block_size=window, stride=stride, batch_size=batch_size, device=loaded.device
    )
    return _report(loss, count, described, as_json)


def _report(loss: float, count: int, described: str, as_json: bool) -> dict:
    from lmforge.train.evaluation import perplexity

    result = {"loss": loss, "perplexity": perplexity(loss), "tokens": count}
    if as_json:
        print_json(result)
    else:
        print(
            f"{described}: {count:,} tokens scored, loss {loss:.4f} nats/token, perplexity {result['perplexity']:.3f}"
        )
    return result

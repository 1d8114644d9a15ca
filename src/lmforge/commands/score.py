"""``lmforge score``: how likely a run's model finds a text: per-token probabilities, log p, perplexity."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, POSITIVE, RUN_DIR, Bounds, Text
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError

TOKEN_COLUMN = 24  # characters of a token shown in the table before it is cut with "…"


def show_token(tokenizer, token_id: int) -> str:
    """One token as a person reads it: its decoded text, quoted, with newlines and tabs escaped."""
    return json.dumps(tokenizer.decode([token_id]), ensure_ascii=False)


def score(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[str | None, Text(what="a text to score")] = None,
    source: Annotated[str | None, Text(what="a source text")] = None,
    target: Annotated[str | None, Text(what="a target text to score")] = None,
    stride: Annotated[int, POSITIVE] = 1,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 16,
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """Log-probability of a text under a run's model, token by token, and its perplexity.

    The first token is predicted from the end-of-text token (the start of a document), so
    every token of the text is scored: log p(text) = sum of ln p(token | the tokens before it),
    perplexity = exp(-log p / tokens). A text longer than a GPT's context is read in
    windows that slide by --stride tokens; 1 (the default) gives every token as much context
    as fits, a larger stride is faster. Recurrent and window models read the whole text at once.

    A seq2seq (encoder-decoder) run scores a --target given a --source instead: each target token
    given the source and the target before it, then the end token, as training scores a pair (so
    -log-prob / tokens is the model's loss on it). A source longer than the model's source limit
    keeps its first tokens (a warning says how many went); a target past its target limit is refused.

    Args:
        checkpoint: a run directory written by `lmforge pretrain` or `lmforge convert`.
        text: the text to score (a language model).
        source: a seq2seq model: the source the --target is scored for.
        target: a seq2seq model: the text to score as the source's target.
        stride: for texts longer than the context: how far each window slides (1: the most context).
        batch_size: windows per forward pass.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge score --checkpoint runs/stdlib --text "Return the number of items."
        lmforge score --checkpoint runs/stdlib --text "Return the" --json
        lmforge score --checkpoint my_seq2seq_run --source "abcdef" --target "fedcba"
    """
    from lmforge.inference import load_for_inference, score_text

    if source is not None or target is not None:
        if text is not None:
            raise UserInputError(
                "give --text (a language model) or --source and --target (a seq2seq model), not both"
            )
        if source is None or target is None:
            raise UserInputError("a seq2seq model scores a --target given a --source: give both")
        return _score_pair(checkpoint, source, target, weights=weights, device=device, as_json=as_json)
    if text is None:
        raise UserInputError("give --text (a language model) or --source and --target (a seq2seq model)")
    if not text:
        raise UserInputError("--text is empty; give the text to score")
    loaded = load_for_inference(checkpoint, causal_for="lmforge score", weights=weights, device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    context = model.context_limit  # None: the model reads any length (recurrent, window, n-gram)
    if stride < 1 or (context is not None and stride > context):
        limit = f"between 1 and the model's context of {context}" if context is not None else "at least 1"
        raise UserInputError(f"--stride must be {limit}; got {stride}")
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1; got {batch_size}")
    ids = tokenizer.encode(text)
    start = tokenizer.document_start_id
    if start is None:
        print(
            "warning: this tokenizer has no end-of-text or bos token, so the first token is context only "
            "and is not scored",
            file=sys.stderr,
        )
        if len(ids) < 2:
            raise UserInputError(
                "the text is one token and the tokenizer has no start token: nothing to score"
            )
    scores = score_text(model, ids, start_id=start, stride=stride, batch_size=batch_size)
    tokens = [
        {"token": tokenizer.decode([i]), "id": i, "prob": p} for i, p in zip(scores.token_ids, scores.probs)
    ]
    result = {
        "logprob": scores.logprob,
        "logprob_bits": scores.logprob / math.log(2),
        "perplexity": scores.perplexity,
        "tokens": tokens,
    }
    if as_json:
        print_json(result)
        return result
    print(_table(tokenizer, scores))
    after = f" after {show_token(tokenizer, start)}" if start is not None else ""
    print(
        f"{len(tokens):,} tokens{after}: log-prob {scores.logprob:.4f} nats ({result['logprob_bits']:.4f} bits), "
        f"perplexity {scores.perplexity:.4f}"
    )
    if context is not None and len(ids) + 1 > context:
        print(f"(longer than the {context}-token context: read in windows sliding by {stride})")
    return result


def _score_pair(checkpoint: Path, source: str, target: str, *, weights, device, as_json: bool) -> dict:
    """``score --source --target`` on a seq2seq run: the target's tokens, then the end token."""
    from lmforge.inference_seq2seq import encode_source, load_seq2seq, score_target

    loaded = load_seq2seq(
        checkpoint, command="lmforge score", instead="--text", weights=weights, device=device
    )
    source_ids, dropped = encode_source(source, loaded, "--source")
    if dropped:
        print(
            f"warning: the source has {len(source_ids) + dropped} tokens; keeping its first {len(source_ids)} "
            f"(the model's source limit), {dropped} dropped",
            file=sys.stderr,
        )
    tokenizer = loaded.tokenizer
    target_ids = tokenizer.encode(target)
    if not target_ids:
        raise UserInputError("--target has no tokens; give the text to score")
    scores = score_target(loaded, source_ids, target_ids)
    result = {
        "source": source,
        "source_ids": source_ids,
        "target": target,
        "logprob": scores.logprob,
        "logprob_bits": scores.logprob / math.log(2),
        "perplexity": scores.perplexity,
        "tokens": [
            {"token": tokenizer.decode([i]), "id": i, "prob": math.exp(lp), "logprob": lp}
            for i, lp in zip(scores.token_ids, scores.logprobs)
        ],
    }
    if as_json:
        print_json(result)
        return result
    print(_table(tokenizer, scores))
    print(
        f"{len(scores.token_ids):,} tokens (the target, then {show_token(tokenizer, loaded.end_id)}) given "
        f"{len(source_ids):,} source tokens: log-prob {scores.logprob:.4f} nats ({result['logprob_bits']:.4f} bits), "
        f"perplexity {scores.perplexity:.4f}"
    )
    return result


def _table(tokenizer, scores) -> str:
    shown = [show_token(tokenizer, i) for i in scores.token_ids]
    shown = [s if len(s) <= TOKEN_COLUMN else s[: TOKEN_COLUMN - 1] + "…" for s in shown]
    width = max([len("token"), *map(len, shown)])
    lines = [f"{'#':>5}  {'token':<{width}}  {'id':>6}  {'prob':>8}  {'log-prob':>9}"]
    for n, (token, token_id, logprob) in enumerate(zip(shown, scores.token_ids, scores.logprobs), 1):
        lines.append(f"{n:>5}  {token:<{width}}  {token_id:>6}  {math.exp(logprob):>8.4f}  {logprob:>9.4f}")
    return "\n".join(lines)

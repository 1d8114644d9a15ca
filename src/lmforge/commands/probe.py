"""``lmforge probe``: which of a few candidates a model finds most likely in a text's gap."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, RUN_DIR, Text
from lmforge.commands._json import print_json


def probe(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[str, Text(what="a text with ___ where a candidate goes")],
    candidates: Annotated[str, Text(what="two or more candidates separated by commas")],
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """Rank candidates for the ___ of a text by the model's probability: what pretraining taught it.

    A masked model (BERT) scores each candidate by its pseudo-log-likelihood: the candidate's
    tokens masked one at a time, the rest of the text visible (Salazar et al. 2020). A causal
    model (GPT, LSTM, n-gram...) scores the log-probability of the whole filled text. The
    probabilities are a softmax over the candidates' scores, so the ranking doubles as zero-shot
    classification ("This review is ___." with "positive,negative").

    Args:
        checkpoint: a run directory written by `lmforge pretrain` or `lmforge convert`.
        text: the text, with one ___ where a candidate goes.
        candidates: the candidates, separated by commas ("Palo Alto,Boston,Paris").
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge probe --checkpoint runs/stdlib --text "Return the ___ of items." --candidates "number,cat"
        lmforge probe --checkpoint runs/bert --text "Return the ___ of items." --candidates "number,cat" --json
    """
    from lmforge.inference import load_for_inference
    from lmforge.inference_masked import probe as rank

    loaded = load_for_inference(checkpoint, causal_for=None, weights=weights, device=device)
    model = loaded.model
    if model.lm_kind == "masked":
        from lmforge.inference_masked import require_masked

        require_masked(model, checkpoint, "probe")
    ranked = rank(model, loaded.tokenizer, text, candidates.split(","))
    method = "pseudo-log-likelihood" if model.lm_kind == "masked" else "log-probability"
    result = {
        "text": text,
        "method": method,
        "candidates": [
            {"candidate": c.text, "logprob": c.logprob, "prob": c.prob, "tokens": c.tokens} for c in ranked
        ],
    }
    if as_json:
        print_json(result)
        return result
    width = max(len("candidate"), *(len(c.text) for c in ranked))
    print(f"{'#':>3}  {'candidate':<{width}}  {'tokens':>6}  {'log-prob':>10}  {'prob':>8}")
    for n, c in enumerate(ranked, 1):
        print(f"{n:>3}  {c.text:<{width}}  {c.tokens:>6}  {c.logprob:>10.4f}  {c.prob:>8.4f}")
    print(f"({method} of the filled text; prob: softmax over the candidates)")
    return result

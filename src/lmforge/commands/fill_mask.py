"""``lmforge fill-mask``: what a masked language model (BERT) puts in each [MASK] of a text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, RUN_DIR, Bounds, Text
from lmforge.commands._json import print_json


def fill_mask(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[str, Text(what="a text with [MASK] where a word should go")],
    top_k: Annotated[int, Bounds(positive=True, at_most=1000)] = 5,
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """The most probable tokens for each [MASK] of a text, with their probabilities.

    A masked language model sees the whole text, both sides of every gap, and gives a distribution
    over its vocabulary at each [MASK] (written [MASK] whatever the tokenizer calls its mask token).
    Needs a BERT run with its masked-LM head (`lmforge pretrain --model bert-nano`, or a converted
    BertForMaskedLM); a causal run is refused.

    Args:
        checkpoint: a BERT run directory written by `lmforge pretrain` or `lmforge convert`.
        text: the text, with one or more [MASK].
        top_k: how many fills to show per [MASK].
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples (runs/bert as `lmforge finetune classify --help` pretrains it):
        lmforge fill-mask --checkpoint runs/bert --text "Return the [MASK] of items."
        lmforge fill-mask --checkpoint runs/bert --text "Return a [MASK] [MASK]." --top-k 3 --json
    """
    from lmforge.inference import load_for_inference
    from lmforge.inference_masked import encode_with_masks, require_masked
    from lmforge.inference_masked import fill_mask as fill

    loaded = load_for_inference(checkpoint, causal_for=None, weights=weights, device=device)
    require_masked(loaded.model, checkpoint, "fill-mask")
    encode_with_masks(loaded.tokenizer, text)  # a text without [MASK] is refused before any work
    fills = fill(loaded.model, loaded.tokenizer, text, top_k=top_k)
    result = {
        "text": text,
        "masks": [
            {"mask": n, "fills": [{"token": f.token, "id": f.token_id, "prob": f.prob} for f in row]}
            for n, row in enumerate(fills, 1)
        ],
    }
    if as_json:
        print_json(result)
        return result
    for n, row in enumerate(fills, 1):
        if len(fills) > 1:
            print(f"[MASK] {n}:")
        print(f"{'#':>3}  {'token':<20}  {'id':>6}  {'prob':>8}")
        for rank, fill_ in enumerate(row, 1):
            shown = json.dumps(fill_.token, ensure_ascii=False)
            print(f"{rank:>3}  {shown:<20}  {fill_.token_id:>6}  {fill_.prob:>8.4f}")
    return result

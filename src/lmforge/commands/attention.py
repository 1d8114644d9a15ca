"""``lmforge attention``: heat maps of where each token of a text looks, per layer and head."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import NON_NEGATIVE, RUN_DIR, OutputPath, Text
from lmforge.commands._json import print_json
from lmforge.errors import OutputExistsError, UserInputError

LABEL_LENGTH = 14  # characters of a token label before it is cut with "…"
# Whitespace made visible, and matplotlib's math marker escaped, so every label prints as typed.
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "$": r"\$"})


def token_label(text: str) -> str:
    label = text.translate(VISIBLE) or "∅"
    return label if len(label) <= LABEL_LENGTH else label[: LABEL_LENGTH - 1] + "…"


def attention(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[str, Text(what="a text to look at")],
    out: Annotated[Path, OutputPath("file")],
    layer: Annotated[int | None, NON_NEGATIVE] = None,
    head: Annotated[int | None, NON_NEGATIVE] = None,
    all: bool = False,  # the flag --all (the name shadows the builtin only in here)
    weights: Literal["auto", "best", "last"] = "auto",
    overwrite: bool = False,
    as_json: bool = False,
) -> dict:
    """Draw a run's attention weights over a text as heat maps, token labels on both axes.

    Row t of a map is how the token at position t divides its attention among itself and the
    tokens before it (each row sums to 1; the future is masked). The text follows the
    end-of-text token, as a document does in training. Spaces show as ␣, newlines as ↵.

    Args:
        checkpoint: a run directory written by `lmforge pretrain` or `lmforge convert`.
        text: the text to look at (about 30 tokens or fewer stay readable).
        out: the PNG file to write.
        layer: which layer (from 0; default 0).
        head: which head of that layer (from 0; default 0).
        all: draw a grid of every layer x head instead.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        overwrite: replace --out if it exists.

    Examples:
        lmforge attention --checkpoint runs/stdlib --text "Return the number of items." --layer 1 --head 2 --out attn.png
        lmforge attention --checkpoint runs/stdlib --text "Return the" --all --out grid.png
    """
    from lmforge.inference import load_for_inference
    from lmforge.models.attention_maps import attention_weights, draw_attention, select_maps

    if out.suffix.lower() != ".png":
        raise UserInputError(f"--out {out} should be a .png file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not text:
        raise UserInputError("--text is empty; give the text to look at")
    loaded = load_for_inference(checkpoint, causal_for="lmforge attention", weights=weights, device="cpu")
    run, model, tokenizer = loaded.run, loaded.model, loaded.tokenizer
    if not model.has_attention_maps:
        raise UserInputError(
            f"{checkpoint} holds a {model.family} model, which has no attention; attention maps need a "
            "Transformer (gpt) run"
        )
    ids = tokenizer.encode(text)
    start = tokenizer.document_start_id
    ids = ([start] if start is not None else []) + ids
    context = model.context_limit
    if context is not None and len(ids) > context:
        print(
            f"warning: the text has {len(ids)} tokens; drawing its first {context} (the model's context)",
            file=sys.stderr,
        )
        ids = ids[:context]
    attended = attention_weights(model, ids)
    maps = select_maps(attended, layer, head, all)
    labels = [token_label(tokenizer.decode([i])) for i in ids]
    title = f"{run.path.name}: attention over {len(ids)} tokens"
    draw_attention(attended, labels, maps, out, title)
    result = {
        "out": str(out),
        "tokens": [tokenizer.decode([i]) for i in ids],
        "maps": [{"layer": i, "head": j, "weights": attended[i, j].tolist()} for i, j in maps],
    }
    if as_json:
        print_json(result)
    else:
        which = f"every layer x head ({len(maps)} maps)" if all else f"layer {maps[0][0]}, head {maps[0][1]}"
        print(f"wrote {out}: attention of {which} over {len(ids)} tokens")
    return result

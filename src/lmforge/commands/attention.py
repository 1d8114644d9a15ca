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
    out: Annotated[Path, OutputPath("file")],
    text: Annotated[str | None, Text(what="a text to look at")] = None,
    source: Annotated[str | None, Text(what="a source text")] = None,
    target: Annotated[str | None, Text(what="a target text")] = None,
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

    A seq2seq (encoder-decoder) run draws its cross-attention instead: the alignment of a --target
    with its --source. Row t (the y axis, the target's tokens then the end token) is how the
    decoder step that predicts target token t divides its attention among the source tokens (the
    x axis; each row sums to 1): per layer and head for a Transformer, one map for an RNN with
    attention. An RNN without attention has no alignment to draw.

    Args:
        checkpoint: a run directory written by `lmforge pretrain` or `lmforge convert`.
        out: the PNG file to write.
        text: the text to look at (about 30 tokens or fewer stay readable).
        source: a seq2seq model: the source side of the alignment.
        target: a seq2seq model: the target side of the alignment (e.g. what `generate --source` wrote).
        layer: which layer (from 0; default 0).
        head: which head of that layer (from 0; default 0).
        all: draw a grid of every layer x head instead.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        overwrite: replace --out if it exists.
        as_json: print {"out", "tokens", "maps": [{"layer", "head", "weights"}]}; with a source,
            "source_tokens" and "target_tokens" (rows: the target's tokens, then the end token).

    Examples:
        lmforge attention --checkpoint runs/stdlib --text "Return the number of items." --layer 1 --head 2 --out attn.png
        lmforge attention --checkpoint runs/stdlib --text "Return the" --all --out grid.png
        lmforge attention --checkpoint my_seq2seq_run --source "abcdef" --target "fedcba" --out align.png
    """
    from lmforge.inference import load_for_inference
    from lmforge.models.attention_maps import attention_weights, draw_attention, select_maps

    if out.suffix.lower() != ".png":
        raise UserInputError(f"--out {out} should be a .png file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")
    if source is not None or target is not None:
        if text is not None:
            raise UserInputError(
                "give --text (a language model) or --source and --target (a seq2seq model), not both"
            )
        if source is None or target is None:
            raise UserInputError("a seq2seq alignment needs a --source and its --target: give both")
        return _alignment(checkpoint, source, target, out, layer, head, all, weights=weights, as_json=as_json)
    if text is None:
        raise UserInputError("give --text (a language model) or --source and --target (a seq2seq model)")
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


def _alignment(
    checkpoint: Path, source: str, target: str, out: Path, layer, head, every: bool, *, weights, as_json: bool
) -> dict:
    """``attention --source --target`` on a seq2seq run: the cross-attention of each target step."""
    from lmforge.inference_seq2seq import cross_attention, encode_source, load_seq2seq
    from lmforge.models.attention_maps import draw_attention, select_maps

    loaded = load_seq2seq(
        checkpoint, command="lmforge attention", instead="--text", weights=weights, device="cpu"
    )
    source_ids, dropped = encode_source(source, loaded, "--source")
    if dropped:
        print(
            f"warning: the source has {len(source_ids) + dropped} tokens; drawing its first {len(source_ids)} "
            f"(the model's source limit), {dropped} dropped",
            file=sys.stderr,
        )
    target_tokenizer, source_tokenizer = loaded.tokenizer, loaded.source_tokenizer
    target_ids = target_tokenizer.encode(target)
    if not target_ids:
        raise UserInputError("--target has no tokens; give the target to align")
    attended = cross_attention(loaded, source_ids, target_ids)  # (layers, heads, T + 1, S)
    maps = select_maps(attended, layer, head, every)
    rows = [*target_ids, loaded.end_id]
    source_tokens = [source_tokenizer.decode([i]) for i in source_ids]
    target_tokens = [target_tokenizer.decode([i]) for i in rows]
    title = f"{loaded.run.path.name}: cross-attention, {len(rows)} target x {len(source_ids)} source tokens"
    draw_attention(
        attended,
        [token_label(t) for t in source_tokens],
        maps,
        out,
        title,
        row_labels=[token_label(t) for t in target_tokens],
        axes=("source token (attended to)", "target token (being predicted)"),
    )
    result = {
        "out": str(out),
        "source_tokens": source_tokens,
        "target_tokens": target_tokens,
        "maps": [{"layer": i, "head": j, "weights": attended[i, j].tolist()} for i, j in maps],
    }
    if as_json:
        print_json(result)
    else:
        which = (
            f"every layer x head ({len(maps)} maps)" if every else f"layer {maps[0][0]}, head {maps[0][1]}"
        )
        print(
            f"wrote {out}: cross-attention of {which}, {len(rows)} target x {len(source_ids)} source tokens"
        )
    return result

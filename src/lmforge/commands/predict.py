"""``lmforge predict``: label texts with a fine-tuned classifier run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, RUN_DIR, Bounds, InputPath, Text
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError

SHOWN = 3  # classes listed per text in the summary (--json has all)


def predict(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[list[str] | None, Text(what="a text to label")] = None,
    file: Annotated[Path | None, InputPath("file", "a text file, one text per line", "file")] = None,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 32,
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """The label a fine-tuned classifier gives each text, with every class's probability.

    Args:
        checkpoint: a run written by `lmforge finetune classify`.
        text: texts to label (several may follow one --text).
        file: a UTF-8 file with one text per line (blank lines skipped).
        batch_size: texts per forward pass.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge predict --checkpoint runs/topics --text "Return a Future that completes when the coroutine is done."
        lmforge predict --checkpoint runs/topics --text "Parse a MIME message." "Start a worker process." --json
    """
    from lmforge.finetune.predict import load_classifier

    texts = list(text or [])
    if file is not None:
        try:
            texts += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UserInputError(f"--file {file} is not UTF-8 text; save it as UTF-8") from None
    if not texts:
        raise UserInputError("nothing to label: give --text TEXT or --file FILE (one text per line)")
    classifier = load_classifier(checkpoint, weights=weights, device=device)
    predictions, cut = classifier.predict(texts, batch_size=batch_size)
    if cut:
        limit = classifier.model.config.block_size
        print(
            f"warning: {cut} of {len(texts)} texts are longer than the context of {limit} tokens and were cut",
            file=sys.stderr,
        )
    result = {
        "predictions": [{"text": p.text, "label": p.label, "probs": p.probs} for p in predictions],
        "labels": classifier.labels,
    }
    if as_json:
        print_json(result)
        return result
    for p in predictions:
        shown = p.text if len(p.text) <= 70 else p.text[:67] + "..."
        top = "  ".join(f"{label} {prob:.1%}" for label, prob in list(p.probs.items())[:SHOWN])
        print(f"{p.label:<16} {shown}\n{'':<16} ({top})")
    return result

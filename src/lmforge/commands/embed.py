"""``lmforge embed``: sentence embeddings from a run, and how similar texts are."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, RUN_DIR, Bounds, InputPath, Text
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError


def embed(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    text: Annotated[list[str] | None, Text(what="a text to embed")] = None,
    file: Annotated[Path | None, InputPath("file", "a UTF-8 text file, one text per line")] = None,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 32,
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """Mean-pooled, L2-normalised sentence embeddings of texts, and their cosine similarities.

    Each text's embedding is the mean of the model's last hidden states over its real tokens
    (never padding), scaled to length 1, as sentence-transformers computes it: a converted
    sentence-transformers/all-MiniLM-L6-v2 gives its published embeddings. Works for BERT runs
    ([CLS] text [SEP]) and causal Transformer runs (GPT); a text longer than the context is cut
    to it, with a warning. Two texts: their cosine similarity; more: the similarity matrix.

    Args:
        checkpoint: a BERT or GPT run directory written by `lmforge pretrain` or `lmforge convert`.
        text: one or more texts (--text "a cat" "a dog").
        file: a UTF-8 file with one text per line (blank lines skipped), after any --text.
        batch_size: texts per forward pass.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge embed --checkpoint runs/bert --text "Return the number of items." "Count the items."
        lmforge embed --checkpoint runs/stdlib --text "Open a file." "Close a file." "Sort a list." --json
    """
    from lmforge.embeddings import embed_texts
    from lmforge.inference import load_for_inference

    texts = list(text or []) + (_read_lines(file) if file is not None else [])
    if not texts:
        raise UserInputError("give the texts to embed: --text T [T2 ...] or --file F")
    loaded = load_for_inference(checkpoint, causal_for=None, weights=weights, device=device)
    vectors, truncated = embed_texts(loaded.model, loaded.tokenizer, texts, batch_size=batch_size)
    if truncated:
        print(
            f"warning: {truncated} of {len(texts)} texts were longer than the model's context of "
            f"{loaded.model.context_limit} tokens and were cut to it",
            file=sys.stderr,
        )
    similarity = (vectors @ vectors.T).tolist()
    result: dict = {"embeddings": vectors.tolist()}
    if len(texts) == 2:
        result["similarity"] = similarity[0][1]
    elif len(texts) > 2:
        result["similarities"] = similarity
    if as_json:
        print_json(result)
        return result
    print(f"{len(texts)} embeddings of {vectors.shape[1]} dimensions (mean-pooled, L2-normalised)")
    for n, (line, vector) in enumerate(zip(texts, vectors.tolist()), 1):
        head = ", ".join(f"{v:+.4f}" for v in vector[:4])
        shown = line if len(line) <= 40 else line[:39] + "…"
        print(f"{n:>3}  [{head}, ...]  {shown}")
    if len(texts) == 2:
        print(f"cosine similarity: {similarity[0][1]:.4f}")
    elif len(texts) > 2:
        print("cosine similarities:")
        print("     " + "".join(f"{n:>8}" for n in range(1, len(texts) + 1)))
        for n, row in enumerate(similarity, 1):
            print(f"{n:>3}  " + "".join(f"{v:>8.4f}" for v in row))
    return result


def _read_lines(path: Path) -> list[str]:
    from lmforge.data.corpora import read_text

    try:
        lines = [line for line in read_text(Path(path), "strict").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserInputError(f"--file {path} does not exist") from None
    except IsADirectoryError:
        raise UserInputError(f"--file {path} is a directory; give a file with one text per line") from None
    if not lines:
        raise UserInputError(f"--file {path} is empty; put one text per line")
    return lines

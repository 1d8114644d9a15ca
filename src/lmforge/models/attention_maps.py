"""Attention heat maps: how each token of a text spreads its attention over the tokens before it.

    "to be" after <|endoftext|>, a character model:  ids [0, t, o, ␣, b, e]
    attention_weights(model, ids)  -> (n_layer, n_head, 6, 6)
    weights[layer, head, 3]        =  [0.41, 0.07, 0.30, 0.22, 0, 0]   query "␣" over keys <|endoftext|> t o ␣
        each row sums to 1; everything above the diagonal (the future) is exactly 0: the causal mask

The weights come from the model's reference attention, softmax(QK^T / sqrt(hs)) written out
(``output_attentions=True``), which tests check against the fast SDPA path. ``draw_attention``
turns them into one heat map or a grid of every layer x head, token labels on both axes. A
seq2seq model's cross-attention (target rows over source columns, not square) is drawn the same
way with ``row_labels`` for the target and ``axes`` naming the two sides.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_write_bytes

LABELS_UP_TO = 48  # tokens per axis that still get labels in a grid cell; beyond, they would overlap


@torch.no_grad()
def attention_weights(model: nn.Module, token_ids: Sequence[int]) -> torch.Tensor:
    """(n_layer, n_head, T, T) float32 weights of one sequence: row t is query t over keys 0..T-1."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    attentions = model(ids, output_attentions=True).attentions  # per layer (1, nh, T, T)
    model.train(was_training)
    return torch.stack([layer[0] for layer in attentions]).float().cpu()


def select_maps(
    weights: torch.Tensor, layer: int | None, head: int | None, every: bool
) -> list[tuple[int, int]]:
    """The (layer, head) pairs to draw: one (default layer 0, head 0) or, with ``every``, all of them."""
    n_layer, n_head = weights.shape[:2]
    if every:
        if layer is not None or head is not None:
            raise UserInputError("--all draws every layer and head; leave out --layer and --head")
        return [(i, j) for i in range(n_layer) for j in range(n_head)]
    layer, head = layer or 0, head or 0
    if not 0 <= layer < n_layer:
        raise UserInputError(f"--layer {layer} does not exist: this model has layers 0..{n_layer - 1}")
    if not 0 <= head < n_head:
        raise UserInputError(f"--head {head} does not exist: this model has heads 0..{n_head - 1} per layer")
    return [(layer, head)]


def draw_attention(
    weights: torch.Tensor,
    labels: Sequence[str],
    maps: Sequence[tuple[int, int]],
    path: str | Path,
    title: str,
    *,
    row_labels: Sequence[str] | None = None,
    axes: tuple[str, str] = ("key (attended to)", "query (attending)"),
) -> None:
    """Draw ``maps`` of ``weights`` (n_layer, n_head, T, S) as a PNG at ``path``, written atomically:
    ``labels`` on the x axis (S keys), ``row_labels`` on the y axis (T queries; default ``labels``),
    ``axes`` = (x axis name, y axis name) under a single map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fonts import readable

    rows = list(labels if row_labels is None else row_labels)
    texts, families = readable([*labels, *rows, title])  # CJK and other scripts: lmforge/fonts.py
    labels, rows, title = texts[: len(labels)], texts[len(labels) : -1], texts[-1]
    with matplotlib.rc_context({"font.family": families}):
        figure = _draw(weights, labels, rows, maps, title, axes)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _draw(
    weights: torch.Tensor,
    labels: Sequence[str],
    row_labels: Sequence[str],
    maps: Sequence[tuple[int, int]],
    title: str,
    axes_names: tuple[str, str],
):
    """The figure of ``draw_attention``."""
    import matplotlib.pyplot as plt

    size = max(len(labels), len(row_labels))  # the longer side sets the cell (a square one when T == S)
    width, height = max(0.3, len(labels) / size), max(0.3, len(row_labels) / size)
    rows = sorted({layer for layer, _ in maps})
    cols = sorted({head for _, head in maps})
    single = len(maps) == 1
    # inches per map: about 0.3 in per token on one map, 0.16 in per token in a grid cell
    cell = max(3.5, 0.3 * size + 1.0) if single else max(1.8, 0.16 * size + 0.6)
    spacing = cell * 72 * 0.8 / size  # points between two labels on an axis
    font = min(9.0, max(4.0, 0.6 * spacing))
    figure, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(cell * width * len(cols) + 1.5, cell * height * len(rows) + 1.0),
        squeeze=False,
        layout="constrained",  # room for labels, colour bar and title without gaps or overlaps
    )
    image = None
    for r, layer in enumerate(rows):
        for c, head in enumerate(cols):
            ax = axes[r][c]
            image = ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=max(font, 7.0) + 1)
            show_y = c == 0 and (single or size <= LABELS_UP_TO)
            show_x = r == len(rows) - 1 and (single or size <= LABELS_UP_TO)
            ax.set_yticks(range(len(row_labels)), row_labels if show_y else [], fontsize=font)
            ax.set_xticks(range(len(labels)), labels if show_x else [], fontsize=font, rotation=90)
            if single:
                ax.set_xlabel(axes_names[0])
                ax.set_ylabel(axes_names[1])
    figure.colorbar(image, ax=axes, shrink=0.6 if single else 0.3, label="attention weight")
    figure.suptitle(title)
    return figure

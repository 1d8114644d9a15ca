"""How well a classifier does: accuracy, macro-F1 and the confusion matrix (table and picture).

Macro-F1 averages each class's F1 with equal weight, so a model that ignores a rare class is
not hidden behind the frequent ones, as it is by accuracy. A class that is never predicted and
never true (absent from this split) is left out of the average, as scikit-learn's
``f1_score(average="macro", labels=present)`` does; a class that is true but never predicted
counts with F1 = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_labels: int) -> np.ndarray:
    """counts[t, p]: examples of class t predicted as p."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return counts


def accuracy(counts: np.ndarray) -> float:
    total = counts.sum()
    return float(np.trace(counts) / total) if total else 0.0


def per_class_f1(counts: np.ndarray) -> np.ndarray:
    """F1 of each class (0 where it has no true and no predicted example)."""
    hits = np.diag(counts).astype(float)
    predicted, true = counts.sum(axis=0), counts.sum(axis=1)
    denominator = predicted + true
    return np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)


def macro_f1(counts: np.ndarray) -> float:
    """Mean F1 over the classes that occur (as truth or as prediction) in this split."""
    present = (counts.sum(axis=0) + counts.sum(axis=1)) > 0
    return float(per_class_f1(counts)[present].mean()) if present.any() else 0.0


def confusion_table(counts: np.ndarray, labels: Sequence[str]) -> str:
    """Rows: the true class (numbered); columns: the predicted one, by number; plus each class's F1."""
    width = max(4, len(str(int(counts.max(initial=0)))) + 1)
    names = [f"{index} {label[:24]}" for index, label in enumerate(labels)]
    corner = "true \\ predicted"
    left = max(len(corner), *(len(name) for name in names))
    header = f"{corner:<{left}} " + "".join(f"{index:>{width}}" for index in range(len(labels)))
    lines = [header + "      F1"]
    for name, row, f1 in zip(names, counts, per_class_f1(counts)):
        lines.append(f"{name:<{left}} " + "".join(f"{value:>{width}}" for value in row) + f"  {f1:6.3f}")
    return "\n".join(lines)


def plot_confusion(counts: np.ndarray, labels: Sequence[str], out: str | Path, title: str = "") -> None:
    """A heat map of the row-normalised matrix (each true class sums to 1), counts in the cells."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fileio import atomic_write_bytes
    from lmforge.fonts import readable

    title = title or f"accuracy {accuracy(counts):.1%}, macro-F1 {macro_f1(counts):.3f}"
    (*names, title), families = readable([*labels, title])  # labels in any script: lmforge/fonts.py
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    size = 2.5 + 0.6 * len(names)
    with matplotlib.rc_context({"font.family": families}):
        figure, axes = plt.subplots(figsize=(size + 1, size))
        image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axes.set_yticks(range(len(names)), names)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        for t, p in np.ndindex(*counts.shape):
            color = "white" if share[t, p] > 0.5 else "black"
            axes.text(p, t, str(counts[t, p]), ha="center", va="center", color=color, fontsize=8)
        figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
        axes.set_title(title)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
    atomic_write_bytes(Path(out), buffer.getvalue())

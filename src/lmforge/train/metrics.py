"""Training metrics: one JSON object per line in ``metrics.jsonl``, and ``loss.png`` from them.

A record per optimizer step: ``{"step", "train_loss", "lr", "tokens_per_s", "elapsed_s"}``;
a record per evaluation: ``{"step", "val_loss", "val_perplexity", "elapsed_s"}``.
The file is appended and flushed line by line, so a crash keeps every finished step; on
resume, records after the resumed step are dropped first so the curve has no doubled tail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmforge.fileio import atomic_write_bytes, atomic_write_text


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash
    return records


class MetricsLog:
    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def plot_losses(metrics_path: str | Path, out_path: str | Path, title: str = "") -> None:
    """Train and validation loss against optimizer step; perplexity on a right-hand axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fonts import readable

    (title,), families = readable([title])  # a run named in any script: lmforge/fonts.py
    with matplotlib.rc_context({"font.family": families}):
        _plot(plt, read_metrics(metrics_path), out_path, title)


def _plot(plt, records: list[dict], out_path: str | Path, title: str) -> None:
    import io

    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train", color="#4C72B0", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), label="validation", color="#DD8452", marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if train or val:
        low, high = ax.get_ylim()
        right = ax.twinx()
        right.set_ylim(math.exp(low), math.exp(high))
        right.set_yscale("log")
        right.set_ylabel("perplexity")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())

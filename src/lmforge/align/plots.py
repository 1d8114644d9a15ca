"""loss.png of a reward-model or DPO run: the losses above the held-out preference accuracy and
reward margin, all against the optimizer step, read from metrics.jsonl.

    top:     train loss (every step) and validation loss (every evaluation)
    bottom:  val_accuracy (left axis, 0..1) and val_margin (right axis): r_chosen - r_rejected,
             the reward model's or DPO's implicit beta * log-ratio one
"""

from __future__ import annotations

import io
from pathlib import Path


def plot_preference_run(metrics_path: str | Path, out_path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fileio import atomic_write_bytes
    from lmforge.fonts import readable
    from lmforge.train.metrics import read_metrics

    records = read_metrics(metrics_path)
    (title,), families = readable([title])
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    accuracy = [(r["step"], r["val_accuracy"]) for r in records if "val_accuracy" in r]
    margin = [(r["step"], r["val_margin"]) for r in records if "val_margin" in r]
    with matplotlib.rc_context({"font.family": families}):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=110, sharex=True)
        if train:
            top.plot(*zip(*train), label="train", color="#4C72B0", linewidth=1, alpha=0.8)
        if val:
            top.plot(*zip(*val), label="validation", color="#DD8452", marker="o", markersize=3)
        top.set_ylabel("-log sigmoid(margin)")
        top.grid(alpha=0.3)
        top.legend()
        if accuracy:
            bottom.plot(*zip(*accuracy), label="accuracy", color="#55A868", marker="o", markersize=3)
        bottom.set_ylim(-0.02, 1.02)
        bottom.set_ylabel("held-out preference accuracy")
        bottom.set_xlabel("optimizer step")
        bottom.grid(alpha=0.3)
        if margin:
            right = bottom.twinx()
            right.plot(*zip(*margin), color="#8172B2", marker="s", markersize=3, label="margin")
            right.set_ylabel("mean reward margin (chosen - rejected)", color="#8172B2")
        if title:
            top.set_title(title)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
    atomic_write_bytes(Path(out_path), buffer.getvalue())

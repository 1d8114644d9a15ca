"""Run nanoGPT's own ``train.py`` with its published CPU recipe, beside lmforge, on the same text.

The race in ``shakespeare_char.py --race`` measures lmforge against the wall-clock time that
nanoGPT's code needs on this machine, so nanoGPT runs from a checkout the user gives by path
(``git clone https://github.com/karpathy/nanoGPT``); nothing of it is copied into lmforge.

nanoGPT reads ``configurator.py`` and ``data/<dataset>/`` relative to its working directory, so
its four source files are copied into a scratch directory next to the data this module writes in
nanoGPT's own format (``prepare.py``: characters sorted, the first 90% for training, uint16 ids).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# README.md of nanoGPT, "I only have a macbook": the baby GPT on a CPU, 2000 iterations
CPU_RECIPE = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
    "--dtype=float32",  # nanoGPT computes in fp32 on a CPU whatever dtype says; this keeps its GradScaler off
]
SOURCES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
FINAL_LOSS = re.compile(r"step (\d+): train loss ([0-9.]+), val loss ([0-9.]+)")


def check_checkout(path: Path) -> Path:
    """The checkout's root, or a one-line SystemExit naming what is missing."""
    path = Path(path).expanduser().resolve()
    missing = [name for name in SOURCES if not (path / name).exists()]
    if missing:
        raise SystemExit(
            f"--nanogpt {path}: not a nanoGPT checkout ({', '.join(missing)} missing); "
            "git clone https://github.com/karpathy/nanoGPT"
        )
    return path


def write_char_data(text: str, directory: Path) -> None:
    """``data/shakespeare_char/prepare.py``'s output, from text already on disk."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    directory.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.bin", text[:split]), ("val.bin", text[split:])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(directory / name)
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(directory / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)


def run_nanogpt(checkout: Path, corpus: Path, scratch: Path, threads: int | None = None) -> dict:
    """One run of the CPU recipe: wall-clock seconds of the whole process and nanoGPT's own final
    loss estimates (20 batches of each split, as its recipe evaluates)."""
    checkout = check_checkout(checkout)
    for name in SOURCES:
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkout / name, scratch / name)
    data = scratch / "data" / "shakespeare_char"
    if not (data / "meta.pkl").exists():
        write_char_data(corpus.read_text(encoding="utf-8"), data)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "train.py", *CPU_RECIPE, f"--out_dir={scratch / 'out'}"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed:\n{done.stderr[-2000:]}")
    finals = FINAL_LOSS.findall(done.stdout)
    step, train_loss, val_loss = finals[-1]
    return {
        "wall_s": wall,
        "steps": int(step),
        "train_loss_estimate": float(train_loss),
        "val_loss_estimate": float(val_loss),
    }

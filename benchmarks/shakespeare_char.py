"""Character-level tiny Shakespeare: nanoGPT's CPU recipe, then lmforge's faster defaults.

nanoGPT's published CPU run (README, "I only have a macbook"): 4 layers, 4 heads, 128 wide,
block 64, batch 12, 2000 steps, AdamW lr 1e-3 (100 warm-up steps, cosine to 1e-4), betas
(0.9, 0.99), weight decay 0.1, clip 1.0, dropout 0, no biases; it reports validation loss 1.88.

    python benchmarks/shakespeare_char.py                  # everything, 3 seeds each (about 7 minutes)
    python benchmarks/shakespeare_char.py --only budget --budgets 38 25 --seeds 1

The recipe runs in fp32 (as nanoGPT does on a CPU) and again in bf16 autocast, to show that
bf16's loss curve matches fp32's at equal steps; the budget runs use every lmforge default
(precision "auto": bf16 on a CPU with AVX-512 BF16).

Each result is the loss over the *whole* validation split (the last 10% of the text, 111,540
predictions), measured after training with `lmforge evaluate`, rather than nanoGPT's estimate
from 200 random batches. Skips (exit 0) without ../shared/data/tinyshakespeare.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, bf16_runs_natively, table, write_result  # noqa: E402
from lmforge.commands.evaluate import evaluate  # noqa: E402
from lmforge.commands.prepare import prepare  # noqa: E402
from lmforge.commands.pretrain import pretrain_with as pretrain  # noqa: E402

CORPUS = SHARED_DATA / "tinyshakespeare.txt"
NANOGPT_RECIPE = dict(
    model="gpt-nano",
    n_layer=4,
    n_head=4,
    n_embd=128,
    block_size=64,
    batch_size=12,
    max_steps=2000,
    lr=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    beta1=0.9,
    beta2=0.99,
    weight_decay=0.1,
    grad_clip=1.0,
    dropout=0.0,
    bias=False,
    pos_encoding="learned",
    norm="layernorm",
    mlp="gelu_exact",  # nanoGPT's nn.GELU() is the exact erf form
    eval_every=250,
    eval_batches=20,
    precision="fp32",
)
TARGET = 1.88


def run(name: str, data: Path, root: Path, settings: dict) -> dict:
    out = root / "run"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = pretrain(data=data, out=out, progress=False, as_json=True, **settings)
        seconds = time.perf_counter() - start
        result = evaluate(checkpoint=out, data=[str(data)], weights="last", as_json=True)
    return {
        "name": name,
        "wall_s": seconds,
        "train_s": summary["elapsed_s"],
        "steps": summary["steps"],
        "tokens_per_s": summary["tokens_per_s"],
        "val_loss": result["loss"],
        "settings": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["recipe", "recipe-bf16", "budget"], default=None)
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=[38.0, 25.0], help="seconds for the budget runs"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="runs per configuration, seeds 1337, 1338, ... (default 3)"
    )
    args = parser.parse_args()
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} is not there")
        return
    configurations = []
    if args.only in (None, "recipe"):
        configurations.append(("nanoGPT recipe, 2000 steps, fp32", NANOGPT_RECIPE))
    if args.only in (None, "recipe-bf16") and not bf16_runs_natively():
        print("bf16 recipe skipped: this CPU has no bf16 hardware (emulated, about 8x slower than fp32)")
    elif args.only in (None, "recipe-bf16"):
        configurations.append(("nanoGPT recipe, 2000 steps, bf16", {**NANOGPT_RECIPE, "precision": "bf16"}))
    if args.only in (None, "budget"):
        # everything at lmforge's defaults for gpt-nano, only the time budget given
        for budget in args.budgets:
            configurations.append(
                (f"gpt-nano defaults, --max-time {budget:g}", {"model": "gpt-nano", "max_time": budget})
            )
    seeds = [1337 + i for i in range(args.seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "shakespeare-char"
        with contextlib.redirect_stdout(io.StringIO()):
            prepare(data=[str(CORPUS)], tokenizer="char", out=data, as_json=True)
        results = []
        for index, (name, settings) in enumerate(configurations):
            for seed in seeds:
                results.append(run(name, data, root / f"{index}-{seed}", {**settings, "seed": seed}))
                results[-1]["seed"] = seed
    rows = [
        [
            r["name"],
            r["seed"],
            r["steps"],
            f"{r['train_s']:.1f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['val_loss']:.4f}",
            "yes" if r["val_loss"] <= TARGET else "no",
        ]
        for r in results
    ]
    summary = {}
    for name, _ in configurations:
        losses = [r["val_loss"] for r in results if r["name"] == name]
        summary[name] = {"mean_val_loss": statistics.mean(losses), "min": min(losses), "max": max(losses)}
        rows.append(
            [
                name,
                "mean",
                "",
                "",
                "",
                f"{summary[name]['mean_val_loss']:.4f}",
                "yes" if summary[name]["mean_val_loss"] <= TARGET else "no",
            ]
        )
    headers = ["run", "seed", "steps", "train s", "tokens/s", "val loss (whole split)", f"<= {TARGET}"]
    print(table(rows, headers))
    path = write_result(
        "shakespeare_char", {"target_val_loss": TARGET, "summary": summary, "results": results}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

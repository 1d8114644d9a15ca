"""n-gram vs fixed-window vs RNN vs LSTM vs GPT on the same data with the same time budget.

In the spirit of the lecture's table of perplexities (n-gram, RNN, LSTM), each family is trained
by `lmforge pretrain` on the same prepared dataset with the same CPU time budget (`--max-time`;
n-gram models count in a few seconds and take no more) and scored by `lmforge evaluate` over the
whole validation split, so every perplexity is over the same tokens.

    python benchmarks/compare_models.py                    # built-in corpus (+ tiny Shakespeare), 60 s each
    python benchmarks/compare_models.py --budget 20 --datasets stdlib

Datasets: `builtin:stdlib-docs` with a 4,096-id byte-level BPE (word-like units) and, when
../shared/data/tinyshakespeare.txt is present, tiny Shakespeare at character level. Writes
benchmarks/results/compare_models.json and compare_models.png (a bar chart of perplexities).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, SHARED_DATA, table, write_result  # noqa: E402
from lmforge.commands.evaluate import evaluate  # noqa: E402
from lmforge.commands.prepare import prepare  # noqa: E402
from lmforge.commands.pretrain import pretrain_with as pretrain  # noqa: E402

FAMILIES = [
    ("3-gram, Kneser-Ney", {"model": "ngram", "order": 3, "smoothing": "kn"}),
    ("5-gram, Kneser-Ney", {"model": "ngram", "order": 5, "smoothing": "kn"}),
    ("fixed window (Bengio)", {"model": "window"}),
    ("Elman RNN", {"model": "rnn"}),
    ("LSTM", {"model": "lstm"}),
    ("GPT (gpt-nano)", {"model": "gpt-nano"}),
]


def datasets(root: Path, names: list[str]) -> dict[str, Path]:
    prepared = {}
    with contextlib.redirect_stdout(io.StringIO()):
        if "stdlib" in names:
            prepared["stdlib-docs, BPE 4096"] = root / "stdlib"
            prepare(
                data=["builtin:stdlib-docs"],
                tokenizer="bpe",
                vocab_size=4096,
                out=root / "stdlib",
                as_json=True,
            )
        shakespeare = SHARED_DATA / "tinyshakespeare.txt"
        if "shakespeare" in names and shakespeare.exists():
            prepared["tiny Shakespeare, char"] = root / "shakespeare"
            prepare(data=[str(shakespeare)], tokenizer="char", out=root / "shakespeare", as_json=True)
    return prepared


def train_and_score(data: Path, out: Path, settings: dict, budget: float) -> dict:
    neural = settings["model"] != "ngram"
    with contextlib.redirect_stdout(io.StringIO()):
        extra = {"max_time": budget, "progress": False} if neural else {}
        summary = pretrain(data=data, out=out, as_json=True, **settings, **extra)
        scored = evaluate(checkpoint=out, data=[str(data)], weights="last", as_json=True)
    return {
        "parameters": summary["parameters"],
        "train_s": summary["elapsed_s"],
        "val_loss": scored["loss"],
        "val_perplexity": scored["perplexity"],
        "tokens": scored["tokens"],
    }


def bar_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, (dataset, rows) in zip(axes[0], results.items()):
        names = list(rows)
        values = [rows[n]["val_perplexity"] for n in names]
        bars = axis.barh(names, values, color="#4c72b0")
        axis.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel("validation perplexity (lower is better)")
        axis.set_title(dataset)
        axis.margins(x=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per neural family")
    parser.add_argument(
        "--datasets", nargs="+", default=["stdlib", "shakespeare"], choices=["stdlib", "shakespeare"]
    )
    args = parser.parse_args()
    results: dict[str, dict] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for dataset, data in datasets(root, args.datasets).items():
            for index, (name, settings) in enumerate(FAMILIES):
                print(f"{dataset}: {name} ...", file=sys.stderr)
                result = train_and_score(data, root / f"run-{dataset[:5]}-{index}", settings, args.budget)
                results.setdefault(dataset, {})[name] = {**result, "settings": settings}
                rows.append(
                    [
                        dataset,
                        name,
                        f"{result['parameters']:,}",
                        f"{result['train_s']:.1f}",
                        f"{result['val_loss']:.4f}",
                        f"{result['val_perplexity']:,.2f}",
                    ]
                )
    print(table(rows, ["dataset", "model", "parameters", "train s", "val loss", "val perplexity"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    bar_chart(results, RESULTS / "compare_models.png")
    path = write_result("compare_models", {"budget_s": args.budget, "results": results})
    print(f"wrote {path} and {RESULTS / 'compare_models.png'}")


if __name__ == "__main__":
    main()

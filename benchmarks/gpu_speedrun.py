"""Time to a target validation loss on one GPU: gpt2 (124M) in bf16, compiled, trained with the
speed-run recipe that gpt-nano's defaults carry (QK-norm, and Muon from ``models/registry.py:
PRESET_TRAINING``): the GPU leg of issue 17 (modded-nanogpt's race, on lmforge's trainer).

    lmforge prepare --data fineweb.txt --tokenizer bpe --vocab-size 50304 --out data/fw
    python benchmarks/gpu_speedrun.py --data data/fw --target 3.28 --max-time 1800
    python benchmarks/gpu_speedrun.py                  # tiny Shakespeare, a 4,096-id BPE, 10 minutes

It runs ``lmforge pretrain --model gpt2 --precision bf16 --compile`` through the library
(``plan_pretraining`` / ``run_pretraining``), evaluating every ``--eval-every`` steps, and reads
the run's metrics.jsonl: the time to the target is the training clock at the first evaluation
whose validation loss is at or under ``--target`` (evaluations are off the clock's books only in
so far as the trainer excludes them: it does not, so the figure is conservative). MFU is
``benchmarks/gpu.py``'s: 6 N + the attention term per token, over the GPU's dense bf16 peak.

Without CUDA it prints one line saying so and exits 0; ``--device cpu`` runs the same code on a
CPU (the test does, with ``--model gpt-nano`` and a few seconds), where the MFU is left out.
Results: ``results/gpu_speedrun.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, table, write_result  # noqa: E402
from gpu import peak_flops, training_flops_per_token  # noqa: E402

SKIP_LINE = (
    "skipped: benchmarks/gpu_speedrun.py needs a CUDA GPU and torch sees none (give --device cpu to try it)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="a prepared directory (default: tiny Shakespeare, BPE 4096)"
    )
    parser.add_argument("--target", type=float, default=None, help="validation loss to time (default: none)")
    parser.add_argument("--model", default="gpt2", help="preset (default gpt2, 124M)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    parser.add_argument("--max-time", type=float, default=600.0, help="training seconds (default 600)")
    parser.add_argument("--eval-every", type=int, default=125, help="steps between evaluations")
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true", help="eager mode instead of torch.compile")
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default results/gpu_speedrun.json)"
    )
    return parser.parse_args(argv)


def default_data(root: Path) -> Path:
    from lmforge.commands.prepare import prepare

    corpus = SHARED_DATA / "tinyshakespeare.txt"
    source = str(corpus) if corpus.exists() else "builtin:stdlib-docs"
    with contextlib.redirect_stdout(io.StringIO()):
        prepare(data=[source], tokenizer="bpe", vocab_size=4096, out=root / "data", as_json=True)
    return root / "data"


def time_to_target(metrics: Path, target: float | None) -> tuple[float | None, int | None, float]:
    """(training seconds, step) at the first evaluation at or under ``target``, and the best loss."""
    evaluations = [r for r in map(json.loads, metrics.read_text().splitlines()) if "val_loss" in r]
    best = min(r["val_loss"] for r in evaluations)
    for record in evaluations:
        if target is not None and record["val_loss"] <= target:
            return record["elapsed_s"], record["step"], best
    return None, None, best


def evaluations(metrics: Path) -> list[list[float]]:
    """[step, training seconds, validation loss] at each evaluation: the curve behind the figure."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "val_loss" in r]
    return [[r["step"], round(r["elapsed_s"], 2), round(r["val_loss"], 4)] for r in records]


def speedrun(args: argparse.Namespace, root: Path) -> dict:
    from lmforge.models.registry import PRESET_TRAINING, PRESETS
    from lmforge.recipe import plan_pretraining, run_pretraining
    from lmforge.run import Run

    data = args.data or default_data(root)
    # the optimizer settings; the batch is --batch-size's
    recipe = {k: v for k, v in PRESET_TRAINING["gpt-nano"].items() if k != "batch_size"}
    train = {
        **recipe,
        "precision": "bf16",
        "compile": not args.no_compile,
        "device": args.device,
        "batch_size": args.batch_size,
        "max_time": args.max_time,
        "eval_every": args.eval_every,
        "eval_batches": args.eval_batches,
    }
    if args.device == "cpu":
        train["precision"] = "auto"
    shape = {"block_size": args.block_size, "qk_norm": PRESETS["gpt-nano"][1]["qk_norm"]}  # gpt-nano's lever
    job = plan_pretraining(
        data=data, out=root / "run", model=args.model, shape=shape, train=train, overwrite=True
    )
    summary = run_pretraining(job, progress=True)
    seconds, step, best = time_to_target(root / "run" / "metrics.jsonl", args.target)
    net = Run.open(root / "run").load_model()
    row = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "model": args.model,
        "parameters": sum(p.numel() for p in net.parameters()),
        "data": str(data),
        "recipe": {**recipe, "qk_norm": shape["qk_norm"]},
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "compile": not args.no_compile,
        "steps": summary["steps"],
        "tokens_per_s": summary["tokens_per_s"],
        "best_val_loss": best,
        "target": args.target,
        "time_to_target_s": seconds,
        "step_at_target": step,
        "evaluations": evaluations(root / "run" / "metrics.jsonl"),
    }
    if args.device.startswith("cuda"):
        peak, source = peak_flops(row["device"])
        per_token = training_flops_per_token(net, args.block_size)
        row.update(mfu=round(per_token * summary["tokens_per_s"] / peak, 4), peak_source=source)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        row = speedrun(args, Path(tmp))
    reached = (
        f"{row['time_to_target_s']:.1f} s (step {row['step_at_target']})"
        if row["time_to_target_s"]
        else "not reached"
    )
    cells = [f"{row['model']} ({row['parameters'] / 1e6:.0f}M)", row["device"], row["steps"],
             f"{row['tokens_per_s']:,.0f}", f"{row['best_val_loss']:.4f}",
             f"{row['target']}: {reached}" if row["target"] is not None else "-",
             f"{row['mfu']:.1%}" if "mfu" in row else "-"]  # fmt: skip
    print(table([cells], ["model", "device", "steps", "tokens/s", "best val loss", "time to target", "MFU"]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"wrote {args.out}")
    else:
        print(f"wrote {write_result('gpu_speedrun', {'rows': [row]})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

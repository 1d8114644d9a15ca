"""Character-level tiny Shakespeare: nanoGPT's CPU recipe against lmforge's defaults (issue 17).

nanoGPT's published CPU run (README, "I only have a macbook"): 4 layers, 4 heads, 128 wide,
block 64, batch 12, 2000 steps, AdamW lr 1e-3 (100 warm-up steps, cosine to 1e-4), betas
(0.9, 0.99), weight decay 0.1, clip 1.0, dropout 0, no biases; it reports validation loss 1.88.

    python benchmarks/shakespeare_char.py --race --nanogpt ~/nanoGPT   # the race (README's table)
    python benchmarks/shakespeare_char.py --ablation                   # each lever removed in turn
    python benchmarks/shakespeare_char.py --generalisation             # builtin:stdlib-docs, BPE 4096
    python benchmarks/shakespeare_char.py --race --seeds 1 --fractions 0.25   # a quick look

The race times nanoGPT's own ``train.py`` (``--nanogpt``: a checkout, run from a scratch copy;
without it, nanoGPT's recipe as lmforge implements it sets the time), then trains with every
lmforge default for 1/2, 1/4 and 1/5 of that wall-clock time, in fp32 and, where the CPU computes
bf16 natively, in bf16. Every training run is a process of its own, timed from start to exit
(imports, data, model, training, the final evaluation), the way nanoGPT's is; lmforge's
``--max-time`` is the share less the longest excess of wall clock over budget measured for that
share (a 2-second calibration run gives the first). The race runs round by round (nanoGPT, the
recipe, then every row of the defaults, one seed each), so a shared machine that slows down part
way slows every row alike; the budgets follow the median of nanoGPT's runs so far, and the shares
reported are of the median of all of them.

Each lmforge result is the loss over the *whole* validation split (the last 10% of the text,
111,540 predictions) measured afterwards with ``lmforge evaluate``, not an estimate from 20
random batches. ``--ablation`` and ``--generalisation`` use a quarter of the race's reference
time (from the results file, or ``--budget``). Skips (exit 0) without
../shared/data/tinyshakespeare.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, SHARED_DATA, bf16_runs_natively, table, write_result  # noqa: E402
from nanogpt_reference import run_nanogpt  # noqa: E402

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
    qk_norm=False,
    optimizer="adamw",
    schedule="cosine",
    eval_every=250,
    eval_batches=20,
    precision="fp32",
)
# gpt-nano's defaults before issue 17 (rotary, SwiGLU, AdamW 3e-3, cosine): the generalisation
# check's baseline
PREVIOUS_DEFAULTS = dict(
    optimizer="adamw", lr=3e-3, schedule="cosine", warmup_steps=50, batch_size=12, block_size=64,
    mlp="swiglu", qk_norm=False,
)  # fmt: skip
# each lever of the defaults set back to what it was before (PREVIOUS_DEFAULTS), one at a time,
# then the levers that were tried and left out, each added alone
ABLATIONS: dict[str, dict] = {
    "every default": {},
    "AdamW (lr 3e-3) instead of Muon": {"optimizer": "adamw", "lr": 3e-3},
    "no QK-norm": {"qk_norm": False},
    "batch 12 (nanoGPT's) instead of 16": {"batch_size": 12},
    "AdamW's lr beside Muon 3e-3 instead of 6e-3": {"lr": 3e-3},
    "Muon lr 0.02 (Keller Jordan's) instead of 0.03": {"muon_lr": 0.02},
    "+ wsd schedule (instead of cosine)": {"schedule": "wsd"},
    "+ ReLU squared (instead of SwiGLU)": {"mlp": "relu2"},
    "+ logit soft-cap 30": {"logit_softcap": 30.0},
    "+ zero-initialised projections": {"zero_init_proj": True},
}
TARGET = 1.88
FRACTIONS = (0.5, 0.25, 0.2)


def train_process(data: Path, out: Path, settings: dict) -> dict:
    """``pretrain`` in a process of its own (this script's ``--child``), timed from start to exit."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps({"data": str(data), "out": str(out), **settings})],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pretrain {settings} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **summary}


def child(spec: str) -> None:
    from lmforge.commands.pretrain import pretrain_with

    flags = json.loads(spec)
    data, out = Path(flags.pop("data")), Path(flags.pop("out"))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = pretrain_with(data=data, out=out, progress=False, as_json=True, overwrite=True, **flags)
    print(json.dumps({k: summary.get(k) for k in ("steps", "elapsed_s", "tokens_per_s", "precision")}))


def whole_split_loss(run: Path, data: Path) -> float:
    from lmforge.commands.evaluate import evaluate

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate(checkpoint=run, data=[str(data)], weights="last", as_json=True)["loss"]


def train_and_score(name: str, data: Path, root: Path, settings: dict, seed: int) -> dict:
    out = root / "run"
    result = train_process(data, out, {**settings, "seed": seed})
    result.update(name=name, seed=seed, val_loss=whole_split_loss(out, data), settings=settings)
    return result


def prepare(root: Path, source: str, tokenizer: str, vocab_size: int | None = None) -> Path:
    from lmforge.commands.prepare import prepare as prepare_command

    data = root / "data"
    with contextlib.redirect_stdout(io.StringIO()):
        prepare_command(data=[source], tokenizer=tokenizer, out=data, vocab_size=vocab_size, as_json=True)
    return data


def precisions(requested: str) -> list[str]:
    if requested != "both":
        return [requested]
    if bf16_runs_natively():
        return ["fp32", "bf16"]
    print("bf16 rows skipped: this CPU has no bf16 hardware (emulated, about 8x slower than fp32)")
    return ["fp32"]


def race(args, root: Path) -> dict:
    """Round by round (a round: nanoGPT's train.py, the recipe in lmforge, then the defaults at each
    share and precision, one seed each), so that a machine that slows down or speeds up part way
    (a shared VM does) moves every row alike. The budgets follow the median of nanoGPT's runs so
    far; the shares printed are of the median of all of them."""
    data = prepare(root, str(CORPUS), "char")
    seeds = [1337 + i for i in range(args.seeds)]
    reference: list[dict] = []
    recipe: list[dict] = []
    runs: list[dict] = []
    done: dict[str, list[dict]] = {}
    calibration: dict[str, float] = {}
    for seed in seeds:
        if args.nanogpt:  # nanoGPT seeds itself (1337): repeats measure only its time
            reference.append(run_nanogpt(args.nanogpt, CORPUS, root / "nanogpt"))
            print(f"nanoGPT train.py: {reference[-1]['wall_s']:.1f} s, val estimate "
                  f"{reference[-1]['val_loss_estimate']:.4f}", flush=True)  # fmt: skip
        recipe.append(train_and_score("nanoGPT recipe in lmforge", data, root, NANOGPT_RECIPE, seed))
        print(f"recipe in lmforge, seed {seed}: {recipe[-1]['wall_s']:.1f} s, {recipe[-1]['val_loss']:.4f}", flush=True)  # fmt: skip
        seconds = statistics.median(r["wall_s"] for r in (reference or recipe))
        for precision in precisions(args.precision):
            if precision not in calibration:
                calibration[precision] = calibrate(data, root, precision)
            for fraction in args.fractions:
                # the longest start-up and wind-down measured for this share (or the calibration
                # run), so that a run stays within its share however its own start-up goes
                same = [over_budget(r) for r in done.get(precision, []) if r["fraction"] == fraction]
                budget = round(fraction * seconds - max([calibration[precision], *same]), 1)
                name = f"defaults, {precision}, 1/{1 / fraction:g} of the time"
                r = train_and_score(name, data, root, {"model": "gpt-nano", "max_time": budget, "precision": precision}, seed)  # fmt: skip
                r.update(fraction=fraction, precision=precision, budget_s=budget)
                runs.append(r)
                done.setdefault(precision, []).append(r)
                print(f"{name}, seed {seed}: {r['wall_s']:.1f} s ({r['wall_s'] / seconds:.3f} of {seconds:.1f} s), "
                      f"{r['steps']} steps, val {r['val_loss']:.4f}", flush=True)  # fmt: skip
    seconds = statistics.median(r["wall_s"] for r in (reference or recipe))
    for r in runs:
        r["share"] = r["wall_s"] / seconds
    runs.sort(key=lambda r: (r["precision"] != "fp32", -r["fraction"], r["seed"]))  # the table's order
    return {
        "reference": "nanoGPT train.py" if reference else "nanoGPT recipe in lmforge",
        "reference_s": seconds,
        "overhead_s": statistics.median(r["wall_s"] - r["elapsed_s"] for r in recipe),
        "calibration_overhead_s": calibration,
        "order": "round by round: nanoGPT, the recipe, then every defaults row, one seed per round",
        "nanogpt": reference,
        "recipe": recipe,
        "runs": runs,
    }


def calibrate(data: Path, root: Path, precision: str) -> float:
    """Seconds by which a defaults run's wall clock exceeds its training budget (imports, data,
    model, the last step and the final evaluation past the budget, the plot), from a run with a
    2-second budget: what the first round's budgets take off. From the second round on, each
    share's own runs measure it: a longer run redraws its plot during training, so matplotlib's
    import (0.8 s) falls inside its budget and its start-up and wind-down are shorter than a
    quarter's."""
    r = train_process(
        data, root / "run", {"model": "gpt-nano", "max_time": 2.0, "precision": precision, "seed": 1337}
    )
    print(f"start-up and wind-down of a defaults run, {precision}: {r['wall_s'] - 2.0:.1f} s", flush=True)
    return r["wall_s"] - 2.0


def over_budget(run: dict) -> float:
    """Seconds by which a defaults run's wall clock exceeded its budget (a results file from before
    budgets were recorded: its training time)."""
    return run["wall_s"] - run.get("budget_s", run["elapsed_s"])


def defaults_overhead(runs: list[dict]) -> float | None:
    """Median of ``over_budget`` over ``runs`` (None: no runs)."""
    return statistics.median(over_budget(r) for r in runs) if runs else None


def print_race(result: dict) -> None:
    rows = []
    for r in result["nanogpt"][:1]:
        walls = [x["wall_s"] for x in result["nanogpt"]]
        rows.append(["nanoGPT train.py (its CPU recipe)", "fp32", f"{min(walls):.1f}-{max(walls):.1f}", "1",
                     f"{r['val_loss_estimate']:.4f} (its 20-batch estimate)", ""])  # fmt: skip
    recipe = result["recipe"]
    rows.append(["nanoGPT's recipe in lmforge", "fp32", _span(r["wall_s"] for r in recipe),
                 f"{statistics.median(r['wall_s'] for r in recipe) / result['reference_s']:.2f}",
                 _losses(recipe), _met(recipe)])  # fmt: skip
    names = dict.fromkeys(r["name"] for r in result["runs"])
    for name in names:
        group = [r for r in result["runs"] if r["name"] == name]
        rows.append([f"lmforge defaults, 1/{1 / group[0]['fraction']:g} of the time", group[0]["precision"],
                     _span(r["wall_s"] for r in group), f"{max(r['share'] for r in group):.3f}",
                     _losses(group), _met(group)])  # fmt: skip
    print(f"reference: {result['reference']}, {result['reference_s']:.1f} s")
    print(table(rows, ["run", "precision", "wall s", "share of reference", "val loss (whole split)", f"mean <= {TARGET}"]))  # fmt: skip


def _span(values) -> str:
    values = list(values)
    return f"{min(values):.1f}-{max(values):.1f}"


def _losses(group: list[dict]) -> str:
    losses = [r["val_loss"] for r in group]
    return ", ".join(f"{x:.4f}" for x in losses) + (f" (mean {statistics.mean(losses):.4f})" if len(losses) > 1 else "")  # fmt: skip


def _met(group: list[dict]) -> str:
    return "yes" if statistics.mean(r["val_loss"] for r in group) <= TARGET else "no"


def compare(args, root: Path, data: Path, configurations: dict[str, dict], budget: float) -> list[dict]:
    runs = []
    for name, settings in configurations.items():
        for seed in [1337 + i for i in range(args.seeds)]:
            r = train_and_score(name, data, root, {"model": "gpt-nano", "max_time": budget, **settings}, seed)
            runs.append(r)
            print(f"{name}, seed {seed}: {r['steps']} steps, val {r['val_loss']:.4f}", flush=True)
    return runs


def print_groups(runs: list[dict], baseline: str) -> None:
    names = dict.fromkeys(r["name"] for r in runs)
    base = statistics.mean(r["val_loss"] for r in runs if r["name"] == baseline)
    rows = []
    for name in names:
        group = [r for r in runs if r["name"] == name]
        mean = statistics.mean(r["val_loss"] for r in group)
        rows.append(
            [name, _span(r["steps"] for r in group).replace(".0", ""), _losses(group), f"{mean - base:+.4f}"]
        )
    print(table(rows, ["configuration", "steps", "val loss (whole split)", f"vs {baseline}"]))


def reference_budget(args, previous: dict) -> float:
    if args.budget:
        return args.budget
    if "race" in previous:
        race = previous["race"]
        quarter = [r for r in race["runs"] if r.get("fraction") == 0.25]
        return round(race["reference_s"] / 4 - (defaults_overhead(quarter) or race["overhead_s"]), 1)
    raise SystemExit(
        "no race in the results file to take a quarter of: run --race first or give --budget SECONDS"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--race", action="store_true", help="nanoGPT against lmforge's defaults at shares of its time"
    )
    parser.add_argument(
        "--ablation", action="store_true", help="the defaults with each lever set back in turn"
    )
    parser.add_argument("--generalisation", action="store_true",
                        help="the defaults against the previous ones on builtin:stdlib-docs with a 4,096-id BPE")  # fmt: skip
    parser.add_argument(
        "--nanogpt", type=Path, help="a nanoGPT checkout, whose train.py sets the race's time"
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="shares of the reference time the defaults get (default 0.5 0.25 0.2)")  # fmt: skip
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both",
                        help="the race's lmforge precision (both: bf16 too where the CPU has it)")  # fmt: skip
    parser.add_argument("--budget", type=float, help="training seconds for --ablation/--generalisation")
    parser.add_argument("--seeds", type=int, default=3, help="runs per configuration, seeds 1337, 1338, ... (default 3)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "shakespeare_char.json")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if not (args.race or args.ablation or args.generalisation):
        parser.error("choose --race, --ablation and/or --generalisation")
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} is not there")
        return
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = {k: previous[k] for k in ("race", "ablation", "generalisation") if k in previous}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.race:
            results["race"] = race(args, root / "race")
            print_race(results["race"])
        if args.ablation:
            budget = reference_budget(args, results)
            data = prepare(root / "ablation", str(CORPUS), "char")
            runs = compare(args, root / "ablation", data, ABLATIONS, budget)
            results["ablation"] = {"budget_s": budget, "runs": runs}
            print_groups(runs, "every default")
        if args.generalisation:
            budget = reference_budget(args, results)
            data = prepare(root / "general", "builtin:stdlib-docs", "bpe", 4096)
            configurations = {"every default": {}, "previous defaults": PREVIOUS_DEFAULTS}
            runs = compare(args, root / "general", data, configurations, budget)
            results["generalisation"] = {
                "budget_s": budget,
                "data": "builtin:stdlib-docs, bpe 4096",
                "runs": runs,
            }
            print_groups(runs, "previous defaults")
    payload = {"target_val_loss": TARGET, **results}
    if args.out.resolve() == (RESULTS / "shakespeare_char.json").resolve():
        print(f"wrote {write_result('shakespeare_char', payload)}")
    else:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

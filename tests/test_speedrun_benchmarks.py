"""The speed-run benchmarks' parts that run anywhere: nanoGPT's data format and output parsing
(``benchmarks/nanogpt_reference.py``), the race's timed child process
(``benchmarks/shakespeare_char.py``) and ``benchmarks/gpu_speedrun.py`` on a CPU."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nanogpt():
    return load("nanogpt_reference")


def test_char_data_is_what_nanogpts_prepare_writes(nanogpt, tmp_path):
    text = "hello world\n" * 9 + "bye\n"  # 112 characters: 100 train, 12 val (int(0.9 n))
    nanogpt.write_char_data(text, tmp_path)
    chars = sorted(set(text))  # "\n", " ", b, d, e, h, l, o, r, w, y
    train = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    assert len(train) == 100 and len(val) == 12
    assert "".join(chars[i] for i in train) + "".join(chars[i] for i in val) == text
    assert chars[train[0]] == "h" and train[0] == 5
    meta = pickle.loads((tmp_path / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == 11 and meta["itos"][0] == "\n" and meta["stoi"]["y"] == 10


def test_a_folder_without_nanogpt_is_one_line(nanogpt, tmp_path):
    with pytest.raises(SystemExit, match=r"not a nanoGPT checkout \(train.py, model.py"):
        nanogpt.check_checkout(tmp_path)


def test_run_reads_the_last_evaluation_of_a_checkout(nanogpt, tmp_path):
    """A stand-in checkout whose train.py prints as nanoGPT's does: the figures are its last
    evaluation's, and it ran in the scratch directory with the recipe's flags and the data."""
    checkout = tmp_path / "nanoGPT"
    (checkout / "config").mkdir(parents=True)
    for name in ("model.py", "configurator.py", "config/train_shakespeare_char.py"):
        (checkout / name).write_text("")
    (checkout / "train.py").write_text(
        "import os, sys\n"
        "assert os.path.exists('data/shakespeare_char/train.bin') and os.path.exists('configurator.py')\n"
        "assert '--max_iters=2000' in sys.argv and '--device=cpu' in sys.argv\n"
        "print('step 0: train loss 4.2000, val loss 4.2100')\n"
        "print('step 2000: train loss 1.7600, val loss 1.8800')\n"
    )
    corpus = tmp_path / "input.txt"
    corpus.write_text("to be or not to be\n" * 50)
    result = nanogpt.run_nanogpt(checkout, corpus, tmp_path / "scratch")
    assert result["steps"] == 2000 and result["val_loss_estimate"] == 1.88
    assert result["train_loss_estimate"] == 1.76 and result["wall_s"] > 0


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    from lmforge.commands.prepare import prepare

    root = tmp_path_factory.mktemp("speedrun")
    (root / "text.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 60)
    prepare(data=[str(root / "text.txt")], tokenizer="char", out=root / "data", as_json=True)
    return root / "data"


def test_a_race_entry_trains_in_its_own_timed_process(char_data, tmp_path):
    race = load("shakespeare_char")
    settings = {"model": "gpt-nano", "n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "max_steps": 3,
                "eval_every": 100, "eval_batches": 1, "precision": "fp32"}  # fmt: skip
    result = race.train_and_score("tiny", char_data, tmp_path, settings, seed=7)
    assert result["steps"] == 3 and result["precision"] == "fp32" and result["seed"] == 7
    assert result["wall_s"] > result["elapsed_s"] > 0  # the process's start-up is on the clock
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["seed"] == 7 and saved["model"]["n_embd"] == 32
    assert 0 < result["val_loss"] < 5  # the whole split's loss, from a 30-character vocabulary


def test_the_race_runs_round_by_round_with_budgets_from_the_nanogpt_runs_so_far(monkeypatch, tmp_path):
    """Scripted timings: nanoGPT takes 100, 120, 80 s; every lmforge run spends 2 s outside its
    budget, the calibration run 2.5. Each round runs nanoGPT, the recipe, then every defaults row;
    the budgets follow the median of nanoGPT's runs so far, less the longest start-up and wind-down
    known; the shares are of the median of all three (100 s)."""
    race = load("shakespeare_char")
    order: list[str] = []
    nanogpt_walls = iter([100.0, 120.0, 80.0])

    def fake_nanogpt(checkout, corpus, scratch):
        order.append("nanoGPT")
        return {"wall_s": next(nanogpt_walls), "val_loss_estimate": 1.8857}

    def fake_train(name, data, root, settings, seed):
        order.append(f"{name} {seed}")
        elapsed = settings.get("max_time", 60.0)
        return {
            "name": name,
            "seed": seed,
            "wall_s": elapsed + 2.0,
            "elapsed_s": elapsed,
            "steps": 1,
            "val_loss": 1.9,
        }

    monkeypatch.setattr(race, "prepare", lambda root, source, tokenizer: tmp_path)
    monkeypatch.setattr(race, "run_nanogpt", fake_nanogpt)
    monkeypatch.setattr(race, "train_and_score", fake_train)
    monkeypatch.setattr(race, "calibrate", lambda data, root, precision: order.append("calibrate") or 2.5)
    args = SimpleNamespace(seeds=3, nanogpt=tmp_path, precision="fp32", fractions=[0.5, 0.25])
    result = race.race(args, tmp_path)
    round_ = ["nanoGPT", "nanoGPT recipe in lmforge {s}", "defaults, fp32, 1/2 of the time {s}",
              "defaults, fp32, 1/4 of the time {s}"]  # fmt: skip
    steps = [step.format(s=seed) for seed in (1337, 1338, 1339) for step in round_]
    assert order == [*steps[:2], "calibrate", *steps[2:]]  # one calibration, before the first defaults run
    quarter = [r for r in result["runs"] if r["fraction"] == 0.25]
    # medians so far: 100, then 110 (100 and 120), then 100 (80, 100, 120); less the longest
    # start-up and wind-down known: the calibration's 2.5 s (each run's own is 2 s)
    assert [r["budget_s"] for r in quarter] == [22.5, 25.0, 22.5]
    assert result["reference_s"] == 100.0
    assert [round(r["share"], 3) for r in quarter] == [0.245, 0.27, 0.245]


def test_time_to_target_is_the_first_evaluation_at_or_under_it(tmp_path):
    speedrun = load("gpu_speedrun")
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 0, "val_loss": 4.0, "elapsed_s": 0.5}, {"step": 1, "train_loss": 3.0, "elapsed_s": 1.0},
               {"step": 125, "val_loss": 3.3, "elapsed_s": 20.0}, {"step": 250, "val_loss": 3.25, "elapsed_s": 41.0},
               {"step": 375, "val_loss": 3.27, "elapsed_s": 60.0}]  # fmt: skip
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert speedrun.time_to_target(metrics, 3.28) == (41.0, 250, 3.25)
    assert speedrun.time_to_target(metrics, 3.0) == (None, None, 3.25)
    assert speedrun.time_to_target(metrics, None) == (None, None, 3.25)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip is for machines without CUDA")
def test_gpu_speedrun_skips_cleanly_without_cuda():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_speedrun.py")], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith(
        "skipped: benchmarks/gpu_speedrun.py needs a CUDA GPU"
    )


def test_gpu_speedrun_runs_its_recipe_on_a_cpu(char_data, tmp_path):
    out = tmp_path / "speedrun.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_speedrun.py"), "--device", "cpu", "--model", "gpt-nano",
         "--data", str(char_data), "--block-size", "16", "--batch-size", "4", "--max-time", "2",
         "--eval-every", "5", "--eval-batches", "1", "--target", "100", "--no-compile", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())
    assert row["time_to_target_s"] is not None and row["step_at_target"] == 0  # 100 is met at once
    from lmforge.models.registry import preset_training

    optimizer_settings = {k: v for k, v in preset_training("gpt-nano").items() if k != "batch_size"}
    assert row["recipe"] == {**optimizer_settings, "qk_norm": True} and "mfu" not in row

"""pretrain -> evaluate -> generate from the CLI on real text, and the bad inputs of each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.cli import main

TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.\n"
) * 30


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "austen.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(root / "data")]) == 0
    return root


@pytest.fixture(scope="module")
def trained_run(char_data):
    run = char_data / "run"
    args = [
        "pretrain",
        "--data",
        str(char_data / "data"),
        "--out",
        str(run),
        "--max-steps",
        "150",
        "--n-layer",
        "2",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--block-size",
        "32",
        "--batch-size",
        "8",
        "--lr",
        "1e-2",
        "--warmup-steps",
        "5",
        "--eval-every",
        "50",
        "--eval-batches",
        "4",
    ]
    assert main(args) == 0
    return run


def test_pretrain_writes_the_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "best",
        "train_state.pt",
        "metrics.jsonl",
        "loss.png",
        "tokenizer",
    } <= names
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train_loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 151))
    assert all({"train_loss", "lr", "tokens_per_s"} <= set(r) for r in steps)
    assert [r["step"] for r in evals] == [0, 50, 100, 150]
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-4) for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    state = torch.load(trained_run / "train_state.pt", weights_only=True)
    assert state["step"] == 150
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_json_matches_definition(trained_run, char_data, capsys):
    capsys.readouterr()
    assert (
        main(["evaluate", "--checkpoint", str(trained_run), "--data", str(char_data / "data"), "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"loss", "perplexity", "tokens"}
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    meta = json.loads((char_data / "data" / "meta.json").read_text())
    assert result["tokens"] == meta["val_tokens"] - 1  # every token but the first is predicted once


def test_evaluate_raw_text_and_stride(trained_run, char_data, capsys):
    capsys.readouterr()
    corpus = str(char_data / "austen.txt")
    assert main(["evaluate", "--checkpoint", str(trained_run), "--data", corpus, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert (
        main(["evaluate", "--checkpoint", str(trained_run), "--data", corpus, "--stride", "8", "--json"]) == 0
    )
    strided = json.loads(capsys.readouterr().out)
    assert plain["tokens"] == strided["tokens"] == len(TEXT) - 1
    # every token is scored once either way (tests/data/test_batching.py checks the windows), but with
    # a stride each scored token sees at least 24 tokens of context instead of 0 to 31
    assert strided["loss"] < plain["loss"] - 0.05


def test_generate_json(trained_run, capsys):
    capsys.readouterr()
    args = [
        "generate",
        "--checkpoint",
        str(trained_run),
        "--prompt",
        "It is a",
        "--max-new-tokens",
        "20",
        "--seed",
        "3",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["samples"]) == 1 and len(result["samples"][0]["ids"]) <= 20
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == result  # same seed, same text


def test_resume_continues_to_the_new_budget(trained_run, char_data, tmp_path, capsys):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    assert main(["pretrain", "--resume", str(run), "--max-steps", "160", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 160
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 161))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-layer", "3"], "different model shape"),
        (["--block-size", "64"], "different model shape"),
    ],
)
def test_resume_with_another_shape_is_refused(trained_run, extra, message, capsys):
    before = (trained_run / "train_state.pt").read_bytes()
    assert main(["pretrain", "--resume", str(trained_run), "--max-steps", "200", *extra]) == 2
    assert message in capsys.readouterr().err
    assert (trained_run / "train_state.pt").read_bytes() == before


def test_existing_run_is_refused_without_overwrite(trained_run, char_data, capsys):
    before = (trained_run / "model.safetensors").read_bytes()
    assert (
        main(["pretrain", "--data", str(char_data / "data"), "--out", str(trained_run), "--max-steps", "1"])
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_data_without_meta_is_refused(tmp_path, capsys):
    (tmp_path / "train.bin").write_bytes(b"\0\0")
    assert (
        main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 2
    )
    assert "meta.json" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_with_another_tokenizer_is_refused(trained_run, char_data, tmp_path, capsys):
    corpus = tmp_path / "other.txt"
    corpus.write_text("completely different characters: 0123456789 xyz!? " * 40)
    assert (
        main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "other")]) == 0
    )
    assert main(["evaluate", "--checkpoint", str(trained_run), "--data", str(tmp_path / "other")]) == 2
    assert "different tokenizer" in capsys.readouterr().err


def test_block_size_larger_than_context_is_refused(trained_run, char_data, capsys):
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained_run),
                "--data",
                str(char_data / "data"),
                "--block-size",
                "64",
            ]
        )
        == 2
    )
    assert "larger than the model's context" in capsys.readouterr().err


def test_checkpoint_that_is_not_a_run(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path), "--prompt", "x"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_corrupt_weights_give_one_line(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "corrupt"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "best")
    (run / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(trained_run.parent / "austen.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_resume_without_training_flags_keeps_the_runs_settings(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    before = json.loads((run / "config.json").read_text())["train"]
    assert main(["pretrain", "--resume", str(run), "--max-steps", "155", "--json"]) == 0
    after = json.loads((run / "config.json").read_text())["train"]
    for name in ("batch_size", "lr", "min_lr", "warmup_steps", "precision"):
        assert after[name] == before[name], name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in records if r["step"] > 150 and "lr" in r) <= before["lr"]


def test_resume_flag_given_at_its_default_value_wins(trained_run, tmp_path, capsys):
    # the run trained with --lr 1e-2; 3e-3 is pretrain's default, given explicitly on resume
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1e-2
    assert main(["pretrain", "--resume", str(run), "--max-steps", "152", "--lr", "3e-3", "--json"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 3e-3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in records if r["step"] > 150 and "lr" in r) <= 3e-3


def test_resume_with_another_model_is_refused(trained_run, capsys):
    before = (trained_run / "train_state.pt").read_bytes()
    assert main(["pretrain", "--resume", str(trained_run), "--max-steps", "200", "--model", "lstm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--model lstm" in err and len(err.splitlines()) == 1
    assert (trained_run / "train_state.pt").read_bytes() == before


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--lr", "nan", "--lr must be a finite number"),
        ("--batch-size", "0", "--batch-size must be positive"),
        ("--max-steps", "-3", "--max-steps must be positive"),
        ("--eval-every", "0", "--eval-every must be positive"),
        ("--warmup-steps", "-1", "--warmup-steps must be zero or more"),
        ("--beta2", "1.5", "--beta2 must be at most 1"),
        ("--dropout", "inf", "--dropout must be a finite number"),
    ],
)
def test_bad_training_values_are_one_line_before_any_work(char_data, tmp_path, flag, value, message, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(out), "--max-steps", "5", flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(
    char_data, tmp_path, capsys, monkeypatch
):
    from lmforge.train.trainer import Trainer

    def fail(self):
        raise RuntimeError("the machine fell over")

    monkeypatch.setattr(Trainer, "fit", fail)
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(out), "--max-steps", "5"]
    assert main(args) == 1
    assert not out.exists()  # so the next attempt is not refused as "another run"
    monkeypatch.undo()
    assert main([*args, "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16"]) == 0


def test_overwrite_never_deletes_a_directory_that_is_not_a_run(char_data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    args = [
        "pretrain",
        "--data",
        str(char_data / "data"),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--overwrite",
    ]
    assert main(args) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("native_bf16", [False, True])
def test_auto_precision_trains_end_to_end_on_either_kind_of_cpu(
    char_data, tmp_path, monkeypatch, capsys, native_bf16
):
    from lmforge import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native_bf16)
    out = tmp_path / "run"
    small = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "4"]
    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(out), "--max-steps", "3", *small]
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # fp32 on a CPU goes through the oneDNN linears (where they pay off); bf16 autocast needs no transform
    assert ("onednn-linears" in summary["transforms"]) == (not native_bf16 and summary["transforms"] != [])
    assert summary["steps"] == 3 and math.isfinite(summary["val_loss"])
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "auto"


def test_ctrl_c_saves_then_exits_130_and_resume_continues(char_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    small = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "4"]
    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(out), "--max-time", "120", *small]
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not metrics.exists() or metrics.read_text().count("train_loss") < 3
    ):
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted at step" in stdout
    step = torch.load(out / "train_state.pt", weights_only=True)["step"]
    assert step >= 3
    assert main(["pretrain", "--resume", str(out), "--max-steps", str(step + 2)]) == 0
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == step + 2

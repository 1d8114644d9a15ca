"""The bad values reported in the hardening issue, each as it was typed: one ``error:`` line,
exit 2, naming the flag (they ended in tracebacks, ``unexpected error`` or exit 0 before)."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from tests.tiny_run import TEXT, make_run

PRETRAIN = ["pretrain", "--data", "prep", "--out", "new_run", "--max-steps", "2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("reported")
    (ws / "c.txt").write_text(TEXT * 4, encoding="utf-8")
    make_run(ws / "run")
    return ws


@pytest.mark.parametrize(
    "argv, flag",
    [
        (
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--vocab-size",
                "99999999999",
                "--data",
                "c.txt",
                "--out",
                "t",
            ],
            "--vocab-size",
        ),
        ([*PRETRAIN, "--lr", "nan"], "--lr"),
        ([*PRETRAIN, "--batch-size", "-2"], "--batch-size"),
        ([*PRETRAIN, "--batch-size", "0"], "--batch-size"),
        ([*PRETRAIN, "--eval-every", "0"], "--eval-every"),
        ([*PRETRAIN, "--device", "tpu"], "--device"),
        ([*PRETRAIN, "--max-steps", "-5"], "--max-steps"),
        ([*PRETRAIN, "--max-steps", "nan"], "--max-steps"),
        ([*PRETRAIN, "--max-time", "nan"], "--max-time"),
        ([*PRETRAIN, "--max-time", "-1"], "--max-time"),
        ([*PRETRAIN, "--warmup-steps", "-1"], "--warmup-steps"),
        (["generate", "--checkpoint", "run", "--max-new-tokens", "99999999999"], "--max-new-tokens"),
        (["generate", "--checkpoint", "run", "--temperature", "nan"], "--temperature"),
        (["evaluate", "--checkpoint", "run", "--data", "c.txt", "--batch-size", "-1"], "--batch-size"),
        (["evaluate", "--checkpoint", "c.txt", "--data", "c.txt"], "--checkpoint c.txt is a file"),
    ],
)
def test_reported_values_are_one_line(workspace, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(workspace)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and flag in err, err
    assert not (workspace / "new_run").exists() and not (workspace / "t").exists()


def test_a_config_value_of_the_wrong_type(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    (workspace / "recipe.json").write_text(json.dumps({"batch_size": "twelve", "max_steps": 2}))
    assert main(["pretrain", "--data", "prep", "--out", "new_run", "--config", "recipe.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "batch_size must be a whole number; got 'twelve'" in err

"""Sizes that clearly cannot fit in memory are one error line before anything is allocated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmforge.cli import main
from lmforge.resources import MEMORY_ENV

TEXT = "It is a truth universally acknowledged, that a single man must be in want of a wife.\n" * 60


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    (root / "c.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(["prepare", "--data", str(root / "c.txt"), "--tokenizer", "char", "--out", str(root / "prep")])
        == 0
    )
    args = ["pretrain", "--data", str(root / "prep"), "--out", str(root / "run"), "--max-steps", "2"]
    args += ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "2"]
    assert main(args) == 0
    return root


@pytest.fixture
def sixteen_gib(monkeypatch):
    """The same answer on every machine: one with 16 GiB."""
    monkeypatch.setenv(MEMORY_ENV, "16GiB")


def one_error_line(capsys, args: list[str]) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--block-size", "999999999"], "--block-size 999999999 with --batch-size 16"),
        (["--batch-size", "99999999"], "--block-size 64 with --batch-size 99999999"),
    ],
)
def test_pretrain_refuses_a_step_bigger_than_memory(workspace, capsys, sixteen_gib, flags, named):
    out = workspace / "huge"
    args = [
        "pretrain",
        "--data",
        str(workspace / "prep"),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--device",
        "cpu",
        *flags,
    ]
    line = one_error_line(capsys, args)
    assert line.startswith(f"error: {named} needs about ")
    assert "for a model of 856,960 parameters and one training step" in line  # gpt-nano, 28 ids
    assert line.endswith(
        "this machine has 16.0 GiB: lower --block-size or --batch-size (or the model's size)"
    )
    assert not out.exists()


def test_pretrain_that_fits_is_not_refused_but_less_memory_refuses_it(workspace, capsys, monkeypatch):
    # gpt-nano on 28 ids (856,960 parameters, QK-norm's gains included), its batch of 16 x 64 =
    # 1,024 tokens, fp32:
    #   856,960 x 16 bytes of weights, gradients and optimizer state    13,711,360
    #   rotary cos and sin tables, 64 x 32 x 2 x 4 bytes                     16,384
    #   activations, 1,024 x 128 wide x 4 layers x 8 x 4 bytes          16,777,216
    #   logits and their gradient, 2 x 1,024 x 28 x 4 bytes                 229,376
    #   x, y and rows, plus 20 evaluation batches: (3 + 2 x 20) x 1,024 x 8  352,256
    #   total 31,086,592 bytes = 29.6 MiB
    args = [
        "pretrain",
        "--data",
        str(workspace / "prep"),
        "--out",
        str(workspace / "small"),
        "--max-steps",
        "1",
    ]
    args += ["--precision", "fp32", "--device", "cpu"]
    monkeypatch.setenv(MEMORY_ENV, "29MiB")
    line = one_error_line(capsys, args)
    assert "needs about 29.6 MiB for a model of 856,960 parameters" in line
    assert "this machine has 29.0 MiB" in line
    monkeypatch.setenv(MEMORY_ENV, "30MiB")
    assert main(args) == 0


def test_evaluate_refuses_a_batch_bigger_than_memory(workspace, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "1MiB")
    args = [
        "evaluate",
        "--checkpoint",
        str(workspace / "run"),
        "--data",
        str(workspace / "c.txt"),
        "--device",
        "cpu",
    ]
    line = one_error_line(capsys, [*args, "--batch-size", "1000"])
    assert line.startswith("error: --block-size 16 with --batch-size 1000 needs about ")
    assert line.endswith("this machine has 1.0 MiB: lower --batch-size or --block-size")
    assert main([*args, "--batch-size", "2"]) == 0  # small batches fit in the same memory


def test_generate_refuses_continuations_bigger_than_memory(workspace, capsys, sixteen_gib):
    args = ["generate", "--checkpoint", str(workspace / "run"), "--prompt", "It", "--device", "cpu"]
    line = one_error_line(capsys, [*args, "--max-new-tokens", "1000000", "--num-samples", "10000"])
    # 10,000 rows x (2 x 1,000,002 x 8 + 1,000,000 x 12) bytes of ids and log-probabilities alone
    assert line.startswith("error: --max-new-tokens 1000000 with 1 prompt x 10000 samples needs about 26")
    assert "most of it token ids and log-probabilities: 260.8 GiB" in line
    assert line.endswith("lower --max-new-tokens, --num-samples or --batch-size")
    line = one_error_line(
        capsys, [*args, "--max-new-tokens", "1000000", "--strategy", "beam", "--num-beams", "1000"]
    )
    assert "1 prompt x 1000 beams" in line and line.endswith(
        "lower --max-new-tokens, --num-beams or --batch-size"
    )


@pytest.mark.parametrize(
    "command", [["tokenizer", "train", "--kind", "bpe"], ["prepare", "--tokenizer", "bpe"]]
)
def test_a_huge_vocabulary_is_one_line_not_an_abort(workspace, tmp_path, command):
    # in a child process: before the guard, Hugging Face's trainer aborted the whole process
    args = [
        *command,
        "--data",
        str(workspace / "c.txt"),
        "--out",
        str(tmp_path / "out"),
        "--vocab-size",
        "99999999999",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == "error: --vocab-size must be at most 1,000,000; got 99,999,999,999"

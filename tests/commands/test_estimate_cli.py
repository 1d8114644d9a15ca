"""``lmforge estimate`` and ``lmforge inspect`` from the command line: JSON keys, the human summary,
run directories, one-line errors, and help that does not load torch."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from lmforge.cli import main
from tests.tiny_run import make_run


def invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_estimate_json_has_the_promised_keys_and_the_gpt3_figure():
    argv = ["estimate", "--model", "gpt3-175b", "--tokens", "300e9", "--gpus", "1024", "--gpu", "a100",
            "--parallel", "tp=8,fsdp", "--batch-tokens", "3.2e6", "--json"]  # fmt: skip
    code, out, _ = invoke(argv)
    summary = json.loads(out)
    assert code == 0 and {"params", "flops", "pf_days", "memory_gb", "hours"} <= set(summary)
    assert summary["flops"] == pytest.approx(3.14e23, rel=0.05) and summary["pf_days"] == pytest.approx(
        3640, rel=0.05
    )
    assert summary["fits"] and summary["memory_gb"] < 80 and summary["parallel"] == "tp=8,fsdp"
    assert summary["hours"] == pytest.approx(summary["flops"] / (1024 * 312e12 * 0.4) / 3600)


def test_estimate_prints_a_summary_and_a_finding_when_it_does_not_fit():
    code, out, _ = invoke(["estimate", "--model", "gpt3-6.7b", "--tokens", "300e9", "--gpus", "8"])
    assert code == 0
    assert "petaflop/s-days" in out and "AdamW state" in out
    assert "does not fit" in out and "it fits with --parallel fsdp" in out
    code, out, _ = invoke(["estimate", "--model", "gpt2", "--tokens", "10e9", "--gpus", "8"])
    assert out.rstrip().endswith("fits in memory")


def test_estimate_and_inspect_read_a_run_directory(tmp_path):
    make_run(tmp_path / "run")
    code, out, _ = invoke(
        [
            "estimate",
            "--checkpoint",
            str(tmp_path / "run"),
            "--tokens",
            "1e6",
            "--batch-tokens",
            "1024",
            "--json",
        ]
    )
    assert code == 0 and json.loads(out)["params"] > 0
    code, out, _ = invoke(["inspect", "--checkpoint", str(tmp_path / "run"), "--json"])
    summary = json.loads(out)
    assert code == 0 and summary["context"] == 16 and summary["modules"][0]["parameters"] == summary["params"]


def test_inspect_shows_the_tree_and_the_totals():
    code, out, _ = invoke(["inspect", "--model", "gpt2"])
    assert code == 0
    assert "h.0-11" not in out and "0-11" in out and "12 x Block" in out
    assert "parameters 124,439,808" in out and "training" in out and "GB at bf16" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["estimate", "--model", "gpt2", "--tokens", "1e9", "--parallel", "zero"], "is not one of dp, fsdp"),
        (["estimate", "--model", "gpt2", "--tokens", "1e99"], "--tokens must be at most"),
        (["estimate", "--model", "gpt2", "--tokens", "1e9", "--gpus", "10000000"], "--gpus must be at most"),
        (["estimate", "--tokens", "1e9"], "give --model PRESET or --checkpoint RUN"),
        (["estimate", "--model", "gpt2", "--tokens", "1e9", "--gpu", "v100"], "no bf16"),
        (["inspect", "--model", "ngram"], "counted from data"),
    ],
)
def test_bad_input_is_one_error_line(argv, message):
    code, _, err = invoke(argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_their_help_does_not_import_torch():
    for command in ("estimate", "inspect"):
        code = (
            "import sys; from lmforge.cli import main\n"
            f"try: main(['{command}', '--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip().endswith("False")

"""Every command that reads text files takes --errors strict|replace, and only those suggest it."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from tests.tiny_run import make_run

BAD = b"ab\xffcd"  # 0xFF is never UTF-8


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(BAD)
    return path


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run").path


def commands(run, bad_file, tmp_path) -> dict[str, list[str]]:
    return {
        "evaluate": ["evaluate", "--checkpoint", str(run), "--data", str(bad_file), "--device", "cpu"],
        "generate": [
            "generate",
            "--checkpoint",
            str(run),
            "--prompt-file",
            str(bad_file),
            "--max-new-tokens",
            "2",
            "--device",
            "cpu",
        ],  # fmt: skip
        "prepare": ["prepare", "--data", str(bad_file), "--tokenizer", "char", "--out", str(tmp_path / "p")],
        "tokenizer train": [
            "tokenizer",
            "train",
            "--kind",
            "char",
            "--data",
            str(bad_file),
            "--out",
            str(tmp_path / "t"),
        ],
    }


@pytest.mark.parametrize("command", ["evaluate", "generate", "prepare", "tokenizer train"])
def test_the_hint_names_a_flag_the_command_has(command, run, bad_file, tmp_path, capsys):
    args = commands(run, bad_file, tmp_path)[command]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {bad_file}: byte offset 2 (line 1) is not valid UTF-8 (0xFF, invalid start byte); "
        "convert it to UTF-8, or pass --errors replace to read bad bytes as U+FFFD"
    ]
    assert main([*args, "--errors", "replace"]) == 0


def test_evaluate_reads_a_bad_byte_as_one_replacement_character(run, bad_file, capsys):
    capsys.readouterr()
    args = ["evaluate", "--checkpoint", str(run), "--data", str(bad_file), "--errors", "replace", "--json"]
    assert main(args) == 0
    # "ab\ufffdcd": 5 characters, 5 ids (U+FFFD is <unk>), every one but the first predicted once
    assert json.loads(capsys.readouterr().out)["tokens"] == 4


def test_generate_prompt_file_gets_the_replacement_character(run, bad_file, capsys):
    capsys.readouterr()
    args = ["generate", "--checkpoint", str(run), "--prompt-file", str(bad_file), "--errors", "replace"]
    assert main([*args, "--max-new-tokens", "1", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["prompt"] == "ab\ufffdcd"

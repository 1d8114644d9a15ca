"""A run path that is a file is reported as a file (not as missing), by every command that reads runs."""

from __future__ import annotations

import pytest

from lmforge.cli import main
from tests.tiny_run import make_run

COMMANDS = {
    "evaluate": ["evaluate", "--checkpoint", "{path}", "--data", "{text}"],
    "generate": ["generate", "--checkpoint", "{path}"],
    "score": ["score", "--checkpoint", "{path}", "--text", "hi"],
    "attention": ["attention", "--checkpoint", "{path}", "--text", "hi", "--out", "{tmp}/a.png"],
    "pretrain --resume": ["pretrain", "--resume", "{path}"],
    "convert --to-hf": ["convert", "--to-hf", "{path}", "--out", "{tmp}/hf"],
}
FLAG = {"pretrain --resume": "--resume", "convert --to-hf": "--to-hf"}


def error_line(capsys, template: list[str], path, tmp_path) -> str:
    text = tmp_path / "c.txt"
    text.write_text("some text\n", encoding="utf-8")
    args = [a.format(path=path, text=text, tmp=tmp_path) for a in template]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_is_not_reported_as_missing(command, tmp_path, capsys):
    flag = FLAG.get(command, "--checkpoint")
    path = tmp_path / "c.txt"
    line = error_line(capsys, COMMANDS[command], path, tmp_path)
    assert line == (
        f"error: {flag} {path} is a file, not a run directory; give a run directory written by `lmforge pretrain`"
    )
    assert not (tmp_path / "hf").exists() and not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("command", ["evaluate", "pretrain --resume"])
def test_a_file_inside_a_run_names_the_run(command, tmp_path, capsys):
    run = make_run(tmp_path / "run")
    flag = FLAG.get(command, "--checkpoint")
    weights = run.weights_path()
    line = error_line(capsys, COMMANDS[command], weights, tmp_path)
    assert line == (
        f"error: {flag} {weights} is a file, not a run directory; give the run directory that holds it, "
        f"{flag} {run.path}"
    )


def test_a_missing_path_still_says_so(tmp_path, capsys):
    line = error_line(capsys, COMMANDS["generate"], tmp_path / "nope", tmp_path)
    assert (
        line
        == f"error: --checkpoint {tmp_path / 'nope'} does not exist; give a run directory written by `lmforge pretrain`"
    )

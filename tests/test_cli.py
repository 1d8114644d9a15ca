"""The CLI framework: help comes from signatures and docstrings; errors become one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from lmforge import cli
from lmforge.commands._args import build_parser, parse_docstring
from lmforge.errors import DataError


def sample_command(
    text: str,
    *,
    count: int = 3,
    ratio: float = 0.5,
    mode: Literal["a", "b"] = "a",
    paths: list[Path] | None = None,
    flag: bool = False,
    out: Path,
    as_json: bool = False,
) -> None:
    """Do a sample thing.

    A second paragraph of description.

    Args:
        text: the text to use.
        count: how many times,
            continued on a second line.
        out: where to write.

    Examples:
        lmforge sample hello --out x
    """


def test_docstring_sections_are_split():
    description, arg_help, examples = parse_docstring(sample_command.__doc__)
    assert description.startswith("Do a sample thing.")
    assert "second paragraph" in description
    assert arg_help == {
        "text": "the text to use.",
        "count": "how many times, continued on a second line.",
        "out": "where to write.",
    }
    assert examples.strip() == "lmforge sample hello --out x"


def test_parser_follows_signature_types_and_defaults():
    parser = build_parser(sample_command, "lmforge sample")
    args = parser.parse_args(
        ["hi", "--out", "o", "--count", "5", "--mode", "b", "--paths", "p1", "p2", "--flag", "--json"]
    )
    assert vars(args) == {
        "text": "hi",
        "count": 5,
        "ratio": 0.5,
        "mode": "b",
        "paths": [Path("p1"), Path("p2")],
        "flag": True,
        "out": Path("o"),
        "as_json": True,
    }
    defaults = parser.parse_args(["hi", "--out", "o"])
    assert defaults.count == 3 and defaults.flag is False and defaults.paths is None


def test_a_list_flag_given_twice_keeps_every_item():
    parser = build_parser(sample_command, "lmforge sample")
    args = parser.parse_args(["hi", "--out", "o", "--paths", "p1", "p2", "--paths", "p3"])
    assert args.paths == [Path("p1"), Path("p2"), Path("p3")]


def test_parser_rejects_bad_choice_and_missing_required(capsys):
    parser = build_parser(sample_command, "lmforge sample")
    with pytest.raises(SystemExit) as bad_choice:
        parser.parse_args(["hi", "--out", "o", "--mode", "c"])
    assert bad_choice.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["hi"])
    assert "--out" in capsys.readouterr().err


def test_help_text_carries_docstring(capsys):
    with pytest.raises(SystemExit):
        build_parser(sample_command, "lmforge sample").parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Do a sample thing." in out and "how many times, continued" in out and "(default: 3)" in out
    assert "lmforge sample hello --out x" in out


def test_library_error_becomes_one_line_and_exit_2(monkeypatch, capsys):
    def failing(*, path: str) -> None:
        """Fail."""
        raise DataError(f"{path} has no text; give a file with some")

    monkeypatch.setitem(cli.COMMANDS, "failing", ("Fail.", "tests.test_cli:failing"))
    monkeypatch.setattr(cli, "_load", lambda target: failing)
    assert cli.main(["failing", "--path", "x.txt"]) == 2
    err = capsys.readouterr().err
    assert err == "error: x.txt has no text; give a file with some\n"
    with pytest.raises(DataError):
        cli.main(["failing", "--path", "x.txt", "--debug"])


def test_unexpected_error_exit_1(monkeypatch, capsys):
    def broken() -> None:
        """Break."""
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(cli.COMMANDS, "broken", ("Break.", "x:y"))
    monkeypatch.setattr(cli, "_load", lambda target: broken)
    assert cli.main(["broken"]) == 1
    assert "ZeroDivisionError: boom" in capsys.readouterr().err


CHATTY = """
import sys
from lmforge import cli

def chatty():
    "Talk."
    for i in range(200000):
        print("line", i)

cli.COMMANDS["chatty"] = ("Talk.", "x:y")
cli._load = lambda target: chatty
sys.exit(cli.main(["chatty"]))
"""


def test_a_reader_that_leaves_early_is_not_an_error():
    """`lmforge ... | head -1`: the pipe closes under a long output; exit 0, nothing on stderr."""
    import os
    import subprocess
    import sys

    shell = f'{sys.executable} -c "$SCRIPT" | head -1; echo status ${{PIPESTATUS[0]}}'
    result = subprocess.run(
        ["bash", "-c", shell],
        env={
            "SCRIPT": CHATTY,
            "PATH": "/usr/bin:/bin",
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        },
        capture_output=True,
        text=True,
    )
    assert result.stdout == "line 0\nstatus 0\n" and result.stderr == ""


def test_unknown_command_is_one_error_line_and_exit_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'no-such-command'") and len(err.splitlines()) == 1
    assert cli.main(["pretrian"]) == 2
    assert "did you mean 'pretrain'?" in capsys.readouterr().err


def test_unknown_flag_and_bad_value_are_one_error_line_and_exit_2(capsys):
    for argv in (["pretrain", "--no-such-flag", "1"], ["pretrain", "--lr", "fast"], ["tokenizer", "nope"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1, (argv, err)
        assert "usage:" not in err


def test_top_level_help_does_not_import_torch():
    code = "import sys; from lmforge.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "tokenizer" in result.stdout and result.stdout.strip().endswith("False")


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("lmforge ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["generate", "--checkpoint", "r", "--temperature", "nan"],
            "--temperature must be a finite number; got nan",
        ),
        (
            ["generate", "--checkpoint", "r", "--max-new-tokens", "99999999999"],
            "--max-new-tokens must be at most 1,000,000",
        ),
        (["generate", "--checkpoint", "r", "--batch-size", "-2"], "--batch-size must be positive; got -2"),
        (
            ["generate", "--checkpoint", "r", "--min-new-tokens", "-1"],
            "--min-new-tokens must be zero or more",
        ),
        (
            ["evaluate", "--checkpoint", "r", "--data", "x", "--batch-size", "-1"],
            "--batch-size must be positive; got -1",
        ),
        (
            ["evaluate", "--checkpoint", "r", "--data", "x", "--stride", "0"],
            "--stride must be positive; got 0",
        ),
        (
            ["score", "--checkpoint", "r", "--text", "x", "--stride", "inf"],
            "argument --stride: invalid int value",
        ),
        (
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--vocab-size",
                "99999999999",
                "--data",
                "x",
                "--out",
                "t",
            ],
            "--vocab-size must be at most 1,000,000",
        ),
        (
            ["pretrain", "--data", "d", "--out", "o", "--max-time", "nan"],
            "--max-time must be a finite number",
        ),
    ],
)
def test_out_of_bounds_values_are_one_line_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be created: the value is refused while parsing
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_value_out_of_bounds_is_refused_like_a_flag(tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"temperature": -1}')
    assert cli.main(["generate", "--checkpoint", "r", "--config", str(recipe)]) == 2
    assert "--temperature must be zero or more; got -1" in capsys.readouterr().err

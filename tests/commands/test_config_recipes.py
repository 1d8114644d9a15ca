"""--config recipe files: the same keys as the flags, the command line wins, bad keys are named."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from lmforge.commands._args import build_parser, parse_with_config
from lmforge.errors import UserInputError


def train(
    *,
    data: Path,
    lr: float = 3e-3,
    batch_size: int = 12,
    precision: Literal["fp32", "bf16"] = "fp32",
    compile: bool = False,
) -> None:
    """Train.

    Args:
        data: a directory.
        lr: learning rate.
        batch_size: sequences per batch.
        precision: fp32 or bf16.
        compile: compile the model.
    """


def parse(argv: list[str]):
    return vars(parse_with_config(build_parser(train, "lmforge train"), argv))


@pytest.mark.parametrize(
    "name, text",
    [
        ("r.yaml", "data: d\nlr: 0.001\nbatch-size: 8\nprecision: bf16\ncompile: true\n"),
        ("r.toml", 'data = "d"\nlr = 0.001\nbatch_size = 8\nprecision = "bf16"\ncompile = true\n'),
        ("r.json", '{"data": "d", "lr": 0.001, "batch-size": 8, "precision": "bf16", "compile": true}'),
    ],
)
def test_recipe_sets_flags_and_the_command_line_wins(tmp_path, name, text):
    recipe = tmp_path / name
    recipe.write_text(text, encoding="utf-8")
    args = parse(["--config", str(recipe)])
    assert args == {"data": Path("d"), "lr": 0.001, "batch_size": 8, "precision": "bf16", "compile": True}
    assert parse(["--config", str(recipe), "--lr", "0.5"])["lr"] == 0.5


def test_without_a_recipe_nothing_changes():
    assert parse(["--data", "d"]) == {
        "data": Path("d"),
        "lr": 3e-3,
        "batch_size": 12,
        "precision": "fp32",
        "compile": False,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: d\nlrr: 1\n", "'lrr' is not a flag of lmforge train"),
        ("data: d\nprecision: fp64\n", "precision must be one of fp32, bf16; got 'fp64'"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("data: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_recipes_are_named(tmp_path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError, match=message.replace("[", r"\[")):
        parse(["--config", str(recipe)])


def test_a_missing_recipe_is_one_line_through_the_cli(tmp_path, capsys):
    from lmforge.cli import main

    assert main(["pretrain", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.yaml cannot be read" in err and "\n" not in err


@pytest.mark.parametrize(
    "recipe, message",
    [
        ('overwrite: "maybe"', "overwrite is a switch: give true or false"),
        ("lr: fast", "lr must be a number; got 'fast'"),
        ("batch-size: 2.5", "batch-size must be a whole number; got 2.5"),
        ("batch-size: true", "batch-size must be a whole number; got True"),
        ("max-steps: [1, 2]", "max-steps must be a whole number"),
    ],
)
def test_a_recipe_value_of_the_wrong_kind_is_one_error_line(tmp_path, capsys, recipe, message):
    from lmforge.cli import main

    path = tmp_path / "recipe.yaml"
    path.write_text(recipe + "\n")
    assert main(["pretrain", "--config", str(path), "--data", "d", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_a_string_false_in_a_recipe_does_not_switch_overwrite_on(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text('overwrite: "false"\nprogress: "no"\n')
    from lmforge.commands._args import build_parser, parse_with_config
    from lmforge.commands.pretrain import pretrain

    args = parse_with_config(build_parser(pretrain, "lmforge pretrain"), ["--config", str(path)])
    assert args.overwrite is False and args.progress is False

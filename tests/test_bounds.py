"""The flag rules of ``lmforge.bounds``: what each refuses, and that the message names flag and value."""

from __future__ import annotations

import pytest

from lmforge.bounds import DEVICE, PROBABILITY, SEED, Bounds, InputPath, Named, OutputPath, Text
from lmforge.errors import UserInputError


@pytest.mark.parametrize(
    "rule, value, message",
    [
        (Bounds(positive=True), 0, "--x must be positive; got 0"),
        (Bounds(non_negative=True), -3, "--x must be zero or more; got -3"),
        (Bounds(), float("nan"), "--x must be a finite number; got nan"),
        (Bounds(at_most=1_000_000), 1_000_001, "--x must be at most 1,000,000; got 1,000,001"),
        (PROBABILITY, 1.5, "--x must be at most 1; got 1.5"),
        (Bounds(at_most=0.5), 0.75, "--x must be at most 0.5; got 0.75"),
        (Bounds(positive=True, below=1.0), 1.0, "--x must be strictly between 0 and 1; got 1.0"),
        (Bounds(positive=True, below=1.0), 0.0, "--x must be strictly between 0 and 1; got 0.0"),
        (SEED, 2**32, "--x must be at most 4,294,967,295"),
        (Text(what="a name"), "  ", "--x is empty; give a name"),
        (Text(what="a name"), ["ok", ""], "--x is empty; give a name"),
        (DEVICE, "tpu", "--x 'tpu' is not a known device"),
        (Named(lambda: ["gpt-nano", "gpt2"], "model preset"), "gpt-nanoo", "did you mean 'gpt-nano'?"),
    ],
)
def test_a_value_outside_its_rule_is_one_message_naming_flag_and_value(rule, value, message):
    with pytest.raises(UserInputError) as caught:
        rule.check("--x", value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "rule, value",
    [
        (Bounds(positive=True), 1),
        (Bounds(positive=True), None),  # not given
        (Bounds(positive=True), True),  # a switch is not a number
        (Bounds(positive=True, below=1.0), 0.999),
        (PROBABILITY, 0.0),
        (Text(free=True), ""),
        (DEVICE, "cuda:1"),
        (DEVICE, "cpu"),
    ],
)
def test_a_value_inside_its_rule_passes(rule, value):
    rule.check("--x", value)


def test_paths_of_the_wrong_kind(tmp_path):
    a_file, a_dir = tmp_path / "f.txt", tmp_path / "d"
    a_file.write_text("x")
    a_dir.mkdir()
    cases = [
        (InputPath("dir", "a run"), a_file, "is a file, not a directory; give a run"),
        (InputPath("dir", "a run", "run directory"), a_file, "is a file, not a run directory; give a run"),
        (InputPath("file", "a prompt file"), a_dir, "is a directory, not a file"),
        (InputPath("any", "a source"), tmp_path / "absent", "does not exist; give a source"),
        (InputPath("dir", "a run"), "", "--x is empty"),
        (OutputPath("dir"), a_file, "is a file; give a directory"),
        (OutputPath("dir"), a_file / "under", "is a file, so nothing can be written under it"),
        (OutputPath("file"), a_dir, "is a directory; give a file name"),
    ]
    for rule, value, message in cases:
        with pytest.raises(UserInputError, match=message):
            rule.check("--x", value)
    InputPath("dir", "a run").check("--x", a_dir)
    OutputPath("dir").check("--x", tmp_path / "new" / "deeper")
    OutputPath("file").check("--x", a_file)  # replacing it is the command's call (--overwrite)

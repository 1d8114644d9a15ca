"""Fuzzing every flag of every command with its bad values.

Each command has a baseline command line that works (``test_baselines_run``). For each flag, the
harness replaces or adds that flag with a value drawn from one of its bad classes, read from the
flag's declared rule (``lmforge.bounds``) and its argparse type: negative, zero, NaN, infinite,
huge, of the wrong type, empty, a path that is missing or of the wrong kind, an output equal to an
input or to a folder of someone else's files, text that is not UTF-8. Then it asserts what the
README promises: exit status 2, one line starting with ``error:``, no traceback, every file of
the workspace byte-for-byte unchanged and nothing new left behind. The same values are also given
through a ``--config`` recipe.

A new command is fuzzed by being listed in ``lmforge.cli.COMMANDS`` and given a baseline here;
``test_every_flag_declares_what_it_allows`` makes each of its flags declare a rule. The default run
draws a few values per (flag, class); ``-m slow`` draws many more.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge import bounds
from lmforge.cli import COMMANDS, _load, main
from lmforge.commands._args import build_parser, rules_of
from tests.tiny_run import TEXT, make_bert_run, make_run

DEFAULT_EXAMPLES = 3
SLOW_EXAMPLES = 40

# A command line that works, per command: {flag: value(s)} and positionals by name. Outputs are
# named new_*: after a refused command none of them may exist.
BASELINES: dict[str, dict[str, object]] = {
    "tokenizer train": {"--kind": "char", "--data": ["corpus.txt"], "--out": "new_tok"},
    "tokenizer encode": {"--tokenizer": "tok", "text": "First"},
    "tokenizer decode": {"--tokenizer": "tok", "ids": ["1", "2"]},
    "prepare": {"--data": ["corpus"], "--tokenizer": "char", "--out": "new_prep", "--no-progress": None},
    "corpora": {},
    "pretrain": {
        "--data": "prep",
        "--out": "new_run",
        "--model": "gpt-nano",
        "--max-steps": "1",
        "--batch-size": "2",
        "--block-size": "16",
        "--eval-every": "1",
        "--eval-batches": "1",
        "--no-progress": None,
    },
    "evaluate": {"--checkpoint": "run", "--data": ["prep"], "--batch-size": "2"},
    "generate": {"--checkpoint": "run", "--prompt": "Fi", "--max-new-tokens": "2"},
    # --check: load and exit; without it a value the harness fails to make bad would start a server
    "serve": {"--checkpoint": "run", "--check": None},
    "score": {"--checkpoint": "run", "--text": "First"},
    "attention": {"--checkpoint": "run", "--text": "First", "--out": "new_attention.png"},
    "fill-mask": {"--checkpoint": "bert", "--text": "first [MASK] speak", "--top-k": "2"},
    "embed": {
        "--checkpoint": "run",
        "--text": ["First", "Citizen"],
        "--file": "corpus.txt",
        "--batch-size": "2",
    },
    "probe": {"--checkpoint": "run", "--text": "First ___", "--candidates": "Citizen,All"},
    "convert": {"--from-hf": "hf", "--out": "new_converted"},
    "demo": {"--minutes": "0.05", "--out": "new_demo", "--vocab-size": "300"},
    "finetune classify": {
        "--checkpoint": "run",
        "--train": "labelled.jsonl",
        "--val": "labelled.jsonl",
        "--out": "new_classifier",
        "--max-steps": "1",
        "--batch-size": "2",
        "--no-progress": None,
    },
    "predict": {"--checkpoint": "classifier", "--text": ["First"]},
    "align reward": {
        "--checkpoint": "long_run",
        "--data": "prefs.jsonl",
        "--val": "prefs.jsonl",
        "--out": "new_rm",
        "--max-steps": "1",
        "--batch-size": "2",
        "--no-progress": None,
    },
    "align dpo": {
        "--checkpoint": "long_run",
        "--data": "prefs.jsonl",
        "--val": "prefs.jsonl",
        "--out": "new_dpo",
        "--max-steps": "1",
        "--batch-size": "2",
        "--no-progress": None,
    },
    "reward": {"--checkpoint": "rm", "--prompt": "First", "--response": ["Speak"]},
    "estimate": {"--model": "gpt2", "--tokens": "1e9", "--gpus": "8"},
    "inspect": {"--model": "gpt-nano", "--depth": "2"},
}
NOT_RUN_AS_BASELINE = {"demo"}  # minutes long; tests/commands/test_demo.py runs it

# Paths of the workspace by kind, for drawing "a path of the wrong kind".
A_FILE, A_DIR, FOREIGN_DIR = "corpus.txt", "corpus", "someone_elses"
INPUTS = {  # the directories each baseline reads: an --out equal to one must never replace it
    "tokenizer train": [],
    "prepare": ["corpus"],
    "pretrain": ["prep"],
    "attention": [],
    "embed": ["corpus.txt"],
    "convert": ["hf"],
    "demo": [],
    "finetune classify": ["run"],
    "align reward": ["long_run"],
    "align dpo": ["long_run"],
}
NOT_UTF8 = "Fi\udcffrst"  # how Python hands a command line byte 0xFF over (surrogateescape)


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for name, (_, target) in COMMANDS.items():
        targets = target if isinstance(target, dict) else {"": target}
        for sub, sub_target in targets.items():
            prog = f"{name} {sub}".strip()
            found.append((prog, build_parser(_load(sub_target), f"lmforge {prog}")))
    return found


def flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.dest not in ("help",) and not a.dest.startswith("_")]


def flag_key(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


# ---------------------------------------------------------------------------- the bad classes


def bad_classes(prog: str, action: argparse.Action, rule: object) -> dict[str, st.SearchStrategy]:
    """Each class of bad value this flag must refuse, as a strategy of command-line strings."""
    classes: dict[str, st.SearchStrategy] = {}
    if action.nargs == 0:  # a switch: nothing bad to say on a command line (see the recipes)
        return classes
    if action.choices is not None:
        choices = set(map(str, action.choices))
        classes["not a choice"] = st.sampled_from(["bogus", "", "CHAR", "fp64"]).filter(
            lambda v: v not in choices
        )
        return classes
    if action.type in (int, float):
        kind_of = "a whole number" if action.type is int else "a number"
        wrong = ["abc", "", "1,5", "0x1g"] + (["1.5", "2e3"] if action.type is int else [])
        classes[f"not {kind_of}"] = st.sampled_from(wrong)
        if action.type is float:
            classes["not finite"] = st.sampled_from(["nan", "inf", "-inf", "NaN"])
        if isinstance(rule, bounds.Bounds):
            if rule.positive:
                classes["zero"] = st.sampled_from(["0", "-0"] if action.type is int else ["0", "0.0", "-0.0"])
            if rule.positive or rule.non_negative:
                classes["negative"] = st.integers(max_value=-1, min_value=-(10**12)).map(
                    str
                ) | st.sampled_from(["-1e-9"] if action.type is float else ["-1"])
            if rule.at_most is not None:
                classes["huge"] = st.integers(min_value=int(rule.at_most) + 1, max_value=10**30).map(str)
            if rule.below is not None:
                classes["too large"] = st.sampled_from([str(rule.below), str(rule.below * 2)])
        return classes
    if isinstance(rule, bounds.InputPath):
        wrong_kind = {"dir": A_FILE, "file": A_DIR, "any": None}[rule.kind]
        classes["missing path"] = st.sampled_from(["no_such_thing", "corpus/absent/x", ""])
        if wrong_kind:
            classes["path of the wrong kind"] = st.just(wrong_kind)
        if rule.kind == "dir":
            classes["a folder of other files"] = st.sampled_from([FOREIGN_DIR, "corpus"])
    elif isinstance(rule, bounds.OutputPath):
        classes["empty"] = st.just("")
        if rule.kind == "dir":
            classes["an existing file"] = st.sampled_from([A_FILE, f"{A_FILE}/under"])
            classes["someone else's folder"] = st.just(FOREIGN_DIR)
            classes["an input or its ancestor"] = st.sampled_from(INPUTS.get(prog, []) + [".", ".."])
        else:
            classes["a directory"] = st.sampled_from([A_DIR, "."])
            classes["an existing file"] = st.just(A_FILE)
    elif isinstance(rule, bounds.Named):
        classes["unknown name"] = st.sampled_from(["bogus", "", "gpt-nanoo", "cuda:x"])
    elif isinstance(rule, bounds.Text) and not rule.free:
        classes["empty"] = st.sampled_from(["", "  ", "\n"])
        if rule is bounds.SOURCES:
            classes["missing source"] = st.sampled_from(["no_such_file.txt", "missing/*.txt"])
            classes["not text"] = st.sampled_from(["run/model.safetensors", "empty.txt"])
    if action.type in (None, str) or isinstance(rule, bounds.Text):
        classes["not UTF-8"] = st.just(NOT_UTF8)
    return classes


def fuzz_cases() -> list:
    cases = []
    for prog, parser in commands():
        if prog not in BASELINES:
            continue
        rules = rules_of(parser)
        for action in flags(parser):
            for name in bad_classes(prog, action, rules.get(action.dest)):
                cases.append(
                    pytest.param(prog, flag_key(action), name, id=f"{prog}|{flag_key(action)}|{name}")
                )
    return cases


# ---------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("fuzz")
    (ws / A_FILE).write_text(TEXT * 4, encoding="utf-8")
    (ws / A_DIR).mkdir()
    (ws / A_DIR / "part.txt").write_text(TEXT * 4, encoding="utf-8")
    (ws / FOREIGN_DIR).mkdir()
    (ws / FOREIGN_DIR / "thesis.tex").write_text("years of work")
    (ws / "empty.txt").write_text("")
    (ws / "broken.json").write_text("{")
    labelled = [{"text": line, "label": str(i % 2)} for i, line in enumerate(TEXT.splitlines()) if line]
    (ws / "labelled.jsonl").write_text("".join(json.dumps(row) + "\n" for row in labelled), encoding="utf-8")
    make_run(ws / "run")
    make_bert_run(ws / "bert")
    make_run(ws / "long_run", block_size=48)  # room for a chat-rendered prompt and a response
    lines = [line for line in TEXT.splitlines() if line]
    pairs = [{"prompt": a, "chosen": b, "rejected": a} for a, b in zip(lines, lines[1:])]
    (ws / "prefs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in pairs), encoding="utf-8")
    with working_directory(ws):
        for argv in (
            ["tokenizer", "train", "--kind", "char", "--data", A_FILE, "--out", "tok"],
            ["prepare", "--data", A_DIR, "--tokenizer", "char", "--out", "prep", "--no-progress"],
            ["convert", "--to-hf", "run", "--out", "hf"],
            [
                "finetune",
                "classify",
                "--checkpoint",
                "run",
                "--train",
                "labelled.jsonl",
                "--val",
                "labelled.jsonl",
                "--out",
                "classifier",
                "--max-steps",
                "1",
                "--no-progress",
            ],
            ["align", "reward", "--checkpoint", "long_run", "--data", "prefs.jsonl", "--val", "prefs.jsonl"]
            + ["--out", "rm", "--max-steps", "1", "--no-progress"],
        ):
            code, _, err = invoke(argv)
            assert code == 0, err
    shutil.copytree(ws, PRISTINE(ws))
    return ws


def PRISTINE(ws: Path) -> Path:  # noqa: N802 - a constant per workspace
    return ws.parent / f"{ws.name}-pristine"


@contextlib.contextmanager
def working_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def restore(root: Path) -> None:
    """Undo what a faulty command did, so that one failure does not cascade into the next cases."""
    shutil.rmtree(root)
    shutil.copytree(PRISTINE(root), root)


def command_line(prog: str, overrides: dict[str, object], drop: str | None = None) -> list[str]:
    """The baseline of ``prog`` with ``overrides`` (None value: a switch), less ``drop``, as argv."""
    values = {k: v for k, v in {**BASELINES[prog], **overrides}.items() if k != drop}
    argv = prog.split()
    positionals = []
    for key, value in values.items():
        items = value if isinstance(value, list) else [] if value is None else [value]
        if key.startswith("--"):
            argv += [key, *items]
        else:
            positionals += items
    return argv + (["--", *positionals] if positionals else [])


def assert_refused(ws: Path, argv: list[str]) -> None:
    before = snapshot(ws)
    with working_directory(ws):
        code, out, err = invoke(argv)
    after = snapshot(ws)
    if after != before:
        restore(ws)
    shown = " ".join(map(repr, argv))
    assert "Traceback" not in err + out, f"{shown}\n{err}"
    assert code == 2, f"exit {code} for {shown}\nstdout: {out[-500:]}\nstderr: {err[-800:]}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"{shown}\nstderr: {err!r}"
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(set(after) - set(before))
    assert not changed, f"{shown} changed or deleted {changed}"
    assert not added, f"{shown} left {added}"


# ---------------------------------------------------------------------------- the tests


def test_every_flag_declares_what_it_allows():
    """A flag that takes a value has choices or a rule; so a new flag is fuzzed, not forgotten."""
    undeclared = []
    for prog, parser in commands():
        rules = rules_of(parser)
        for action in flags(parser):
            if action.nargs != 0 and action.choices is None and action.dest not in rules:
                undeclared.append(f"{prog} {flag_key(action)}")
    assert not undeclared, f"declare a rule (lmforge.bounds) for: {', '.join(undeclared)}"


def test_every_command_has_a_baseline():
    assert {prog for prog, _ in commands()} == set(BASELINES)


@pytest.mark.parametrize("prog", sorted(set(BASELINES) - NOT_RUN_AS_BASELINE))
def test_baselines_run(workspace, prog):
    """The harness's baselines work, so a refusal below is the bad value's doing."""
    before = snapshot(workspace)
    with working_directory(workspace):
        code, _, err = invoke(command_line(prog, {}))
    if snapshot(workspace) != before:
        restore(workspace)
    assert code == 0, err


def _fuzz(
    workspace: Path, data: st.DataObject, prog: str, flag: str, bad_class: str, via_config: bool
) -> None:
    parser = dict(commands())[prog]
    action = next(a for a in flags(parser) if flag_key(a) == flag)
    value = data.draw(bad_classes(prog, action, rules_of(parser).get(action.dest))[bad_class], label=flag)
    overrides: dict[str, object] = {}
    can_overwrite = any("--overwrite" in a.option_strings for a in flags(parser))
    risky = bad_class in ("an input or its ancestor", "someone else's folder") and can_overwrite
    if risky and data.draw(st.booleans(), label="--overwrite"):
        overrides["--overwrite"] = None  # even then: never someone else's files, never the input
    if not via_config:
        overrides[flag] = [value] if action.nargs in ("+", "*") else value
        assert_refused(workspace, command_line(prog, overrides))
        return
    if not flag.startswith("--") or value == NOT_UTF8:
        return  # positionals have no recipe key; a recipe is read as UTF-8
    recipe = workspace.parent / f"{workspace.name}-recipe.json"
    recipe.write_text(json.dumps({flag[2:]: [value] if action.nargs in ("+", "*") else value}))
    argv = command_line(prog, overrides, drop=flag)  # the command line would win over the recipe
    assert_refused(workspace, [*argv, "--config", str(recipe)])


FUZZ_SETTINGS = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}


@pytest.mark.parametrize("prog, flag, bad_class", fuzz_cases())
@settings(max_examples=DEFAULT_EXAMPLES, **FUZZ_SETTINGS)
@given(data=st.data())
def test_a_bad_value_is_one_line_and_touches_nothing(workspace, prog, flag, bad_class, data):
    _fuzz(workspace, data, prog, flag, bad_class, via_config=False)


@pytest.mark.parametrize("prog, flag, bad_class", fuzz_cases())
@settings(max_examples=1, **FUZZ_SETTINGS)
@given(data=st.data())
def test_a_bad_recipe_value_is_refused_the_same(workspace, prog, flag, bad_class, data):
    _fuzz(workspace, data, prog, flag, bad_class, via_config=True)


@pytest.mark.slow
@pytest.mark.parametrize("prog, flag, bad_class", fuzz_cases())
@settings(max_examples=SLOW_EXAMPLES, **FUZZ_SETTINGS)
@given(data=st.data())
def test_many_bad_values(workspace, prog, flag, bad_class, data):
    _fuzz(workspace, data, prog, flag, bad_class, via_config=data.draw(st.booleans(), label="via --config"))


@pytest.mark.parametrize("prog", sorted(BASELINES))
@pytest.mark.parametrize("config", ["missing.yaml", "corpus", "corpus.txt", "broken.json"])
def test_a_bad_config_file_is_one_line(workspace, prog, config):
    assert_refused(workspace, [*command_line(prog, {}), "--config", config])


@pytest.mark.parametrize("prog", sorted(BASELINES))
@pytest.mark.parametrize("switch_value", ["maybe", 3, [True]])
def test_a_switch_in_a_recipe_takes_a_boolean(workspace, prog, switch_value):
    parser = dict(commands())[prog]
    switches = [flag_key(a) for a in flags(parser) if a.nargs == 0 and a.option_strings]
    if not switches:
        pytest.skip(f"{prog} has no switch")
    recipe = workspace.parent / f"{workspace.name}-switch.json"
    recipe.write_text(json.dumps({switches[0][2:]: switch_value}))
    assert_refused(workspace, [*command_line(prog, {}), "--config", str(recipe)])

"""Every ``Examples:`` line of every ``--help`` is a command that exists, parses and (where it
needs no data of the user's and no network) runs.

* Fast, default run: each example line names a real command and subcommand, its quoting is valid
  shell (no unquoted ``<``, ``>``, ``;``, ``&``), and the command's own parser (``build_parser``
  + ``parse_with_config``, as ``lmforge.cli.main`` uses them) accepts its flags. An input the
  examples do not create themselves is a download (a catalog name, ``hf:``, a URL) or a
  self-explanatory placeholder (``my_...``, ``path/to/...``).
* Run (about 30 s, in the default run too): the examples that read only ``builtin:`` data or what an earlier example wrote are run
  in-process with ``lmforge.cli.main``, in the order ``lmforge --help`` lists the commands, in one
  temporary directory, and must exit 0.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

from lmforge import cli
from lmforge.bounds import split_weight
from lmforge.commands._args import PATH_RULES, build_parser, parse_docstring, parse_with_config
from lmforge.data.catalog import CATALOG

INPUT_FLAGS = (
    "--data", "--checkpoint", "--resume", "--tokenizer", "--prompt-file", "--to-hf", "--from-hf", "--policy",
)  # fmt: skip
TOKENIZER_KINDS = ("char", "word", "bpe", "wordpiece", "unigram")
PLACEHOLDERS = ("my_", "path/to/", "$(")  # $(...): a path a command prints, e.g. an installed model
# As written, the runs take minutes on a 2-core CPU: the test appends a cap of the command's own
# (2 optimizer steps, one validation batch; a 1% validation split so that evaluating all of it,
# as the evaluate example does, takes seconds). Nothing else differs from the --help text.
STEP_CAPS = {
    "prepare": ["--val-fraction", "0.01"],
    "pretrain": ["--max-steps", "2", "--eval-batches", "1"],
    "finetune classify": ["--max-steps", "2"],
}
RESUME_CAP = ["--max-steps", "4", "--eval-batches", "1"]  # a resumed run goes past the first 2 steps


def step_cap_of(argv: list[str]) -> str | None:
    """The STEP_CAPS key whose words start ``argv`` ("finetune classify" for a subcommand), or None."""
    return next((key for key in STEP_CAPS if argv[: len(key.split())] == key.split()), None)


def help_examples() -> list[tuple[str, str]]:
    """(command path as in ``lmforge --help``, example line) for every command, in menu order."""
    examples = []
    for name, (_, target) in cli.COMMANDS.items():
        targets = target.items() if isinstance(target, dict) else [("", target)]
        for sub, sub_target in targets:
            _, _, text = parse_docstring(cli._load(sub_target).__doc__)
            for line in text.splitlines():
                if line.strip():
                    examples.append((f"{name} {sub}".strip(), line.strip()))
    return examples


def shell_problem(line: str) -> str | None:
    """Why ``line`` would not run as written in a POSIX shell, or None."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError as error:  # an unclosed quote
        return f"quoting: {error}"
    operators = [w for w in words if w and set(w) <= set("();<>|&")]
    if any(op != "|" for op in operators):
        return f"unquoted shell operator(s) {operators}: quote the value"
    return None


def argv_of(line: str) -> list[str]:
    """The arguments after ``lmforge``; anything after a pipe is left out."""
    words = shlex.split(line, comments=True)
    if "|" in words:
        words = words[: words.index("|")]
    assert words[0] == "lmforge", line
    return words[1:]


def parse_problem(argv: list[str]) -> str | None:
    """Why the real parser refuses ``lmforge ARGV``, or None; nothing is run."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            prog, target, rest = cli._resolve(argv)
            parser = build_parser(cli._load(target), prog)
            # Paths need not exist here (whether an earlier step writes them is checked apart).
            rules = parser.get_default("_rules") or {}
            parser.set_defaults(_rules={k: v for k, v in rules.items() if not isinstance(v[1], PATH_RULES)})
            parse_with_config(parser, rest)
    except SystemExit as stop:
        return None if stop.code in (0, None) else f"exit {stop.code}: {stderr.getvalue().strip()}"
    except Exception as error:  # noqa: BLE001 - an unknown command is an LMForgeError
        return f"{type(error).__name__}: {error}"
    return None


def _values(words: list[str], index: int) -> list[str]:
    values = []
    for word in words[index + 1 :]:
        if word.startswith("-"):
            break
        values.append(word)
    return values


def is_download(value: str) -> bool:
    return value in CATALOG or value.startswith(("hf:", "https://", "http://"))


def plan(examples: list[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    """(command, line, why it is not run or None) for each example: runnable ones chain."""
    produced: set[str] = set()
    planned = []
    for command, line in examples:
        words = argv_of(line)
        why = None
        for index, word in enumerate(words):
            if word not in INPUT_FLAGS:
                continue
            # --data takes several sources; the others one path (a positional may follow)
            values = _values(words, index) if word == "--data" else _values(words, index)[:1]
            for value in values:
                value = split_weight(value)[0].rstrip("/")  # a mixture's DIR:WEIGHT reads DIR
                if value.startswith("builtin:") or value in produced:
                    continue
                if word == "--tokenizer" and value in TOKENIZER_KINDS:
                    continue
                if is_download(value):
                    why = why or f"downloads {value}"
                elif value.startswith(PLACEHOLDERS):
                    why = why or f"needs the user's {value}"
                else:
                    why = f"reads {value!r}, which no earlier example writes and is no placeholder"
        if why is None:
            for index, word in enumerate(words):
                if word == "--out" and index + 1 < len(words):
                    produced.add(words[index + 1].rstrip("/"))
        planned.append((command, line, why))
    return planned


EXAMPLES = help_examples()


def test_the_examples_were_found():
    commands = {command for command, _ in EXAMPLES}
    assert {"tokenizer train", "tokenizer encode", "prepare", "pretrain", "generate"} <= commands
    assert len(EXAMPLES) > 20


@pytest.mark.parametrize(("command", "line"), EXAMPLES, ids=[line for _, line in EXAMPLES])
def test_help_example_is_valid_shell_and_parses(command, line):
    assert line.startswith("lmforge "), "an example is an lmforge command line"
    assert shell_problem(line) is None, shell_problem(line)
    assert parse_problem(argv_of(line)) is None, parse_problem(argv_of(line))


def test_every_input_of_an_example_is_built_in_written_earlier_a_download_or_a_placeholder():
    unexplained = [f"{line}: {why}" for _, line, why in plan(EXAMPLES) if why and "no placeholder" in why]
    assert not unexplained, "\n".join(unexplained)


def test_the_checks_catch_broken_examples():
    assert parse_problem(["tokenizer", "no-such-sub"])
    assert parse_problem(["no-such-command"])
    assert parse_problem(["prepare", "--data", "x", "--tokenizer", "char", "--out", "d", "--no-such-flag"])
    assert parse_problem(["prepare", "--data", "x", "--tokenizer", "char", "--out", "d"]) is None
    assert shell_problem("lmforge tokenizer train --special mask=<mask> --out t")
    assert shell_problem('lmforge score --text "unclosed')
    assert shell_problem("lmforge tokenizer encode --json 'x' | jq .ids") is None
    assert plan([("evaluate", "lmforge evaluate --checkpoint notes --data x")])[0][2].endswith("placeholder")
    assert step_cap_of(["finetune", "classify", "--epochs", "2"]) == "finetune classify"
    assert step_cap_of(["pretrain", "--data", "d"]) == "pretrain" and step_cap_of(["generate"]) is None


def chains(planned: list[tuple[str, str, str | None]]) -> list[list[tuple[str, str]]]:
    """The runnable examples grouped so that no group reads what another writes (connected by the
    paths they share), each in menu order: the groups run apart, on as many workers as there are."""
    runnable = [(command, line) for command, line, why in planned if why is None]
    group_of_path: dict[str, int] = {}
    groups: list[list[int]] = []
    for index, (_, line) in enumerate(runnable):
        words = argv_of(line)
        paths = {
            split_weight(value)[0].rstrip("/")
            for i, word in enumerate(words)
            if word in (*INPUT_FLAGS, "--out")
            for value in _values(words, i)
        }
        joined = sorted({group_of_path[p] for p in paths if p in group_of_path})
        merged = [index] + [member for g in joined for member in groups[g]]
        for g in joined:
            groups[g] = []
        groups.append(sorted(merged))
        for member in merged:
            for path in _paths_of(runnable[member][1]):
                group_of_path[path] = len(groups) - 1
    return [[runnable[i] for i in group] for group in groups if group]


def _paths_of(line: str) -> set[str]:
    words = argv_of(line)
    return {
        split_weight(value)[0].rstrip("/")
        for i, word in enumerate(words)
        if word in (*INPUT_FLAGS, "--out")
        for value in _values(words, i)
        if not value.startswith("builtin:") and value not in TOKENIZER_KINDS
    }


CHAINS = chains(plan(EXAMPLES))


def test_the_runnable_examples_cover_the_main_commands():
    ran = {command for chain in CHAINS for command, _ in chain}
    assert {"tokenizer train", "tokenizer encode", "tokenizer decode", "prepare", "pretrain"} <= ran
    assert {"evaluate", "generate", "score", "attention", "convert", "corpora"} <= ran
    # a chain holds every example that reads what one of its examples writes
    for chain in CHAINS:
        others = set().union(*(_paths_of(line) for c in CHAINS if c is not chain for _, line in c))
        assert not others & set().union(*(_paths_of(line) for _, line in chain))


@pytest.fixture(scope="session")
def builtin_cache(tmp_path_factory) -> str:
    """One cache for the chains of a worker: each would otherwise extract the standard library's
    docstrings again (what is cached depends only on the Python version)."""
    return str(tmp_path_factory.mktemp("lmforge-cache"))


@pytest.mark.parametrize("chain", CHAINS, ids=[chain[0][1][8:60] for chain in CHAINS])
def test_help_examples_that_need_no_data_run(chain, tmp_path, monkeypatch, builtin_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMFORGE_CACHE", builtin_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for _, line in chain:
        argv = argv_of(line)
        capped = step_cap_of(argv)  # the line's own command (pretrain's help shows a prepare too)
        if capped is not None:
            argv += RESUME_CAP if "--resume" in argv else STEP_CAPS[capped]
        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            status = cli.main(argv)
        assert status == 0, f"$ {line}\n{stderr.getvalue()}"


def test_every_command_the_help_texts_name_exists():
    """`lmforge X` quoted in any help text (a docstring becomes the help) names a real command."""
    texts = [cli._overview()] + [cli._load(target).__doc__ or "" for _, target in _targets()]
    named = set()
    for text in texts:
        for words in re.findall(r"`lmforge ([a-z][\w-]*(?:\s+[a-z][\w-]*)?)", text):
            named.add(tuple(words.split()))
    assert ("prepare",) in named  # the search found the references
    missing = []
    for words in named:
        target = cli.COMMANDS.get(words[0], (None, None))[1]
        if target is None or (isinstance(target, dict) and len(words) > 1 and words[1] not in target):
            missing.append(" ".join(words))
    assert not missing, f"help texts name commands that do not exist: {missing}"


def _targets() -> list[tuple[str, str]]:
    targets = []
    for name, (_, target) in cli.COMMANDS.items():
        subs = target.items() if isinstance(target, dict) else [("", target)]
        targets += [(f"{name} {sub}".strip(), sub_target) for sub, sub_target in subs]
    return targets

"""Every console block of README.md runs as written, the ones that download included (slow).

tests/test_readme.py runs the blocks that read only built-in data. The others start from
``tinyshakespeare``, a download: here the cache is seeded with ../shared/data/tinyshakespeare.txt
(the test skips where that file is absent, as on a clone without the shared folder), so the
commands run offline exactly as a user's would after the first download.

Each block is a section of the README, a session of its own: it runs in its own directory, into
which the outputs of earlier blocks that it reads are copied (two sections both write
``runs/shakespeare``; each block sees the one its own text implies). Budgets are cut so the whole
README runs in minutes (``--max-time`` to a few seconds, ``--max-steps`` a hundredth); the
status must be the README's (2 where it shows ``error:``, else 0) and so must the output, line
for line, numbers aside and ``...`` standing for any text. What a trained model chose (samples
from ``generate``, ``fill-mask``'s fills, ``probe``'s ranking) is not compared. A server
(``lmforge serve`` without ``--check``) runs until stopped: it is started on a free port, must
answer an HTTP request, and must stop on Ctrl-C as every command does (exit 130).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lmforge.bounds import split_weight
from tests.test_readme import INPUT_FLAGS, README, _values, argv_of, fenced_blocks, normalized

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
_HEREDOC = re.compile(r"<<'?(\w+)'?")
_CACHED = re.compile(r"\b(?:yes|no)\b")  # `lmforge corpora`: the README shows a first use
# what these print is the words a model chose (a sample, its fills, its ranking), which depend on the
# machine's arithmetic and on training budgets this test cuts; only their exit status is checked
BUDGET_DEPENDENT = ("lmforge generate", "lmforge fill-mask", "lmforge probe")
_WRITES = re.compile(r"cat > (\S+) <<|open\('([^']+)', 'w'\)")


def console_steps(body: str) -> list[tuple[str, list[str]]]:
    """(command, shown output) of a console block; a heredoc stays part of its command.

    A block without ``$`` prompts (the tour) is a list of commands with no output shown.
    """
    lines = body.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return [(line, []) for line in lines if line.startswith("lmforge ")]
    steps: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("$ "):
            command = line[2:]
            if heredoc := _HEREDOC.search(command):
                end = lines.index(heredoc.group(1), index)
                command = "\n".join([command, *lines[index : end + 1]])
                index = end + 1
            steps.append((command, []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def shortened(command: str) -> str:
    """The command with its training budget cut: seconds for minutes, a hundredth of the steps
    (and of PPO's and GRPO's iterations)."""
    command = re.sub(r"--max-time \d+", "--max-time 3", command)
    command = re.sub(r"--minutes \d+(\.\d+)?", "--minutes 0.05", command)
    command = re.sub(
        r"(--max-steps |--iterations |max_steps: )(\d+)",
        lambda m: f"{m[1]}{max(2, int(m[2]) // 100)}",
        command,
    )
    return command


def reads_and_writes(command: str) -> tuple[list[str], list[str]]:
    """The paths an lmforge command reads (its input flags) and writes (``--out``, a heredoc, a python open)."""
    writes = [name for pair in _WRITES.findall(command) for name in pair if name]
    if not command.startswith("lmforge "):
        return [], writes
    words = argv_of(command.splitlines()[0])
    reads = []
    for index, word in enumerate(words):
        if word in INPUT_FLAGS:
            reads += [split_weight(value)[0].rstrip("/") for value in _values(words, index)]  # DIR:WEIGHT
        if word == "--out" and index + 1 < len(words):
            writes.append(words[index + 1].rstrip("/"))
    return reads, writes


def matches(shown: str, got: str) -> bool:
    """A README output line against the printed one: numbers, precision words and spacing aside, ``...`` any text."""
    shown, got = (" ".join(_CACHED.sub("<cached>", normalized(line)).split()) for line in (shown, got))
    if "..." not in shown:
        return shown == got
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, got) is not None


_SERVER = re.compile(r"\blmforge serve\b(?!.*--check\b)")  # --check loads, prints and exits
_SERVING = re.compile(r"^serving .* on (http://\S+) ")
# files the README expects a user to bring
USER_FILES = {
    "my_key.txt": "sk-a-key-of-the-users-own\n",
    "my_prompts.jsonl": "".join(f'{{"prompt": "What does `{name}` return?"}}\n' for name in dir(str)[-16:]),
    "my_rewards.py": "def brevity(prompts, completions):\n    return [-len(c) / 100 for c in completions]\n",
    "sources.txt": "abcdefgh\nhdbaefcjig\n",
}


def run_server(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Start a server command on a free port, ask it for its models, stop it with Ctrl-C: status 0
    and what it printed when it served and stopped as it should, else 1 and what went wrong."""
    if "--port" not in command:
        command = command.replace("lmforge serve", "lmforge serve --port 0", 1)
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C goes to the server, not to bash alone
    )
    printed, answered = [], None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (line := process.stdout.readline()):
            printed.append(line)
            if match := _SERVING.match(line):
                try:
                    with urllib.request.urlopen(match[1] + "/v1/models", timeout=30) as response:
                        answered = response.status
                except urllib.error.HTTPError as error:  # 401 without the key: it is serving
                    answered = error.code
                break
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    # stopped by Ctrl-C, a server exits as every command does then: 130, "interrupted"
    served = answered in (200, 401) and process.returncode == 130
    note = "" if served else f"(answered {answered}, exit {process.returncode} after Ctrl-C)\n"
    return subprocess.CompletedProcess(command, 0 if served else 1, "".join(printed) + out, note + err)


def seed_cache(cache: Path) -> None:
    """Put the shared copy of tiny Shakespeare where the download would have put it."""
    from lmforge.data.catalog import CATALOG
    from lmforge.data.download import cached_path

    target = cached_path(CATALOG["tinyshakespeare"].url)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHAKESPEARE, target)


@pytest.mark.slow
@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is absent")
def test_every_readme_console_block_runs_as_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    seed_cache(tmp_path / "cache")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    written_by: dict[str, Path] = {}  # path -> the block directory that last wrote it
    blocks = [console_steps(body) for language, body in fenced_blocks(README.read_text("utf-8"))]
    blocks = [steps for steps in blocks if steps and any(c.startswith("lmforge ") for c, _ in steps)]
    assert len(blocks) >= 15, "the README's console blocks were not found"
    failures = []
    for number, steps in enumerate(blocks):
        here = tmp_path / f"block{number:02d}"
        here.mkdir()
        block_writes: set[str] = set()
        for command, shown in steps:
            reads, writes = reads_and_writes(command)
            for read in reads:  # what an earlier block wrote, or the directory that holds it (DIR/tokenizer)
                path = next((p for p in (read, *map(str, Path(read).parents)) if p in written_by), read)
                if path not in block_writes and path in written_by and not (here / path).exists():
                    source = written_by[path] / path
                    (here / path).parent.mkdir(parents=True, exist_ok=True)
                    copy = shutil.copytree if source.is_dir() else shutil.copyfile
                    copy(source, here / path)
            for name, text in USER_FILES.items():
                if name in command and not (here / name).exists():
                    (here / name).write_text(text)
            if _SERVER.search(command.splitlines()[0]):
                result = run_server(command, here, env)
            else:
                result = subprocess.run(
                    ["bash", "-c", shortened(command)],
                    cwd=here,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
            block_writes |= set(writes)
            expected_status = 2 if shown and shown[0].startswith("error:") else 0
            heading = f"block {number}: $ {command.splitlines()[0]}"
            printed = result.stdout + "".join(
                line for line in result.stderr.splitlines(keepends=True) if line.startswith("error:")
            )  # progress bars and warnings go to stderr; the README shows what a person reads
            if result.returncode != expected_status:
                failures.append(
                    f"{heading}\nexit {result.returncode}, README implies {expected_status}\n"
                    f"{result.stdout}{result.stderr}"
                )
                continue
            if not shown or command.startswith(BUDGET_DEPENDENT) and expected_status == 0:
                continue  # nothing shown, or words a model picked: they follow the (cut) training budget
            got = printed.splitlines()
            if len(got) != len(shown) or not all(map(matches, shown, got)):
                failures.append(f"{heading}\nREADME shows:\n" + "\n".join(shown) + "\nit prints:\n" + printed)
        for path in block_writes:
            written_by[path] = here
    assert not failures, "\n\n".join(failures)


def test_the_block_reader_keeps_a_heredoc_with_its_command_and_cuts_budgets():
    body = (
        "$ cat > r.yaml <<'EOF'   # a recipe\nmax_steps: 200\nEOF\n$ lmforge pretrain --config r.yaml\nok\n"
    )
    steps = console_steps(body)
    assert steps == [
        ("cat > r.yaml <<'EOF'   # a recipe\nmax_steps: 200\nEOF", []),
        ("lmforge pretrain --config r.yaml", ["ok"]),
    ]
    assert shortened(steps[0][0]).splitlines()[1] == "max_steps: 2"
    assert (
        shortened("lmforge pretrain --max-time 60 --max-steps 4000")
        == "lmforge pretrain --max-time 3 --max-steps 40"
    )
    assert reads_and_writes("lmforge evaluate --checkpoint runs/a --data d/ --out x") == (
        ["runs/a", "d"],
        ["x"],
    )
    assert matches(
        "converted .../model -> runs/m: 22,713,216 parameters",
        "converted /tmp/x/model -> runs/m: 5 parameters",
    )
    assert not matches("validation loss 4.2 -> 1.6", "validation loss 4.2")
    assert matches("tinyshakespeare  1.1 MB  no      public", "tinyshakespeare  1.1 MB  yes     public")

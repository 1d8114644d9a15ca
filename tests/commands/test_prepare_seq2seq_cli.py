"""``lmforge prepare --task seq2seq`` end to end: a summary or JSON on success; one ``error:``
line, exit 2 and no output directory for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.data.seq2seq_shards import load_seq2seq


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write(path: Path, content: str | bytes) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def test_prepare_a_builtin_task_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "reverse"
    status, printed, err = run(
        [
            "prepare",
            "--task",
            "seq2seq",
            "--data",
            "builtin:reverse?length=4-6,size=200",
            "--tokenizer",
            "char",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert status == 0, err
    assert "180 train + 20 val pairs from builtin:reverse" in printed and "--model seq2seq-nano" in printed
    assert all(target == source[::-1] for source, target in load_seq2seq(out).texts("val"))


def test_prepare_jsonl_fields_and_json_output(tmp_path, capsys):
    data = write(
        tmp_path / "p.jsonl", "".join(json.dumps({"en": f"a{i}", "fr": f"b{i}"}) + "\n" for i in range(30))
    )
    status, printed, err = run(
        [
            "prepare",
            "--task",
            "seq2seq",
            "--data",
            data,
            "--source-field",
            "en",
            "--target-field",
            "fr",
            "--tokenizer",
            "char",
            "--target-tokenizer",
            "char",
            "--out",
            str(tmp_path / "d"),
            "--json",
        ],
        capsys,
    )
    assert status == 0, err
    meta = json.loads(printed)
    assert meta["task"] == "seq2seq" and meta["out"] == str(tmp_path / "d") and meta["train_pairs"] == 27
    assert meta["tokenizers"]["shared"] is False and meta["fields"] == {"source": "en", "target": "fr"}


def test_parallel_files(tmp_path, capsys):
    sources = write(tmp_path / "train.en", "".join(f"one {i}\n" for i in range(10)))
    targets = write(tmp_path / "train.fr", "".join(f"un {i}\n" for i in range(10)))
    status, _, err = run(
        [
            "prepare",
            "--task",
            "seq2seq",
            "--data",
            sources,
            targets,
            "--tokenizer",
            "char",
            "--out",
            str(tmp_path / "d"),
        ],
        capsys,
    )
    assert status == 0, err
    assert load_seq2seq(tmp_path / "d").meta["sources"][0]["kind"] == "parallel"


BAD = {
    "empty side": ("p.tsv", "a\tb\n\tc\n", "p.tsv:2: the source is empty"),
    "missing field": (
        "p.jsonl",
        '{"source": "a", "target": "b"}\n{"source": "a"}\n',
        "p.jsonl:2: no 'target' field (fields: 'source')",
    ),
    "undecodable": ("p.tsv", b"a\tb\nc\xfe\td\n", "(line 2) is not valid UTF-8"),
    "empty file": ("p.jsonl", "", "is empty or only blank lines: no pairs"),
    "one text file": ("p.txt", "hello\n", "one text file, which holds no pairs"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    name, content, expected = BAD[case]
    data = write(tmp_path / name, content)
    out = tmp_path / "d"
    status, printed, err = run(
        ["prepare", "--task", "seq2seq", "--data", data, "--tokenizer", "char", "--out", str(out)], capsys
    )
    assert status == 2 and printed == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
    assert not out.exists()


def test_unequal_parallel_files(tmp_path, capsys):
    a, b = write(tmp_path / "a.txt", "1\n2\n3\n"), write(tmp_path / "b.txt", "1\n2\n")
    status, _, err = run(
        ["prepare", "--task", "seq2seq", "--data", a, b, "--tokenizer", "char", "--out", str(tmp_path / "d")],
        capsys,
    )
    assert status == 2 and err.count("\n") == 1 and "has 3 lines but" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--data", "builtin:copy", "--target-tokenizer", "char"],
            "--target-tokenizer only applies with --task seq2seq",
        ),
        (["--task", "seq2seq", "--data", "builtin:copy", "--text-field", "body"], "pairs use --source-field"),
        (
            ["--task", "seq2seq", "--data", "builtin:copy", "--target-vocab-size", "9"],
            "only applies with --target-tokenizer",
        ),
        (["--data", "builtin:copy"], "builtin:copy is a seq2seq task"),
        (
            ["--task", "seq2seq", "--data", "builtin:stdlib-docs"],
            "builtin:stdlib-docs is a language-model corpus",
        ),
        (["--task", "seq2seq", "--data", "builtin:copy?length=5-2"], "runs backwards"),
        (["--task", "translate", "--data", "builtin:copy"], "invalid choice: 'translate'"),
    ],
)
def test_flags_that_do_not_fit_the_task(tmp_path, capsys, argv, expected):
    status, printed, err = run(
        ["prepare", *argv, "--tokenizer", "char", "--out", str(tmp_path / "d")], capsys
    )
    assert status == 2 and printed == "" and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "d").exists()

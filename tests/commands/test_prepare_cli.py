"""``lmforge prepare`` end to end: a summary or JSON on success; one line, exit 2 and no output on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.data.prepare import load_prepared


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write(tmp_path / "input.txt", "".join(f"Citizen {i}: speak, speak.\n" for i in range(200)))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_prepare_writes_a_dataset_and_prints_a_summary(tmp_path, corpus, capsys):
    status, out, err = run(
        ["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "d")], capsys
    )
    assert status == 0, err
    assert "train" in out and "val tokens (uint16)" in out and "lmforge pretrain --data" in out
    data = load_prepared(tmp_path / "d")
    text = corpus.read_text()
    assert data.tokenizer.decode(data.split("train").tolist()) == text[: int(len(text) * 0.9)]


def test_prepare_json_prints_the_metadata(tmp_path, corpus, capsys):
    argv = [
        "prepare",
        "--data",
        str(corpus),
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "300",
        "--val-fraction",
        "0.2",
    ]
    status, out, _ = run([*argv, "--out", str(tmp_path / "d"), "--json"], capsys)
    assert status == 0
    meta = json.loads(out)
    assert meta["out"] == str(tmp_path / "d") and meta["tokenizer"]["vocab_size"] == 300
    assert meta["split"]["val_fraction"] == 0.2
    assert meta["train_tokens"] == len(load_prepared(tmp_path / "d").split("train"))


def test_prepare_reuses_a_tokenizer_directory(tmp_path, corpus, capsys):
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "a")]) == 0
    other = write(tmp_path / "other.txt", "speak, Citizen " * 40)
    argv = [
        "prepare",
        "--data",
        str(other),
        "--tokenizer",
        str(tmp_path / "a/tokenizer"),
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert (tmp_path / "a/tokenizer/tokenizer.json").read_bytes() == (
        tmp_path / "b/tokenizer/tokenizer.json"
    ).read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "nope.txt: no such file or directory"),
        ("empty", "yields no text"),
        ("undecodable", "latin1.txt: byte offset 3 (line 1) is not valid UTF-8"),
        ("not_json", "bad.jsonl:2: not valid JSON"),
        ("no_field", "bad.jsonl:1: no 'text' field (fields: 'body')"),
        (
            "unknown_builtin",
            "unknown built-in corpus 'builtin:nope'; the built-in corpora are: builtin:stdlib-docs",
        ),
        ("fraction_zero", "--val-fraction must be strictly between 0 and 1"),
        ("fraction_one", "--val-fraction must be strictly between 0 and 1"),
        ("too_small", "too little to hold out --val-fraction 0.1"),
        ("unknown_kind", "not a kind to train"),
        ("vocab_with_dir", "--vocab-size only apply when --tokenizer names a kind to train"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, corpus, capsys, case, message):
    data, extra, tokenizer = [str(corpus)], [], "char"
    if case == "missing":
        data = [str(corpus), str(tmp_path / "nope.txt")]
    elif case == "empty":
        data = [str(write(tmp_path / "empty.txt", "\n \n"))]
    elif case == "undecodable":
        data = [str(write(tmp_path / "latin1.txt", b"caf\xe9 au lait"))]
    elif case == "not_json":
        data = [str(write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"text": oops}\n'))]
    elif case == "no_field":
        data = [str(write(tmp_path / "bad.jsonl", '{"body": "text is here"}\n'))]
    elif case == "unknown_builtin":
        data = ["builtin:nope"]
    elif case == "fraction_zero":
        extra = ["--val-fraction", "0"]
    elif case == "fraction_one":
        extra = ["--val-fraction", "1"]
    elif case == "too_small":
        data = [str(write(tmp_path / "tiny.txt", "x"))]
    elif case == "unknown_kind":
        tokenizer = "sentencepiece"
    elif case == "vocab_with_dir":
        assert (
            main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "first")])
            == 0
        )
        tokenizer, extra = str(tmp_path / "first"), ["--vocab-size", "100"]
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    out_dir = tmp_path / "out"
    status, out, err = run(
        ["prepare", "--data", *data, "--tokenizer", tokenizer, "--out", str(out_dir), *extra], capsys
    )
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no temporary directory


def test_undecodable_bytes_go_through_with_errors_replace(tmp_path, capsys):
    latin1 = write(tmp_path / "latin1.txt", b"caf\xe9 au lait, " * 10)
    argv = [
        "prepare",
        "--data",
        str(latin1),
        "--tokenizer",
        "char",
        "--out",
        str(tmp_path / "d"),
        "--errors",
        "replace",
    ]
    assert main(argv) == 0
    data = load_prepared(tmp_path / "d")
    assert "caf\ufffd" in data.tokenizer.decode(data.split("train").tolist())


def test_existing_output_is_refused_unless_overwrite(tmp_path, corpus, capsys):
    write(tmp_path / "d/notes.txt", "keep me")
    argv = ["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "d")]
    for extra in ([], ["--overwrite"]):  # someone else's files: never, --overwrite or not
        status, _, err = run([*argv, *extra], capsys)
        assert status == 2 and "not a prepared dataset (notes.txt)" in err
    assert (tmp_path / "d/notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "input.txt"]
    ours = ["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "ours")]
    assert main(ours) == 0
    status, _, err = run(ours, capsys)
    assert status == 2 and "already exists" in err and "--overwrite" in err
    assert main([*ours, "--overwrite"]) == 0 and (tmp_path / "ours/meta.json").is_file()


def test_overwrite_never_replaces_the_input_or_the_working_directory(tmp_path, capsys, monkeypatch):
    from lmforge.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the source texts the user wrote\n" * 50)
    args = ["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(corpus), "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "input" in err and len(err.splitlines()) == 1
    assert (corpus / "a.txt").read_text().startswith("the source texts")
    monkeypatch.chdir(corpus)  # --out . would replace the working directory
    assert main(["prepare", "--data", "a.txt", "--tokenizer", "char", "--out", ".", "--overwrite"]) == 2
    assert (corpus / "a.txt").exists()
    out = tmp_path / "tok"
    tok_args = ["tokenizer", "train", "--kind", "char", "--data", str(corpus), "--out", str(tmp_path)]
    assert main([*tok_args, "--overwrite"]) == 2  # its --out holds its own input
    assert (corpus / "a.txt").exists() and not out.exists()

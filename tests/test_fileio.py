"""Atomic writes: a failure part-way leaves the destination exactly as it was."""

from __future__ import annotations

import pytest

from lmforge.errors import OutputExistsError
from lmforge.fileio import atomic_directory, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_directory_appears_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        (tmp / "whole.bin").write_bytes(b"x")
    assert [p.name for p in out.iterdir()] == ["whole.bin"]


def test_existing_directory_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_directory(out):
        pass
    assert (out / "keep.txt").read_text() == "precious"


def test_overwrite_keeps_old_contents_until_new_ones_are_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces_only_a_previous_output_of_the_same_kind(tmp_path, monkeypatch):
    from lmforge.fileio import TOKENIZER_OUTPUT, check_output_dir

    monkeypatch.chdir(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not a tokenizer .thesis.tex.; lmforge will not delete"):
        check_output_dir(theirs, overwrite=True, kind=TOKENIZER_OUTPUT)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "lmforge_tokenizer.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_output_dir(mine, overwrite=False, kind=TOKENIZER_OUTPUT)
    assert check_output_dir(mine, overwrite=True, kind=TOKENIZER_OUTPUT) == mine
    (mine / "notes.md").write_text("mine now")  # a previous output the user added to: theirs too
    with pytest.raises(OutputExistsError, match="notes.md"):
        check_output_dir(mine, overwrite=True, kind=TOKENIZER_OUTPUT)


def test_an_argument_that_is_not_utf8_is_one_line(capsys):
    from lmforge.cli import main

    assert main(["tokenizer", "encode", "--tokenizer", "tok", "a\udcffb"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the argument 'a\\xffb' is not valid UTF-8 text; give UTF-8\n"


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    import os

    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize(
    "mask, file, directory",
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    ids=["umask022", "umask077", "umask002"],
)
def test_outputs_get_the_modes_of_the_umask_like_any_new_file(tmp_path, umask, mask, file, directory):
    umask(mask)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")  # what open() and mkdir() give: the truth to match
    (tmp_path / "plain_dir").mkdir()
    assert (mode(plain), mode(tmp_path / "plain_dir")) == (file, directory)
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "out") as tmp:
        atomic_write_text(tmp / "inside.json", "{}")
    assert mode(tmp_path / "a.txt") == file
    assert mode(tmp_path / "out") == directory
    assert mode(tmp_path / "out" / "inside.json") == file


def test_the_commands_outputs_follow_the_umask(tmp_path, umask, capsys):
    from lmforge.cli import main

    umask(0o022)
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40, encoding="utf-8")
    assert (
        main(["tokenizer", "train", "--kind", "char", "--data", str(corpus), "--out", str(tmp_path / "tok")])
        == 0
    )
    assert (
        main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "prep")]) == 0
    )
    args = ["pretrain", "--data", str(tmp_path / "prep"), "--out", str(tmp_path / "run"), "--max-steps", "1"]
    args += ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "2"]
    args += ["--eval-batches", "1"]
    assert main(args) == 0
    written = [p for top in ("tok", "prep", "run") for p in (tmp_path / top).rglob("*")]
    assert {p.name for p in written} >= {"tokenizer.json", "train.bin", "meta.json", "model.safetensors"}
    wrong = {
        str(p.relative_to(tmp_path)): oct(mode(p))
        for p in written
        if mode(p) != (0o755 if p.is_dir() else 0o644)
    }
    assert wrong == {}
    assert [oct(mode(tmp_path / top)) for top in ("tok", "prep", "run")] == ["0o755"] * 3

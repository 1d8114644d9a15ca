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

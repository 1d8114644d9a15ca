"""``lmforge demo``: a short real run, and it never deletes what it did not write."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main


@pytest.mark.slow  # about a minute on 2 cores: BPE on 1.6 MB, training, the whole validation split
def test_short_demo_runs_end_to_end_and_reruns_over_its_own_output(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--minutes", "0.5", "--vocab-size", "300", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] > 0 and len(summary["samples"]) == 3
    assert summary["val_perplexity"] < summary["initial_val_perplexity"]  # a few seconds already help
    assert (out / "run" / "model.safetensors").exists() and (out / "data" / "meta.json").exists()
    assert main(args) == 0  # its own previous output is replaced


def test_demo_refuses_a_directory_it_did_not_write(tmp_path, capsys, monkeypatch):
    mywork = tmp_path / "mywork"
    mywork.mkdir()
    (mywork / "thesis.tex").write_text("years of work")
    assert main(["demo", "--out", str(mywork)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "thesis.tex" in err and len(err.splitlines()) == 1
    assert (mywork / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(mywork)  # `lmforge demo --out .` must not delete the working directory
    assert main(["demo", "--out", "."]) == 2
    assert (mywork / "thesis.tex").read_text() == "years of work"

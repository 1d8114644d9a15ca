"""``lmforge probe`` from the command line: ranked candidates for BERT and GPT runs, --json, refusals."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.cli import main
from tests.tiny_run import make_bert_run, make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    make_bert_run(root / "bert")
    make_run(root / "gpt")
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["probe", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("name", "method"), [("bert", "pseudo-log-likelihood"), ("gpt", "log-probability")])
def test_json_ranks_candidates_with_probabilities_that_sum_to_one(runs, capsys, name, method):
    code, out, err = run(
        capsys, "--checkpoint", runs / name, "--text", "All: ___.", "--candidates", "speak,die,all", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == method
    scores = [c["logprob"] for c in result["candidates"]]
    assert scores == sorted(scores, reverse=True) and {c["candidate"] for c in result["candidates"]} == {
        "speak",
        "die",
        "all",
    }
    assert sum(c["prob"] for c in result["candidates"]) == pytest.approx(1)
    total = sum(math.exp(s) for s in scores)
    assert result["candidates"][0]["prob"] == pytest.approx(math.exp(scores[0]) / total)


def test_table_has_a_row_per_candidate(runs, capsys):
    code, out, _ = run(
        capsys, "--checkpoint", runs / "gpt", "--text", "All: ___.", "--candidates", "speak,die"
    )
    assert code == 0 and len(out.strip().splitlines()) == 4 and "log-probability" in out


@pytest.mark.parametrize(
    ("text", "candidates", "message"),
    [
        ("All: speak.", "speak,die", "error: --text has no ___"),
        ("All: ___.", "speak", "error: --candidates needs at least 2"),
        ("speak " * 30 + "___", "speak,die", "error: the text is"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, capsys, text, candidates, message):
    code, out, err = run(capsys, "--checkpoint", runs / "bert", "--text", text, "--candidates", candidates)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith(message)

"""``lmforge fill-mask`` from the command line: the table, --json, and one line for each bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from tests.tiny_run import make_bert_run, make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fill")
    make_bert_run(root / "bert")
    make_run(root / "gpt")
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["fill-mask", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_gives_top_k_fills_per_mask_sorted_by_probability(runs, capsys):
    code, out, _ = run(
        capsys, "--checkpoint", runs / "bert", "--text", "all [MASK] speak [MASK]", "--top-k", "3", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert [m["mask"] for m in result["masks"]] == [1, 2]
    for mask in result["masks"]:
        probs = [f["prob"] for f in mask["fills"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1


def test_table_lists_each_mask_and_its_fills(runs, capsys):
    code, out, _ = run(capsys, "--checkpoint", runs / "bert", "--text", "all [MASK] speak", "--top-k", "2")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split() == ["#", "token", "id", "prob"] and len(lines) == 3


@pytest.mark.parametrize(
    ("run_name", "text", "message"),
    [
        (
            "gpt",
            "all [MASK] speak",
            "error: fill-mask needs a masked (BERT) model; {run} is causal: try `lmforge generate`",
        ),
        ("bert", "all speak", "error: --text has no [MASK]"),
        ("bert", "speak " * 30 + "[MASK]", "error: the text is"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, capsys, run_name, text, message):
    code, out, err = run(capsys, "--checkpoint", runs / run_name, "--text", text)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(message.format(run=runs / run_name))

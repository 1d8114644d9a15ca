"""``lmforge embed`` from the command line: --json, the similarity of two texts and the matrix of
more, --file, the truncation warning, and one line for each bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from tests.tiny_run import make_bert_run, make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedcli")
    make_bert_run(root / "bert")
    make_run(root / "gpt")
    (root / "texts.txt").write_text("speak\n\nall speak\nfamish\n", encoding="utf-8")
    (root / "empty.txt").write_text("\n \n", encoding="utf-8")
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["embed", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", ["bert", "gpt"])
def test_two_texts_give_two_unit_vectors_and_their_cosine(runs, capsys, name):
    code, out, err = run(capsys, "--checkpoint", runs / name, "--text", "speak", "all speak", "--json")
    assert code == 0, err
    result = json.loads(out)
    first, second = result["embeddings"]
    assert sum(v * v for v in first) == pytest.approx(1, abs=1e-5)
    assert result["similarity"] == pytest.approx(sum(a * b for a, b in zip(first, second)), abs=1e-5)


def test_file_texts_follow_the_text_flags_and_give_a_similarity_matrix(runs, capsys):
    code, out, _ = run(
        capsys, "--checkpoint", runs / "bert", "--text", "speak", "--file", runs / "texts.txt", "--json"
    )
    result = json.loads(out)
    assert code == 0 and len(result["embeddings"]) == 4 and len(result["similarities"]) == 4
    assert result["similarities"][0][1] == pytest.approx(1, abs=1e-5)  # "speak" twice
    code, out, _ = run(capsys, "--checkpoint", runs / "bert", "--file", runs / "texts.txt")
    assert code == 0 and "cosine similarities:" in out


def test_texts_longer_than_the_context_are_cut_with_a_warning_that_counts_them(runs, capsys):
    long = "speak " * 40
    code, out, err = run(
        capsys, "--checkpoint", runs / "bert", "--text", long, "all", long, "--batch-size", "1"
    )
    assert code == 0 and "warning: 2 of 3 texts were longer than the model's context of 32 tokens" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "empty.txt"], "error: --file {root}/empty.txt is empty"),
        (["--file", "missing.txt"], "error: --file {root}/missing.txt does not exist"),
        ([], "error: give the texts to embed"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, capsys, args, message):
    args = [str(runs / a) if a.endswith(".txt") else a for a in args]
    code, out, err = run(capsys, "--checkpoint", runs / "bert", *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(message.format(root=runs))

"""n-gram runs through the same commands as every family: pretrain, evaluate, generate, score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data.shards import load_prepared
from lmforge.models.ngram import NGramConfig, NGramLM
from lmforge.tokenizers import load_tokenizer

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat and sat.\n"
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n"
) * 20


@pytest.fixture(scope="module")
def ngram_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ngram")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "prepare",
                "--data",
                str(root / "corpus.txt"),
                "--tokenizer",
                "char",
                "--out",
                str(root / "data"),
            ]
        )
        == 0
    )
    args = ["pretrain", "--model", "ngram", "--order", "4", "--smoothing", "kn", "--data", str(root / "data")]
    assert main([*args, "--out", str(root / "run"), "--json"]) == 0
    return root


def reference(root) -> tuple[NGramLM, np.ndarray]:
    """The same model fitted directly on the prepared train split, and the val split."""
    dataset = load_prepared(root / "data")
    config = NGramConfig(
        order=4,
        smoothing="kn",
        vocab_size=dataset.tokenizer.vocab_size,
        eos_id=dataset.tokenizer.document_separator_id,
    )
    return NGramLM.fit(np.asarray(dataset.split("train")), config), np.asarray(dataset.split("val"))


def test_evaluate_equals_the_models_own_log_probabilities(ngram_run, capsys):
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "--checkpoint", str(ngram_run / "run"), "--data", str(ngram_run / "data"), "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    lm, val = reference(ngram_run)
    expected = -lm.logprobs(val)[1:].mean()  # every token after the first, as windowed models score
    assert result["tokens"] == len(val) - 1
    assert result["loss"] == pytest.approx(expected, rel=1e-12)


def test_generate_greedy_equals_greedy_written_out(ngram_run, capsys):
    capsys.readouterr()
    args = ["generate", "--checkpoint", str(ngram_run / "run"), "--prompt", "the cat", "--strategy", "greedy"]
    assert main([*args, "--max-new-tokens", "12", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)["samples"][0]["ids"]
    lm, _ = reference(ngram_run)
    context = load_tokenizer(ngram_run / "run" / "tokenizer").encode("the cat")
    expected = []  # the likeliest next id of the whole context, written out
    for _ in range(12):
        expected.append(int(np.argmax(lm.next_distribution(context + expected))))
    assert generated and generated == expected[: len(generated)]  # the CLI cuts at end-of-text


def test_score_sums_the_per_token_log_probabilities(ngram_run, capsys):
    capsys.readouterr()
    assert main(["score", "--checkpoint", str(ngram_run / "run"), "--text", "a cat sat", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    lm, _ = reference(ngram_run)
    ids = [token["id"] for token in result["tokens"]]
    assert result["logprob"] == pytest.approx(float(lm.logprobs(ids).sum()), rel=1e-12)
    assert sum(np.log([t["prob"] for t in result["tokens"]])) == pytest.approx(result["logprob"], rel=1e-9)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-layer", "2"], "--n-layer does not apply to --model ngram"),
        (["--order", "0"], "order"),
        (
            ["--max-steps", "100", "--lr", "0.1"],
            "--max-steps, --lr does not apply to --model ngram: it is counted",
        ),
        (["--context", "3"], "--context does not apply to --model ngram"),
    ],
)
def test_bad_ngram_settings_are_one_line(ngram_run, extra, message, capsys, tmp_path):
    args = [
        "pretrain",
        "--model",
        "ngram",
        "--data",
        str(ngram_run / "data"),
        "--out",
        str(tmp_path / "r"),
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "r").exists()

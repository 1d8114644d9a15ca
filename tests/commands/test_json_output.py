"""--json prints strict JSON: a number that is not finite is null, and "non_finite" says which."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.cli import main
from lmforge.commands._json import to_json


def strict_loads(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_and_are_listed():
    text = to_json({"loss": math.inf, "ok": 1.5, "per_step": [1.0, math.nan], "inner": {"x": -math.inf}})
    assert strict_loads(text) == {
        "loss": None,
        "ok": 1.5,
        "per_step": [1.0, None],
        "inner": {"x": None},
        "non_finite": {"loss": "inf", "per_step[1]": "nan", "inner.x": "-inf"},
    }
    assert strict_loads(to_json({"a": 1})) == {"a": 1}  # nothing added when all is finite


def test_an_unsmoothed_ngram_model_reports_an_infinite_loss_as_valid_json(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    # the validation split (the last 10%) holds characters the training split never saw
    corpus.write_text(
        "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc" * 3 + "xyzzy", encoding="utf-8"
    )
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    args = ["pretrain", "--model", "ngram", "--smoothing", "mle", "--data", str(tmp_path / "d")]
    assert main([*args, "--out", str(tmp_path / "run"), "--json"]) == 0
    summary = strict_loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["val_loss"] is None and summary["val_perplexity"] is None
    assert summary["non_finite"] == {"val_loss": "inf", "val_perplexity": "inf"}  # not a 300-digit number


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_json_never_contains_nan_or_infinity_tokens(value):
    text = to_json({"v": value})
    assert "NaN" not in text and "Infinity" not in text

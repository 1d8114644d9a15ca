"""``lmforge pretrain --data A:W B:W``: a 2-source mixture end to end, its summary per source, resume
and the mixtures refused with one line."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main

AUSTEN = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n"
) * 40
CODE = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n" * 15
MODEL = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "8"]
STEPS = ["--eval-every", "3", "--eval-batches", "2", "--warmup-steps", "1", "--no-progress"]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two datasets prepared with one char tokenizer (trained on both texts), and a third with its own."""
    root = tmp_path_factory.mktemp("mixture")
    (root / "austen.txt").write_text(AUSTEN, encoding="utf-8")
    (root / "code.txt").write_text(CODE, encoding="utf-8")
    (root / "both.txt").write_text(AUSTEN + CODE, encoding="utf-8")
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "char",
                "--data",
                str(root / "both.txt"),
                "--out",
                str(root / "tok"),
            ]
        )
        == 0
    )
    for name in ("austen", "code"):
        argv = ["prepare", "--data", str(root / f"{name}.txt"), "--tokenizer", str(root / "tok")]
        assert main([*argv, "--out", str(root / name), "--no-progress"]) == 0
    argv = ["prepare", "--data", str(root / "code.txt"), "--tokenizer", "char", "--out", str(root / "other")]
    assert main([*argv, "--no-progress"]) == 0
    return root


def pretrain(capsys, *args: str) -> dict:
    code = main(["pretrain", *args, *MODEL, *STEPS, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_summary_reports_tokens_and_epochs_per_source(two_sources, capsys):
    root = two_sources
    data = [f"{root / 'austen'}:0.75", f"{root / 'code'}:0.25"]
    summary = pretrain(capsys, "--data", *data, "--out", str(root / "run"), "--max-steps", "6")
    sources = summary["sources"]
    assert [s["name"] for s in sources] == ["austen", "code"]
    assert [s["weight"] for s in sources] == pytest.approx([0.75, 0.25])
    # 6 steps of 8 rows of 16 tokens: every token read is counted once, from its own source
    assert summary["tokens"] == 6 * 8 * 16 == sum(s["tokens"] for s in sources)
    for source in sources:
        meta = json.loads((root / source["name"] / "meta.json").read_text())
        assert source["train_tokens"] == meta["train_tokens"]
        assert source["tokens"] % 16 == 0
        assert source["epochs"] == pytest.approx(source["tokens"] / meta["train_tokens"])
        assert source["val_loss"] is not None
    # the small source (code) is read for more epochs than its weight alone suggests: weights, not sizes
    assert sources[1]["epochs"] > sources[0]["epochs"] * (0.25 / 0.75) * 0.5
    config = json.loads((root / "run" / "config.json").read_text())
    recorded = config["data"]["mixture"]
    assert [(m["name"], m["weight"]) for m in recorded] == [("austen", 0.75), ("code", 0.25)]
    assert recorded[0]["tokenizer_fingerprint"] == recorded[1]["tokenizer_fingerprint"]
    evals = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in evals if "val_loss" in row]
    assert evals and all({"val_loss_austen", "val_loss_code"} <= set(row) for row in evals)
    for row in evals:  # the overall loss lies between the sources' (a weighted mean of them)
        low, high = sorted((row["val_loss_austen"], row["val_loss_code"]))
        assert low - 1e-6 <= row["val_loss"] <= high + 1e-6


def test_resume_continues_the_mixture_exactly(two_sources, capsys):
    root = two_sources
    data = [f"{root / 'austen'}:3", f"{root / 'code'}:1", "--lr", "1e-2", "--min-lr", "1e-2"]  # no decay:
    # the schedule does not depend on --max-steps, so 4 steps + 4 resumed are the 8 straight ones
    straight = pretrain(capsys, "--data", *data, "--out", str(root / "straight"), "--max-steps", "8")
    pretrain(capsys, "--data", *data, "--out", str(root / "halves"), "--max-steps", "4")
    resumed = pretrain(
        capsys, "--resume", str(root / "halves"), "--max-steps", "8"
    )  # its mixture from config.json
    assert resumed["steps"] == 8
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-5)
    assert [s["tokens"] for s in resumed["sources"]] == [s["tokens"] for s in straight["sources"]]


def test_mixture_prints_one_line_per_source(two_sources, capsys):
    root = two_sources
    code = main(
        [
            "pretrain",
            "--data",
            f"{root / 'austen'}:1",
            f"{root / 'code'}:1",
            "--out",
            str(root / "text"),
            "--max-steps",
            "2",
            *MODEL,
            *STEPS,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "data: austen 50% (" in out and " train tokens) + code 50% (" in out
    assert "  austen: weight 50.0%," in out and "  code: weight 50.0%," in out and "epochs of its" in out


@pytest.mark.parametrize(
    ("data", "model", "says"),
    [
        (["{root}/austen:0.5", "{root}/other:0.5"], "gpt-nano", "another tokenizer"),
        (["{root}/austen:0", "{root}/code:1"], "gpt-nano", "positive finite"),
        (["{root}/austen:0.5", "{root}/code"], "gpt-nano", "has no weight"),
        (["{root}/austen:0.5", "builtin:stdlib-docs:0.5"], "gpt-nano", "is a text source, not a prepared"),
        (["{root}/austen:0.5", "{root}/missing:0.5"], "gpt-nano", "does not exist"),
        (["{root}/austen:0.5", "{root}/code:0.5"], "lstm", "a mixture is for the window models"),
        (["{root}/austen:0.5", "{root}/code:0.5"], "ngram", "counts one dataset"),
    ],
)
def test_bad_mixtures_exit_2_with_one_line(two_sources, capsys, data, model, says):
    root = two_sources
    argv = ["pretrain", "--data", *(d.format(root=root) for d in data), "--model", model]
    code = main([*argv, "--out", str(root / "refused"), "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not (root / "refused").exists()


def test_a_recipe_file_gives_the_mixture_as_a_list(two_sources, capsys):
    root = two_sources
    recipe = root / "mix.json"
    data = [f"{root / 'austen'}:2", f"{root / 'code'}:2"]
    recipe.write_text(
        json.dumps({"data": data, "out": str(root / "recipe-run"), "max-steps": 2}), encoding="utf-8"
    )
    summary = pretrain(capsys, "--config", str(recipe))
    assert [s["weight"] for s in summary["sources"]] == [0.5, 0.5]
    assert sum(s["tokens"] for s in summary["sources"]) == summary["tokens"]

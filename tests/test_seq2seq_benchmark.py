"""benchmarks/seq2seq.py in --quick mode (about a second of training per model and task): every
model x task x length row is in the JSON with sane values, the pictures are PNGs, and the speed
race's two models have the same shape (no assertion on speed: the machine is shared)."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the quick run trains 9 models: ~30 s on 2 cores

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("seq2seq"), importlib.import_module("seq2seq_speed")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    seq2seq, _ = bench
    out = tmp_path_factory.mktemp("seq2seq-bench")
    seq2seq.main(["--quick", "--out", str(out / "seq2seq.json"), "--pictures", str(out)])
    return json.loads((out / "seq2seq.json").read_text()), out


def test_every_model_task_and_length_has_a_row(quick_run):
    payload, _ = quick_run
    got = {(row["task"], row["model"], row["length"]) for row in payload["rows"]}
    models = ("transformer", "rnn-attn", "rnn-no-attn")
    expected = {("stdlib-signatures", m, "train lengths") for m in models}
    expected |= {("reverse", m, length) for m in models for length in ("train lengths", "2x longer")}
    assert got == expected
    assert len(payload["rows"]) == len(expected)
    presets = {row["model"]: row["preset"] for row in payload["rows"]}
    assert presets == {"transformer": "seq2seq-nano", "rnn-attn": "rnn-attn", "rnn-no-attn": "rnn-seq2seq"}


def test_rows_hold_sane_values(quick_run):
    payload, _ = quick_run
    for row in payload["rows"]:
        assert row["steps"] >= 1
        # a character vocabulary of at most ~100 ids: an untrained model's loss is near ln(V)
        assert 0 < row["val_loss"] < 2 * math.log(120) and math.isfinite(row["val_loss"])
        for score in ("bleu", "chrf", "exact_match"):
            assert 0 <= row[score] <= 100
        assert row["scored_pairs"] == 8
        assert len(row["examples"]) == 3
        for example in row["examples"]:
            assert set(example) == {"source", "reference", "hypothesis"}
            if row["task"] == "reverse":  # the task's own rule: the reference is the source reversed
                assert example["reference"] == example["source"][::-1]
        # BLEU scores characters where references have no spaces (reverse), words otherwise
        assert ("tok:char" in row["bleu_signature"]) == (row["task"] == "reverse")


def test_longer_reverse_sources_are_twice_as_long(quick_run):
    payload, _ = quick_run
    for row in payload["rows"]:
        if row["task"] == "reverse":
            low, high = (8, 16) if row["length"] == "train lengths" else (17, 32)
            assert all(low <= len(example["source"]) <= high for example in row["examples"])


def test_pictures_are_pngs(quick_run):
    payload, out = quick_run
    assert set(payload["pictures"]) == {"transformer", "rnn-attn"}
    for name in ("seq2seq_align_transformer.png", "seq2seq_align_rnn.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_race_reports_a_ratio(quick_run):
    payload, _ = quick_run
    nano = payload["speed"]["results"]["nano"]
    assert nano["lmforge"]["tokens_per_s"] > 0 and nano["hf bart"]["tokens_per_s"] > 0
    assert nano["lmforge_vs_bart"] == pytest.approx(
        nano["lmforge"]["tokens_per_s"] / nano["hf bart"]["tokens_per_s"]
    )


@pytest.mark.parametrize("shape", ["nano", "small"])
def test_speed_models_have_the_same_shape(bench, shape):
    """Equal parameter counts (lmforge fuses q, k, v into one matrix, so tensors differ, not
    their total): the race compares like with like."""
    _, speed = bench
    ours = speed.lmforge_model(speed.SHAPES[shape])
    bart = speed.bart_model(speed.SHAPES[shape])
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in bart.parameters())


def test_random_batches_pad_both_sides_alike(bench):
    _, speed = bench
    shape = {**speed.SHAPES["nano"], "batch": 4, "source": 10, "target": 8}
    (batch,) = speed.random_batches(shape, 1)
    real_targets = batch["labels"] != -100
    # the decoder reads the start id then the labels shifted right, padded where the labels are
    assert (batch["decoder_input_ids"][:, 0] == 2).all()
    assert (
        batch["decoder_input_ids"][:, 1:][real_targets[:, 1:]] == batch["labels"][:, :-1][real_targets[:, 1:]]
    ).all()
    assert (batch["decoder_input_ids"][~real_targets] == 1).all()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()
    assert (batch["attention_mask"].sum(1) >= 5).all() and (real_targets.sum(1) >= 4).all()

"""``lmforge pretrain --model bert-nano``: masked-LM pretraining from the command line, its
evaluation figures, an exact resume, and the run's way out to Hugging Face."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.run import Run
from tests.commands.test_pretrain_cli import TEXT

TRAIN = [
    "--model",
    "bert-nano",
    "--block-size",
    "32",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--eval-batches",
    "2",
]


@pytest.fixture(scope="module")
def wordpiece_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    corpus = root / "austen.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    args = [
        "prepare",
        "--data",
        str(corpus),
        "--tokenizer",
        "wordpiece",
        "--vocab-size",
        "200",
        "--lowercase",
    ]
    assert main([*args, "--out", str(root / "data")]) == 0
    return root


def pretrain(capsys, data, out, *extra) -> dict:
    code = main(["pretrain", "--data", str(data), "--out", str(out), *TRAIN, *extra, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def test_pretrain_bert_reports_masked_loss_perplexity_and_accuracy(wordpiece_data, capsys):
    summary = pretrain(capsys, wordpiece_data / "data", wordpiece_data / "run", "--max-steps", "30")
    assert summary["steps"] == 30 and summary["val_loss"] < summary["first_val_loss"]
    assert 0 <= summary["val_accuracy"] <= 1
    assert math.isclose(summary["val_perplexity"], math.exp(summary["val_loss"]), rel_tol=1e-9)
    records = [
        json.loads(line) for line in (wordpiece_data / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    evaluations = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluations] == [0, 10, 20, 30] and all(
        "val_accuracy" in r for r in evaluations
    )
    config = Run.open(wordpiece_data / "run").read_config()
    assert config["family"] == "bert" and config["preset"] == "bert-nano"


def test_resumed_bert_training_equals_straight_training(wordpiece_data, tmp_path, capsys):
    data = wordpiece_data / "data"
    pretrain(capsys, data, tmp_path / "straight", "--max-steps", "20")
    pretrain(capsys, data, tmp_path / "split", "--max-steps", "10")
    assert main(["pretrain", "--resume", str(tmp_path / "split"), "--max-steps", "20"]) == 0
    capsys.readouterr()
    straight, split = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "split"))
    assert all(torch.equal(straight[name], split[name]) for name in straight)  # same batches, same masks


def test_a_pretrained_bert_converts_to_hugging_face_with_the_same_logits(wordpiece_data, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    if not (wordpiece_data / "run").exists():  # another worker ran the test that trains it
        pretrain(capsys, wordpiece_data / "data", wordpiece_data / "run", "--max-steps", "30")
    assert main(["convert", "--to-hf", str(wordpiece_data / "run"), "--out", str(tmp_path / "hf")]) == 0
    ours = Run.open(wordpiece_data / "run").load_model()
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tokenizer("It is a truth universally [MASK], that a single man", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)


def test_a_tokenizer_without_mask_is_refused_in_one_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    assert (
        main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "data")]) == 0
    )
    capsys.readouterr()
    code = main(
        [
            "pretrain",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "run"),
            *TRAIN,
            "--max-steps",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--model bert-nano" in err and "needs [MASK], [CLS]" in err
    assert "--tokenizer wordpiece" in err and not (tmp_path / "run").exists()

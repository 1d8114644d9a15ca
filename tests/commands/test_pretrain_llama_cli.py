"""``pretrain --model llama-nano`` end to end from the CLI, ``generate`` through the GQA cache, the
``--n-kv-head`` flag, and the trained run exported as a transformers Llama."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.run import Run

TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n"
) * 60
TRAIN = ["--max-steps", "40", "--batch-size", "8", "--lr", "1e-2", "--warmup-steps", "5"]
QUICK = ["--eval-every", "20", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama-data")
    (root / "austen.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "prepare",
                "--data",
                str(root / "austen.txt"),
                "--tokenizer",
                "char",
                "--out",
                str(root / "data"),
            ]
        )
        == 0
    )
    return root / "data"


@pytest.fixture(scope="module")
def llama_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama-run") / "run"
    assert (
        main(["pretrain", "--model", "llama-nano", "--data", str(data), "--out", str(out), *TRAIN, *QUICK])
        == 0
    )
    return out


def test_llama_nano_trains_with_grouped_query_attention(llama_run):
    config = json.loads((llama_run / "config.json").read_text())["model"]
    assert (config["n_head"], config["n_kv_head"], config["norm"], config["mlp"]) == (
        4,
        2,
        "rmsnorm",
        "swiglu",
    )
    evals = [json.loads(line) for line in (llama_run / "metrics.jsonl").read_text().splitlines()]
    losses = [record["val_loss"] for record in evals if "val_loss" in record]
    assert losses[-1] < losses[0] - 1.0


def test_generate_decodes_it_through_the_cache_as_recomputing_would(llama_run, capsys):
    capsys.readouterr()
    args = ["generate", "--checkpoint", str(llama_run), "--prompt", "It is a", "--strategy", "greedy",
            "--max-new-tokens", "24", "--json"]  # fmt: skip
    assert main(args) == 0
    ids = json.loads(capsys.readouterr().out)["samples"][0]["ids"]
    run = Run.open(llama_run)
    model, tokenizer = run.load_model().eval(), run.load_tokenizer()
    tokens = torch.tensor([tokenizer.encode("It is a")])
    with torch.no_grad():
        for _ in range(len(ids)):  # no cache: the whole sequence every step
            tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert tokens[0, -len(ids) :].tolist() == ids and len(ids) == 24


def test_trained_run_exports_as_transformers_llama(llama_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert main(["convert", "--to-hf", str(llama_run), "--out", str(tmp_path / "hf")]) == 0
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "LlamaForCausalLM" and theirs.config.num_key_value_heads == 2
    ours = Run.open(llama_run).load_model().eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-4)


def test_n_kv_head_flag_sets_the_key_value_heads(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--model", "gpt-nano", "--n-kv-head", "1", "--data", str(data), "--out", str(out),
            "--max-steps", "2", "--eval-every", "2", "--eval-batches", "1"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["model"]["n_kv_head"] == 1
    capsys.readouterr()
    bad = ["pretrain", "--model", "gpt-nano", "--n-kv-head", "3", "--data", str(data),
           "--out", str(tmp_path / "bad"), "--max-steps", "2"]  # fmt: skip
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "n_kv_head=3 must divide n_head=4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()

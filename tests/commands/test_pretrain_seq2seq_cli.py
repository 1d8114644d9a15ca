"""prepare --task seq2seq -> pretrain -> evaluate from the CLI: an encoder-decoder learns the copy
task to >= 99% exact match on held-out pairs; evaluate's loss is the per-pair cross-entropy; an
interrupted run resumed gives the weights of an uninterrupted one; mismatches are one line each."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.data.seq2seq_shards import load_seq2seq
from lmforge.run import Run
from tests.commands.test_pretrain_cli import TEXT

COPY = "builtin:copy?length=3-8,size=3000"  # 10 letters; 2,700 train / 300 val pairs
# the rnn-attn preset learns the copy task in ~20 s on one thread (tests/models/test_rnn_seq2seq.py)
TRAIN = [
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--warmup-steps",
    "20",
    "--eval-every",
    "100",
    "--eval-batches",
    "4",
]


def run_json(argv: list[str], capsys) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def prepare(capsys, spec: str, out, *extra: str) -> None:
    argv = ["prepare", "--task", "seq2seq", "--data", spec, "--tokenizer", "char", "--out", str(out), *extra]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()


@pytest.fixture(scope="module")
def copy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    assert (
        main(
            [
                "prepare",
                "--task",
                "seq2seq",
                "--data",
                COPY,
                "--tokenizer",
                "char",
                "--out",
                str(root / "data"),
            ]
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def copy_run(copy_data):
    run = copy_data / "rnn-attn"
    argv = ["pretrain", "--data", str(copy_data / "data"), "--out", str(run), "--model", "rnn-attn"]
    assert main([*argv, "--max-steps", "300", *TRAIN]) == 0
    return run


def test_rnn_attn_learns_the_copy_task_to_99_percent_exact_match(copy_run, copy_data, capsys):
    result = run_json(["evaluate", "--checkpoint", str(copy_run), "--data", str(copy_data / "data")], capsys)
    assert result["pairs"] == 300
    assert result["exact_match"] >= 99.0, result
    assert result["bleu"] >= 95.0 and result["chrf"] >= 95.0
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert "tok:char" in result["bleu_signature"] and "nc:6" in result["chrf_signature"]


def test_beam_search_copies_as_well_and_the_summary_prints_the_signatures(copy_run, copy_data, capsys):
    data = str(copy_data / "data")
    beam = run_json(["evaluate", "--checkpoint", str(copy_run), "--data", data, "--num-beams", "4"], capsys)
    assert beam["decoding"] == "beam search, 4 beams" and beam["exact_match"] >= 99.0
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(copy_run),
                "--data",
                data,
                "--max-pairs",
                "20",
                "--examples",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "20 of 300 pairs" in printed and "BLEU signature: nrefs:1|" in printed and "exact match" in printed
    shown = [line.split() for line in printed.splitlines() if "(reference" in line]
    assert len(shown) == 2 and all(words[0] == words[2] == words[4].rstrip(")") for words in shown)  # copies


@pytest.fixture(scope="module")
def transformer_run(copy_data):
    run = copy_data / "seq2seq-nano"
    argv = ["pretrain", "--data", str(copy_data / "data"), "--out", str(run), "--model", "seq2seq-nano"]
    assert main([*argv, "--max-steps", "300", *TRAIN]) == 0
    return run


@pytest.mark.slow  # 35 s; the Transformer learns the copy task at library level in the default run (tests/models/test_seq2seq.py)
def test_the_transformer_learns_the_copy_task_to_99_percent_exact_match(transformer_run, copy_data, capsys):
    data = str(copy_data / "data")
    greedy = run_json(["evaluate", "--checkpoint", str(transformer_run), "--data", data], capsys)
    assert greedy["exact_match"] >= 99.0 and greedy["bleu"] >= 95.0, greedy
    beam = run_json(
        ["evaluate", "--checkpoint", str(transformer_run), "--data", data, "--num-beams", "3"], capsys
    )
    assert beam["exact_match"] >= 99.0
    config = Run.open(transformer_run).read_config()
    assert config["family"] == "seq2seq" and config["model"]["vocab_size"] == 12


def test_pairs_longer_than_the_transformers_limits_are_counted_before_training(copy_data, tmp_path, capsys):
    argv = [
        "pretrain",
        "--data",
        str(copy_data / "data"),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "seq2seq-nano",
    ]
    assert main([*argv, "--block-size", "6", "--max-steps", "1", "--eval-batches", "1"]) == 0
    err = capsys.readouterr().err
    pairs = load_seq2seq(copy_data / "data").pairs("train")
    over = int((pairs.sources.lengths > 6).sum())  # sources over 6; targets (the same) + start over 6
    assert f"note: {over:,} of 2,700 training sources do not fit the model's source limit of 6" in err
    over = int((pairs.targets.lengths + 1 > 6).sum())
    assert f"note: {over:,} of 2,700 training targets do not fit the model's target limit (start token" in err


def test_the_run_takes_its_vocabulary_and_start_token_from_the_tokenizer(copy_run, copy_data):
    run = Run.open(copy_run)
    config = run.read_config()
    tokenizer = run.load_tokenizer()
    assert config["model"]["vocab_size"] == tokenizer.vocab_size == 12  # 10 letters, end-of-text, <unk>
    assert config["model"]["decoder_start_token_id"] == tokenizer.bos_id
    assert config["data"]["task"] == "seq2seq" and not run.source_tokenizer_dir.exists()
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 100, 200, 300]
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-4) for r in evals)
    assert evals[-1]["val_loss"] < 0.1 * evals[0]["val_loss"]


def test_evaluate_loss_is_the_mean_cross_entropy_of_each_pair_alone(copy_run, copy_data, capsys):
    """The batched, padded evaluation against one unpadded forward per pair, summed by hand."""
    result = run_json(
        [
            "evaluate",
            "--checkpoint",
            str(copy_run),
            "--data",
            str(copy_data / "data"),
            "--max-pairs",
            "40",
            "--device",
            "cpu",
        ],  # fmt: skip
        capsys,
    )
    run = Run.open(copy_run)
    model, tokenizer = run.load_model(), run.load_tokenizer()
    texts = [json.loads(line) for line in (copy_data / "data" / "val.pairs.jsonl").read_text().splitlines()]
    chosen = [texts[i * len(texts) // 40] for i in range(40)]  # evenly spread, as --max-pairs keeps them
    total, count = 0.0, 0
    with torch.no_grad():
        for pair in chosen:
            source = torch.tensor([tokenizer.encode(pair["source"])])
            target = tokenizer.encode(pair["target"]) + [tokenizer.eos_id]
            decoder_input = torch.tensor([[tokenizer.bos_id] + target[:-1]])
            logits = model(source, torch.ones_like(source), decoder_input).logits[0]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum").item()
            count += len(target)
    assert result["target_tokens"] == count
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)


def test_evaluate_on_the_builtin_task_scores_the_split_prepare_held_out(copy_run, copy_data, capsys):
    prepared = run_json(
        ["evaluate", "--checkpoint", str(copy_run), "--data", str(copy_data / "data")], capsys
    )
    builtin = run_json(["evaluate", "--checkpoint", str(copy_run), "--data", COPY], capsys)
    assert builtin["pairs"] == 300
    assert builtin["loss"] == pytest.approx(prepared["loss"], rel=1e-6)
    assert builtin["exact_match"] == prepared["exact_match"]


def test_evaluate_reads_a_jsonl_file_of_pairs_with_named_fields(copy_run, tmp_path, capsys):
    pairs = [("abc", "abc"), ("hgfe", "hgfe"), ("jj", "jj")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"in": s, "out": t}) + "\n" for s, t in pairs), encoding="utf-8")
    argv = ["evaluate", "--checkpoint", str(copy_run), "--data", str(path), "--source-field", "in"]
    result = run_json([*argv, "--target-field", "out"], capsys)
    assert result["pairs"] == 3 and result["target_tokens"] == 9 + 3  # each target and its end token


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq-small")
    spec = "builtin:reverse?length=3-5,size=200,alphabet=5"
    assert (
        main(
            [
                "prepare",
                "--task",
                "seq2seq",
                "--data",
                spec,
                "--tokenizer",
                "char",
                "--out",
                str(root / "data"),
            ]
        )
        == 0
    )
    return root


SMALL = [
    "--model",
    "rnn-attn",
    "--hidden-size",
    "32",
    "--n-embd",
    "16",
    "--batch-size",
    "16",
    "--eval-every",
    "5",
]


def test_resumed_training_equals_straight_training(small_data, tmp_path, capsys):
    data = str(small_data / "data")
    for name, steps in (("straight", "20"), ("split", "10")):
        run_json(
            ["pretrain", "--data", data, "--out", str(tmp_path / name), *SMALL, "--max-steps", steps], capsys
        )
    summary = run_json(["pretrain", "--resume", str(tmp_path / "split"), "--max-steps", "20"], capsys)
    assert summary["steps"] == 20
    straight, split = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "split"))
    assert all(torch.equal(straight[name], split[name]) for name in straight)  # same batches, same order
    losses = [
        [
            r["train_loss"]
            for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
            if "train_loss" in r
        ]
        for name in ("straight", "split")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 20


def test_separate_vocabularies_are_saved_and_read_back(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "".join(f"{w}\t{w.upper()}\n" for w in ["ab", "ba", "abc", "cab", "bca", "cc", "aab", "bb"] * 5)
    )
    data, out = tmp_path / "data", tmp_path / "run"
    prepare(capsys, str(path), data, "--target-tokenizer", "char")
    summary = run_json(
        ["pretrain", "--data", str(data), "--out", str(out), *SMALL, "--max-steps", "3"], capsys
    )
    assert summary["steps"] == 3
    run = Run.open(out)
    model = run.read_config()["model"]
    assert model["shared_vocab"] is False
    assert model["source_vocab_size"] == run.load_source_tokenizer().vocab_size
    assert model["vocab_size"] == run.load_tokenizer().vocab_size
    result = run_json(["evaluate", "--checkpoint", str(out), "--data", str(data)], capsys)
    assert result["pairs"] >= 1 and math.isfinite(result["loss"])


# --- bad input: one line each ----------------------------------------------------------------------
def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
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


def test_a_seq2seq_model_on_a_language_model_dataset_is_refused(lm_data, tmp_path, capsys):
    argv = [
        "pretrain",
        "--data",
        str(lm_data),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "rnn-attn",
        "--max-steps",
        "1",
    ]
    err = one_line_error(argv, capsys)
    assert "encoder-decoder" in err and "--task seq2seq" in err
    assert not (tmp_path / "r").exists()


def test_a_language_model_on_a_seq2seq_dataset_is_refused(small_data, tmp_path, capsys):
    argv = ["pretrain", "--data", str(small_data / "data"), "--out", str(tmp_path / "r"), "--max-steps", "1"]
    err = one_line_error(argv, capsys)
    assert "source/target pairs" in err and "gpt-nano" in err and "rnn-attn" in err


def test_evaluating_a_seq2seq_run_on_a_language_model_dataset_is_refused(copy_run, lm_data, capsys):
    err = one_line_error(["evaluate", "--checkpoint", str(copy_run), "--data", str(lm_data)], capsys)
    assert "language-model dataset" in err and "pairs" in err


def test_evaluating_a_language_model_on_pairs_is_refused(lm_data, small_data, tmp_path, capsys):
    out = tmp_path / "gpt"
    argv = [
        "pretrain",
        "--data",
        str(lm_data),
        "--out",
        str(out),
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "2",
    ]
    assert main([*argv, "--block-size", "16", "--max-steps", "1"]) == 0
    capsys.readouterr()
    err = one_line_error(["evaluate", "--checkpoint", str(out), "--data", str(small_data / "data")], capsys)
    assert "seq2seq" in err


def test_a_split_without_pairs_is_refused_before_training(small_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_data / "data", data)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "val_pairs": 0}))
    argv = ["pretrain", "--data", str(data), "--out", str(tmp_path / "r"), *SMALL, "--max-steps", "1"]
    assert "the val split of" in one_line_error(argv, capsys)
    assert not (tmp_path / "r").exists()


def test_evaluating_on_a_file_without_pairs_is_refused(copy_run, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    err = one_line_error(["evaluate", "--checkpoint", str(copy_run), "--data", str(empty)], capsys)
    assert "no pairs" in err or "empty" in err

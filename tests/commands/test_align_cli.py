"""``lmforge align reward``, ``lmforge align dpo`` and ``lmforge reward`` end to end on a tiny run,
and the one-line refusals (exit 2) of bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from tests.align.pref_helpers import make_causal_run, separable_pairs, write_jsonl
from tests.seq2seq_run import make_seq2seq_run, one_line_error
from tests.tiny_run import make_bert_run

CAP = ["--max-steps", "2", "--batch-size", "4", "--eval-every", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("align-cli")
    return {
        "root": root,
        "base": make_causal_run(root / "base").path,
        "train": write_jsonl(root / "train.jsonl", separable_pairs(8, seed=1)),
        "val": write_jsonl(root / "val.jsonl", separable_pairs(4, seed=2)),
    }


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def reward_run(files):
    out = files["root"] / "rm"
    assert main(["align", "reward", "--checkpoint", str(files["base"]), "--data", files["train"],
                 "--val", files["val"], "--out", str(out), "--json", *CAP]) == 0  # fmt: skip
    return out


def test_align_reward_prints_its_summary_and_writes_a_reward_run(files, capsys):
    out = files["root"] / "rm-human"
    code, stdout, _ = cli(capsys, "align", "reward", "--checkpoint", files["base"], "--data", files["train"],
                          "--val", files["val"], "--out", out, *CAP)  # fmt: skip
    assert code == 0
    assert "reward model: gpt from" in stdout and "held out (best weights, 4 pairs): accuracy" in stdout
    assert json.loads((out / "config.json").read_text())["task"]["kind"] == "reward"
    assert (out / "loss.png").exists() and (out / "best" / "model.safetensors").exists()


def test_reward_scores_responses_best_first(reward_run, capsys):
    code, stdout, _ = cli(capsys, "reward", "--checkpoint", reward_run, "--prompt", "abc",
                          "--response", "aeiou", "bcdfg", "--json")  # fmt: skip
    assert code == 0
    result = json.loads(stdout)
    rewards = [entry["reward"] for entry in result["responses"]]
    assert rewards == sorted(rewards, reverse=True) and len(rewards) == 2
    assert result["responses"][0]["p_preferred_to_best"] == pytest.approx(0.5)
    from lmforge.align.reward_model import load_reward_model

    direct = load_reward_model(reward_run).score(["abc", "abc"], ["aeiou", "bcdfg"])
    by_text = {entry["response"]: entry["reward"] for entry in result["responses"]}
    assert [by_text["aeiou"], by_text["bcdfg"]] == pytest.approx(direct, abs=1e-6)
    code, stdout, _ = cli(
        capsys, "reward", "--checkpoint", reward_run, "--prompt", "abc", "--response", "aeiou"
    )
    assert code == 0 and stdout.strip().endswith("aeiou")


def test_align_dpo_writes_a_run_that_generate_reads(files, capsys):
    out = files["root"] / "dpo"
    code, stdout, _ = cli(capsys, "align", "dpo", "--checkpoint", files["base"], "--data", files["train"],
                          "--val", files["val"], "--out", out, "--beta", "0.2", "--json", *CAP)  # fmt: skip
    assert code == 0
    summary = json.loads(stdout)
    assert summary["steps"] == 2 and summary["beta"] == 0.2 and summary["reference_pairs_cached"] == 12
    code, stdout, _ = cli(
        capsys, "generate", "--checkpoint", out, "--prompt", "User: hi", "--max-new-tokens", "3"
    )
    assert code == 0


@pytest.mark.parametrize("command", ["reward", "dpo"])
def test_bad_input_is_one_line(files, capsys, command, tmp_path):
    base, train = files["base"], files["train"]
    missing_field = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "c"}])
    long_prompt = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "x" * 60, "chosen": "a", "rejected": "b"}])
    cases = [
        (["--data", tmp_path / "nope.jsonl", "--val", train], "does not exist"),
        (["--data", missing_field, "--val", train], "bad.jsonl:1: no 'rejected' field"),
        (["--data", train], "give --val"),
        (["--data", long_prompt, "--val", train], "no pair fits the model's context of 48 tokens"),
    ]
    for args, message in cases:
        line = one_line_error(*cli(capsys, "align", command, "--checkpoint", base, *args,
                                   "--out", tmp_path / "out", *CAP))  # fmt: skip
        assert message in line, line
    assert not (tmp_path / "out").exists()


def test_non_causal_runs_are_refused_naming_what_works(tmp_path, capsys, files):
    bert = make_bert_run(tmp_path / "bert").path
    seq2seq = make_seq2seq_run(tmp_path / "s2s", preset="rnn-attn").path
    for run, family in ((bert, "bert"), (seq2seq, "rnn_seq2seq")):
        for command in ("reward", "dpo"):
            line = one_line_error(*cli(capsys, "align", command, "--checkpoint", run, "--data", files["train"],
                                       "--val", files["val"], "--out", tmp_path / "out", *CAP))  # fmt: skip
            assert "causal Transformer run (gpt" in line and f"holds a {family} model" in line


def test_reward_on_a_run_that_is_not_a_reward_model_is_one_line(files, capsys):
    line = one_line_error(
        *cli(capsys, "reward", "--checkpoint", files["base"], "--prompt", "a", "--response", "b")
    )
    assert "is not a reward model" in line and "lmforge align reward" in line


def test_reward_refuses_a_prompt_that_fills_the_context(reward_run, capsys):
    line = one_line_error(
        *cli(capsys, "reward", "--checkpoint", reward_run, "--prompt", "x" * 60, "--response", "a")
    )
    assert "prompt 1: the prompt is" in line and "context is 48" in line


@pytest.mark.slow
def test_builtin_stdlib_prefs_reward_model_and_dpo_end_to_end(tmp_path, capsys):
    """The built-in pairs through both commands (their own validation split), on a GPT whose char
    tokenizer has byte fallback, so every docstring character encodes."""
    import torch

    from lmforge.models.gpt import GPT, GPTConfig
    from lmforge.run import Run
    from lmforge.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(
        "char", "User: Assistant:\n" + "abcdefghijklmnopqrstuvwxyz" * 2, byte_fallback=True
    )
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=160, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    base = Run.create(tmp_path / "base")
    base.save_tokenizer(tokenizer)
    base.write_config({"family": "gpt", "model": config.to_dict()})
    base.save_weights(GPT(config))
    budget = [
        "--max-steps",
        "20",
        "--eval-batches",
        "2",
        "--eval-every",
        "10",
        "--device",
        "cpu",
        "--no-progress",
    ]
    code, out, err = cli(capsys, "align", "reward", "--checkpoint", base.path, "--data", "builtin:stdlib-prefs",
                         "--out", tmp_path / "rm", "--json", *budget)  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["val_pairs"] > 400 and 0 <= summary["accuracy"] <= 1 and summary["steps"] == 20
    # some docstring summaries outgrow a 160-token context, and some prompts fill it
    assert summary["responses_cut"] > 0 and summary["pairs_left_out"] > 0
    code, out, err = cli(capsys, "reward", "--checkpoint", tmp_path / "rm", "--prompt",
                         "Explain what `len(obj)` does.", "--response", "Return the length.", "Sleep.")  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 2, err
    code, out, err = cli(capsys, "align", "dpo", "--checkpoint", base.path, "--data", "builtin:stdlib-prefs",
                         "--out", tmp_path / "dpo", *budget)  # fmt: skip
    assert code == 0, err
    assert "reference: a frozen copy of the checkpoint" in out and "preference accuracy" in out

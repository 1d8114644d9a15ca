"""``lmforge align ppo`` and ``align grpo`` end to end on a tiny run, and the inputs they refuse in one
line (exit 2) before any work: a missing prompts file, a bad reward spec, a BERT or seq2seq run, a
prompt with no room for the response."""

from __future__ import annotations

import json

import pytest

from lmforge import cli
from tests.align.rl_fixtures import prompts_file, tiny_policy
from tests.seq2seq_run import cached_run, one_line_error
from tests.tiny_run import make_bert_run

REWARD = "tests.align.rl_fixtures:vowel_fraction"
SMALL = ["--iterations", "2", "--batch-size", "2", "--minibatch-size", "2", "--max-new-tokens", "4"]
SMALL += ["--eval-size", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("align-cli")
    return root, str(tiny_policy(root / "policy")), str(prompts_file(root / "prompts.jsonl"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_grpo_json_then_generate_reads_the_run(inputs, capsys):
    root, policy, prompts = inputs
    out = str(root / "grpo")
    code, stdout, err = run_cli(
        capsys, "align", "grpo", "--policy", policy, "--reward", REWARD, "--prompts", prompts,
        "--out", out, "--group-size", "2", *SMALL, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["method"] == "grpo" and summary["iterations"] == 2 and summary["run"] == out
    assert summary["reward_before"] is not None and len(summary["samples"]) == 2
    code, stdout, err = run_cli(
        capsys, "generate", "--checkpoint", out, "--prompt", "All", "--max-new-tokens", "3"
    )
    assert code == 0, err


def test_ppo_on_builtin_arith_prints_a_summary(inputs, capsys):
    root, policy, _ = inputs
    code, stdout, err = run_cli(
        capsys, "align", "ppo", "--policy", policy, "--reward", "builtin:arith", "--prompts", "builtin:arith",
        "--out", str(root / "ppo"), "--kl-target", "3", *SMALL,
    )  # fmt: skip
    assert code == 0, err
    assert "PPO: 2 iterations" in stdout and "evaluation (2 prompts" in stdout
    assert "builtin:arith val split" in stdout  # the held-out prompts are the source's own val split
    assert (root / "ppo" / "metrics.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--prompts": "missing.jsonl"}, "--prompts missing.jsonl does not exist"),
        ({"--reward": "no_such_module_xyz:score"}, "cannot import 'no_such_module_xyz'"),
        ({"--reward": "tests.align.rl_fixtures:nothing"}, "has no function 'nothing'"),
        ({"--max-new-tokens": "46"}, "past the model's context of 48 tokens"),
        ({"--clip-range": "1.5"}, "--clip-range must be"),
        ({"--min-new-tokens": "5"}, "--min-new-tokens 5 is more than --max-new-tokens 4"),
    ],
)
def test_bad_input_is_one_line(inputs, capsys, monkeypatch, change, message):
    root, policy, prompts = inputs
    monkeypatch.chdir(root)
    args = {"--policy": policy, "--reward": REWARD, "--prompts": prompts, "--out": str(root / "bad")}
    args.update({"--max-new-tokens": "4", "--device": "cpu", **change})
    flat = [item for pair in args.items() for item in pair]
    line = one_line_error(*run_cli(capsys, "align", "ppo", *flat))
    assert message in line, line
    assert not (root / "bad").exists()


def test_bert_and_seq2seq_runs_are_refused_naming_what_works(inputs, capsys, tmp_path):
    _, _, prompts = inputs
    bert = make_bert_run(tmp_path / "bert").path
    seq2seq = cached_run(tmp_path).path
    for run in (bert, seq2seq):
        line = one_line_error(
            *run_cli(capsys, "align", "grpo", "--policy", str(run), "--reward", REWARD, "--prompts", prompts,
                     "--out", str(tmp_path / "out"))
        )  # fmt: skip
        assert "PPO and GRPO train a causal Transformer (a GPT-family run" in line, line


def test_one_digit_sums_have_no_val_split_so_the_evaluation_reads_the_training_prompts(inputs, capsys):
    """builtin:arith?digits=1 trains on all 100 sums; the run still evaluates before and after."""
    root, policy, _ = inputs
    code, stdout, err = run_cli(
        capsys, "align", "grpo", "--policy", policy, "--reward", "builtin:arith",
        "--prompts", "builtin:arith?digits=1", "--out", str(root / "grpo-1digit"), "--group-size", "2", *SMALL,
    )  # fmt: skip
    assert code == 0, err
    assert "builtin:arith?digits=1 train split (it has no val split)" in stdout


def test_a_reward_model_too_short_for_the_prompts_is_named_in_one_line(capsys, tmp_path):
    """The reward model reads prompt + response: a file's prompt that fills its context is refused
    before any work, naming the reward model (it was an error deep in the first evaluation)."""
    from tests.align.pref_helpers import make_causal_run, separable_pairs, write_jsonl
    from tests.tiny_run import make_run

    policy = make_run(tmp_path / "policy", n_layer=1, n_embd=32, block_size=128).path
    base = make_causal_run(tmp_path / "base").path  # context 48
    pairs = write_jsonl(tmp_path / "pairs.jsonl", separable_pairs(8, seed=1))
    rm = tmp_path / "rm"
    assert cli.main(["align", "reward", "--checkpoint", str(base), "--data", str(pairs), "--val", str(pairs),
                     "--out", str(rm), "--max-steps", "1", "--batch-size", "4", "--device", "cpu",
                     "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    prompts = tmp_path / "long.jsonl"
    prompts.write_text(json.dumps({"prompt": "hear me " * 6}) + "\n", encoding="utf-8")
    line = one_line_error(
        *run_cli(capsys, "align", "ppo", "--policy", str(policy), "--reward", str(rm), "--prompts", str(prompts),
                 "--out", str(tmp_path / "ppo"), *SMALL)
    )  # fmt: skip
    assert f"for the reward model {rm}, whose context is 48: no room for a response" in line, line
    assert not (tmp_path / "ppo").exists()


class _Encoder:
    limit = 10

    def prompt_ids(self, text: str) -> list[int]:
        return list(range(len(text)))


def test_prompts_a_reward_model_cannot_read_are_left_out_of_a_built_in_source():
    from types import SimpleNamespace

    from lmforge.align.prompts import Prompt
    from lmforge.align.rl_job import _readable_by_reward_model
    from lmforge.errors import DataError

    reward = SimpleNamespace(reward_model=SimpleNamespace(encoder=_Encoder()))
    prompts = [Prompt("short"), Prompt("ten chars!"), Prompt("nine char")]  # 5, 10, 9 ids of 10
    kept, ids = _readable_by_reward_model(reward, "rm", prompts, [[1], [2], [3]], drop_long=True)
    assert [p.text for p in kept] == ["short", "nine char"] and ids == [[1], [3]]
    with pytest.raises(DataError, match="'ten chars!' is 10 tokens for the reward model rm"):
        _readable_by_reward_model(reward, "rm", prompts, [[1], [2], [3]], drop_long=False)
    with pytest.raises(DataError, match="no prompt fits the reward model rm's context of 10"):
        _readable_by_reward_model(reward, "rm", prompts[1:2], [[2]], drop_long=True)
    plain = lambda prompts, completions: [0.0] * len(prompts)  # noqa: E731 - a reward that is not a model
    assert _readable_by_reward_model(plain, "f", prompts, [[1], [2], [3]], drop_long=False) == (
        prompts,
        [[1], [2], [3]],
    )

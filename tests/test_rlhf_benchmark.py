"""benchmarks/rlhf.py: the step timing the speed race rests on (hand-computed), TRL's DPO steps on a
converted tiny run (the first loss is ln 2: policy = reference), the race's rows, and (slow) the
whole ``--quick`` path: every stage runs, DPO losses of lmforge and TRL agree step by step, and
both PPO sides sample the same number of tokens. No assertion on speed: the machine is shared."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from tests.tiny_run import make_run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("rlhf_speed"), importlib.import_module("rlhf_trl")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_median_step_leaves_out_the_warm_up_step(bench):
    speed, _ = bench
    assert speed.median_step([5.0, 1.0, 3.0, 2.0]) == 2.0  # median of 1, 3, 2
    assert speed.median_step([4.0]) == 4.0


def test_step_times_are_differences_of_elapsed_seconds(bench, tmp_path):
    speed, _ = bench
    records = [
        {"step": 1, "train_loss": 0.7, "elapsed_s": 0.5},
        {"step": 1, "accuracy": 0.9},  # a record without the key or a clock is not a step
        {"step": 2, "train_loss": 0.6, "elapsed_s": 1.25},
        {"step": 3, "train_loss": 0.5, "elapsed_s": 2.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    times, losses = speed.step_times_from_metrics(path, "train_loss")
    assert times == pytest.approx([0.5, 0.75, 0.75])
    assert losses == [0.7, 0.6, 0.5]


def test_race_rows_keep_only_rows_that_fit_the_context(bench, tmp_path):
    speed, trl_side = bench
    from lmforge.tokenizers.chat import ChatTemplate, encode_chat

    run = make_run(tmp_path / "run")
    tokenizer = run.load_tokenizer()
    template = ChatTemplate.for_tokenizer(run.tokenizer_dir, tokenizer)
    pairs = [
        {"prompt": "hear me speak " * 6, "chosen": "Speak.", "rejected": "All."},  # too long for 64
        {"prompt": "speak", "chosen": "Speak, speak.", "rejected": "resolved"},
        {"prompt": "die", "chosen": "famish", "rejected": "rather"},
    ]
    ppo = trl_side.PPOSettings(batch_size=1, response_length=8)
    lm_pairs, trl_pairs, lm_prompts, trl_prompts = speed.race_rows(
        pairs, ["hear me " * 10, "all"], template, tokenizer, 64, 2, ppo
    )
    assert lm_pairs == pairs[1:]
    assert trl_pairs[0] == {
        "prompt": "User: speak\n\nAssistant:",
        "chosen": " Speak, speak.\n\n",  # the assistant's turn as the default template writes it
        "rejected": " resolved\n\n",
    }
    assert lm_prompts == ["all"] and trl_prompts == ["User: all\n\nAssistant:"]
    assert len(encode_chat(tokenizer, trl_prompts[0])) + ppo.response_length <= 64


@pytest.mark.slow  # importing TRL alone takes seconds
def test_trl_dpo_starts_at_ln2_and_times_every_step(bench, tmp_path):
    _, trl_side = bench
    pytest.importorskip("trl")
    from lmforge.interop import convert_to_hf

    make_run(tmp_path / "run", block_size=48)
    convert_to_hf(tmp_path / "run", tmp_path / "hf")
    pairs = [
        {"prompt": "User: speak\n\nAssistant:", "chosen": " Speak.", "rejected": " die"},
        {"prompt": "User: all\n\nAssistant:", "chosen": " All:", "rejected": " famish"},
    ]
    result = trl_side.trl_dpo(tmp_path / "hf", pairs, trl_side.DPOSettings(steps=3, batch_size=2, lr=1e-3))
    losses = result["losses"]
    assert len(losses) == 3 and len(result["step_times"]) == 3
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # -log sigmoid(0): policy = reference
    assert losses[2] < losses[1] < losses[0]  # the same batch each step: the loss falls
    assert all(t > 0 for t in result["step_times"]) and result["setup_s"] > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for recipe in ("lmforge.finetune.sft", "lmforge.align.reward", "lmforge.align.dpo", "lmforge.align.ppo"):
        pytest.importorskip(recipe, reason="the post-training recipes have not landed on this branch")
    pytest.importorskip("trl")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        rlhf = importlib.import_module("rlhf")
        out = tmp_path_factory.mktemp("rlhf-bench")
        rlhf.main(["--quick", "--out", str(out / "rlhf.json"), "--plot", str(out / "rewards.png")])
        return json.loads((out / "rlhf.json").read_text()), out, importlib.import_module("rlhf_trl")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_quick_run_covers_every_stage(quick_run):
    payload, out, _ = quick_run
    assert {"sft", "rm", "ppo", "dpo", "grpo", "speed"} <= set(payload)
    assert 0 <= payload["rm"]["accuracy"] <= 1
    for method in ("ppo", "dpo", "grpo"):
        assert math.isfinite(payload[method]["reward_before"]) and math.isfinite(
            payload[method]["reward_after"]
        )
    assert all(0 <= payload["grpo"][k] <= 1 for k in ("reward_before", "reward_after"))  # arith_reward is 0/1
    assert payload["ppo"]["samples"] and {"prompt", "before", "after"} <= set(payload["ppo"]["samples"][0])
    assert (out / "rewards.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_quick_race_has_equal_dpo_losses_and_equal_ppo_lengths(quick_run):
    payload, _, trl_side = quick_run
    dpo = payload["speed"]["dpo"]
    assert dpo["lmforge_losses"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert dpo["trl_losses"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert dpo["max_loss_difference"] < 1e-3  # same model, batch and optimizer: the same losses
    assert dpo["ratio"] > 0 and dpo["lmforge_steps_per_s"] > 0
    if not trl_side.TRL_PPO_PYTHON.exists():
        pytest.skip("no side venv with TRL 1.12: the PPO race is left out")
    ppo = payload["speed"]["ppo"]
    length = payload["speed"]["ppo_settings"]["response_length"]
    assert ppo["trl_response_tokens"] == length
    assert ppo["lmforge_response_tokens"] == [length] * len(ppo["lmforge_response_tokens"])
    assert ppo["ratio"] > 0

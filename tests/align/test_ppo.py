"""PPO on a tiny random GPT with a programmatic reward (the vowel fraction of the completion): a short
fixed-seed CPU run raises the held-out mean reward clearly above the starting policy's, with the KL
to the reference under a stated bound, and writes a plain causal run."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.align.ppo import plan_ppo, run_ppo
from lmforge.align.rl_settings import PPOConfig
from lmforge.run import Run
from tests.align.rl_fixtures import prompts_file, tiny_policy, vowel_fraction

KL_BOUND = 12.0  # nats per 8-token response (1.5 nats per token), with beta 0.05
SETTINGS = dict(
    iterations=10, batch_size=16, minibatch_size=8, epochs=2, max_new_tokens=8, lr=1e-2, beta=0.05,
    eval_size=8, seed=0, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    job = plan_ppo(
        policy=tiny_policy(root / "policy"),
        reward="tests.align.rl_fixtures:vowel_fraction",
        prompts=str(prompts_file(root / "prompts.jsonl")),
        out=root / "out",
        settings=PPOConfig(**SETTINGS),
    )
    return job, run_ppo(job, progress=False)


def test_ppo_raises_the_reward_with_kl_below_the_bound(trained):
    _, summary = trained
    assert summary["reward_after"] > summary["reward_before"] + 0.15, summary
    assert summary["reward_last"] > summary["reward_first"] + 0.15, summary
    assert 0 < summary["kl_after"] < KL_BOUND, summary


def test_ppo_logs_every_iteration(trained, tmp_path):
    job, summary = trained
    records = [json.loads(line) for line in (job.run_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    for key in (
        "reward",
        "kl",
        "entropy",
        "clip_fraction",
        "value_loss",
        "policy_loss",
        "response_length",
        "beta",
    ):
        assert all(key in r for r in records), key
    assert records[0]["kl"] == pytest.approx(
        0.0, abs=1e-5
    )  # the first rollouts come from the reference itself
    assert (job.run_path / "loss.png").stat().st_size > 0


def test_ppo_saves_a_plain_causal_run_that_scores_like_the_trained_policy(trained):
    job, summary = trained
    run = Run(summary["run"])
    config = run.read_config()
    assert config["family"] == "gpt" and config["task"]["kind"] == "ppo"
    loaded = run.load_model()
    ids = torch.tensor([job.prompt_ids[0]])
    torch.testing.assert_close(loaded(ids).logits, job.policy(ids).logits)
    assert not any("value_head" in name for name in loaded.state_dict())
    prompts, completions = [s["prompt"] for s in summary["samples"]], [s["after"] for s in summary["samples"]]
    assert len(vowel_fraction(prompts, completions)) == len(summary["samples"]) > 0

"""GRPO on a tiny random GPT with a programmatic reward (the vowel fraction of the completion): a short
fixed-seed CPU run raises the held-out mean reward clearly above the starting policy's, with the KL
to the reference under a stated bound; Ctrl-C saves the policy and marks the summary."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lmforge.align.grpo import GRPOUpdate, plan_grpo, run_grpo
from lmforge.align.rl_job import generation_config
from lmforge.align.rl_loop import run_iterations
from lmforge.align.rl_settings import GRPOConfig
from lmforge.align.rollout import sample_rollouts
from lmforge.errors import UserInputError
from tests.align.rl_fixtures import prompts_file, tiny_policy

KL_BOUND = 12.0  # nats per 8-token response (1.5 nats per token), with beta 0.04
SETTINGS = dict(
    iterations=10, batch_size=4, group_size=4, minibatch_size=16, epochs=2, max_new_tokens=8, lr=1e-2,
    eval_size=8, seed=0, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    return root, tiny_policy(root / "policy"), str(prompts_file(root / "prompts.jsonl"))


def plan(inputs, out: str, **overrides):
    root, policy, prompts = inputs
    return plan_grpo(
        policy=policy,
        reward="tests.align.rl_fixtures:vowel_fraction",
        prompts=prompts,
        out=root / out,
        settings=GRPOConfig(**{**SETTINGS, **overrides}),
    )


def test_grpo_raises_the_reward_with_kl_below_the_bound(inputs):
    job = plan(inputs, "out")
    summary = run_grpo(job, progress=False)
    assert summary["reward_after"] > summary["reward_before"] + 0.15, summary
    assert summary["reward_last"] > summary["reward_first"] + 0.15, summary
    assert 0 < summary["kl_after"] < KL_BOUND, summary
    records = [json.loads(line) for line in (job.run_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 10
    for key in ("reward", "kl", "entropy", "clip_fraction", "policy_loss", "response_length", "beta"):
        assert all(key in r for r in records), key


def test_ctrl_c_saves_the_policy_and_says_so(inputs):
    job = plan(inputs, "stopped", iterations=5, eval_size=0)
    update = GRPOUpdate(job)

    def stop_at_third(iteration, indices):
        if iteration == 3:
            raise KeyboardInterrupt
        return update(iteration, indices)

    summary = run_iterations(job, stop_at_third, progress=False)
    assert summary["interrupted"] and summary["iterations"] == 2
    assert (job.run_path / "model.safetensors").is_file()


def test_a_group_of_one_is_refused(inputs):
    with pytest.raises(UserInputError, match="--group-size must be at least 2"):
        plan(inputs, "one", group_size=1)


def test_min_new_tokens_keeps_end_of_text_away_until_then(inputs):
    """The same seeded rollouts without the floor end some responses sooner (so the check can fail)."""
    job = plan(inputs, "min", max_new_tokens=12, min_new_tokens=8, temperature=3.0, eval_size=0)

    def lengths(floor: int) -> list[int]:
        config = generation_config(dataclasses.replace(job.settings, min_new_tokens=floor), job.eos_id, 16)
        batch = sample_rollouts(
            job.policy, job.prompt_ids, config, eos_id=job.eos_id,
            generator=torch.Generator().manual_seed(0), tokenizer=job.tokenizer,
        )  # fmt: skip
        # a response's tokens before its end-of-text (response_mask counts the end-of-text too)
        return (batch.response_lengths - batch.finished.long()).tolist()

    assert generation_config(job.settings, job.eos_id).min_new_tokens == 8
    assert min(lengths(0)) < 8
    assert min(lengths(8)) >= 8

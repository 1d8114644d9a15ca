"""GRPO (Shao et al. 2024, DeepSeekMath): PPO without a value model. Each prompt gets G sampled
responses, and a response's advantage is how much better it scored than its own group:

    rewards of one prompt's group (G = 4)  [1, 0, 0, 1]  ->  mean 0.5, std 0.577
    advantages (r - mean) / (std + eps)    [0.866, -0.866, -0.866, 0.866]   (every token of a response)

A group whose responses all score the same teaches nothing (advantages 0). The loss is PPO's
clipped objective with that advantage on every token, plus beta * k3, the per-token KL estimate
to the frozen reference (kl.py), averaged over each response's tokens and then over responses
(the paper's eq. 3), for ``epochs`` passes over each iteration's responses. No value model, no GAE.
A verifiable reward (``builtin:arith``: 1 when the answer's leading integer is the sum) is its
showcase: no reward model to fool.

    job = plan_grpo(policy="runs/sft", reward="builtin:arith", prompts="builtin:arith", out="runs/grpo",
                    settings=GRPOConfig(iterations=50, group_size=8))
    summary = run_grpo(job)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.align.kl import kl_k1, kl_k3, masked_mean
from lmforge.align.ppo_losses import clipped_policy_loss, reduce_tokens
from lmforge.align.rewards import score
from lmforge.align.rl_job import RLJob, check_settings, generation_config, plan_rl, sampler
from lmforge.align.rl_settings import GRPOConfig
from lmforge.align.rollout import forward_logits, sample_rollouts, sampled_logprobs, score_rollouts
from lmforge.align.value_head import token_entropy

GROUP_EPS = 1e-4  # TRL's: a group with one distinct reward gets advantages 0, not 0 / 0


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = GROUP_EPS) -> torch.Tensor:
    """(N,) -> (N,): (r - group mean) / (group std + eps), groups of ``group_size`` consecutive rows
    (unbiased std, as the paper's and TRL's code)."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).flatten()


def plan_grpo(
    *,
    policy: str | Path,
    reward: str,
    prompts: str,
    out: str | Path,
    settings: GRPOConfig,
    eval_prompts: str | None = None,
    overwrite: bool = False,
) -> RLJob:
    """Check the inputs and load everything GRPO needs; writes nothing."""
    job = plan_rl(
        kind="grpo", policy=policy, reward=reward, prompts=prompts, out=out, settings=settings,
        eval_prompts=eval_prompts, overwrite=overwrite,
    )  # fmt: skip
    check_settings(settings, min(settings.batch_size, len(job.prompts)) * settings.group_size)
    return job


def run_grpo(job: RLJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into its run directory; returns the summary (rewards before/after, KL, samples)."""
    from lmforge.align.rl_loop import run_iterations

    return run_iterations(job, GRPOUpdate(job), progress=progress)


class GRPOUpdate:
    """One GRPO iteration on a batch of prompt indices."""

    def __init__(self, job: RLJob) -> None:
        s: GRPOConfig = job.settings
        self.job, self.s = job, s
        job.policy.eval()  # no dropout: the ratios compare like with like
        self.optimizer = torch.optim.AdamW(job.policy.parameters(), lr=s.lr, weight_decay=0.0, eps=1e-5)
        self.generator = sampler(job)
        self.config = generation_config(s, job.eos_id, samples=s.group_size)

    def __call__(self, iteration: int, indices: list[int]) -> dict[str, Any]:
        job, s = self.job, self.s
        batch = sample_rollouts(
            job.policy, [job.prompt_ids[i] for i in indices], self.config,
            eos_id=job.eos_id, generator=self.generator, tokenizer=job.tokenizer,
        )  # fmt: skip
        scores = score(
            job.reward, [job.prompts[indices[i]].text for i in batch.prompt_index], batch.completions
        )
        scores = scores.to(job.device)
        advantages = group_advantages(scores, s.group_size)[:, None]  # (N, 1): every token of a response
        score_rollouts(batch, job.policy, job.reference, s.temperature)
        R = batch.response
        ids, attention = batch.input_ids, batch.attention_mask
        mask = batch.response_mask[:, R].float()
        old_logp, ref_logp = batch.logprobs[:, R], batch.ref_logprobs[:, R]

        totals = {"loss": 0.0, "policy_loss": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
        updates = 0
        shuffle = torch.Generator().manual_seed(s.seed * 1000 + iteration)
        for _ in range(s.epochs):
            for rows in torch.randperm(len(scores), generator=shuffle).split(s.minibatch_size):
                rows = rows.to(job.device)
                logits = forward_logits(job.policy, ids[rows], attention[rows]).logits
                logp = sampled_logprobs(logits, ids[rows], s.temperature)[:, R]
                policy_loss, per_token, clip_fraction = clipped_policy_loss(
                    logp, old_logp[rows], advantages[rows], mask[rows], s.clip_range, reduce="sequence"
                )
                loss = reduce_tokens(per_token + s.beta * kl_k3(logp, ref_logp[rows]), mask[rows], "sequence")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if s.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(job.policy.parameters(), s.grad_clip)
                self.optimizer.step()
                with torch.no_grad():
                    entropy = masked_mean(token_entropy(logits / s.temperature)[:, R], mask[rows])
                for name, value in (
                    ("loss", loss), ("policy_loss", policy_loss),
                    ("clip_fraction", clip_fraction), ("entropy", entropy),
                ):  # fmt: skip
                    totals[name] += float(value.detach())
                updates += 1
        grouped = scores.view(-1, s.group_size)
        return {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item(),
            "kl": (kl_k1(old_logp, ref_logp) * mask).sum(dim=1).mean().item(),
            "kl_k3_per_token": masked_mean(kl_k3(old_logp, ref_logp), mask).item(),
            **{name: total / updates for name, total in totals.items()},
            "groups_without_signal": (grouped.std(dim=1) == 0).float().mean().item(),
            "response_length": batch.response_lengths.float().mean().item(),
            "ended": batch.finished.float().mean().item(),
            "beta": s.beta,
        }

"""PPO for language models (RLHF: Ziegler et al. 2019, InstructGPT 2022): sample responses, score them,
and push the policy toward the better ones without straying far from where it started.

    job = plan_ppo(policy="runs/sft", reward="runs/rm", prompts="builtin:stdlib-instruct",
                   out="runs/ppo", settings=PPOConfig(iterations=30))
    summary = run_ppo(job)       # summary["reward_before"], summary["reward_after"], summary["kl_after"]

One iteration:
1. rollouts: ``batch_size`` prompts, one sampled response each (KV-cache decoding, rollout.py);
2. the reward function scores each whole response: the score sits on its last token, and every
   token pays beta * k1, its log-ratio to the frozen reference (kl.py), so the total reward is
   score - beta * KL(response); beta is fixed, or adapted toward --kl-target;
3. values from the value head (value_head.py), advantages by GAE (gae.py), whitened over the batch;
4. ``epochs`` passes over the responses in minibatches: the clipped policy loss plus vf_coef times
   the clipped value loss (ppo_losses.py), AdamW at a constant learning rate.
Logged per iteration: mean score ("reward"), KL ("kl", nats per response, k1 summed over its
tokens), entropy, clip fraction, policy and value loss, response length and beta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.align.gae import generalised_advantages, whiten
from lmforge.align.kl import KLController, kl_k1, kl_k3, masked_mean
from lmforge.align.ppo_losses import clipped_policy_loss, clipped_value_loss
from lmforge.align.rewards import score
from lmforge.align.rl_job import RLJob, check_settings, generation_config, plan_rl, sampler
from lmforge.align.rl_settings import PPOConfig
from lmforge.align.rollout import rollout_logprobs, sample_rollouts, sampled_logprobs
from lmforge.align.value_head import PolicyWithValue, token_entropy


def plan_ppo(
    *,
    policy: str | Path,
    reward: str,
    prompts: str,
    out: str | Path,
    settings: PPOConfig,
    eval_prompts: str | None = None,
    overwrite: bool = False,
) -> RLJob:
    """Check the inputs and load everything PPO needs; writes nothing."""
    job = plan_rl(
        kind="ppo", policy=policy, reward=reward, prompts=prompts, out=out, settings=settings,
        eval_prompts=eval_prompts, overwrite=overwrite,
    )  # fmt: skip
    check_settings(settings, min(settings.batch_size, len(job.prompts)))
    return job


def run_ppo(job: RLJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into its run directory; returns the summary (rewards before/after, KL, samples)."""
    from lmforge.align.rl_loop import run_iterations

    return run_iterations(job, PPOUpdate(job), progress=progress)


class PPOUpdate:
    """One PPO iteration on a batch of prompt indices; holds the value head, optimizer and beta."""

    def __init__(self, job: RLJob) -> None:
        s: PPOConfig = job.settings
        self.job, self.s = job, s
        self.model = PolicyWithValue(job.policy).to(job.device).eval()  # eval: no dropout in the ratios
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=s.lr, weight_decay=0.0, eps=1e-5)
        self.controller = KLController(s.beta, s.kl_target)
        self.generator = sampler(job)
        self.config = generation_config(s, job.eos_id)

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
        R = batch.response
        ids, attention = batch.input_ids, batch.attention_mask
        mask = batch.response_mask[:, R].float()
        with torch.no_grad():
            logits, values = self.model(ids, attention)
            old_logp = sampled_logprobs(logits, ids, s.temperature)[:, R] * mask
            old_values = values[:, R] * mask
            ref_logp = rollout_logprobs(job.reference, batch, s.temperature)[:, R]
        kl = kl_k1(old_logp, ref_logp) * mask  # (N, R)
        beta = self.controller.beta
        rewards = -beta * kl
        last = (batch.response_lengths - 1).clamp(min=0)
        rewards[torch.arange(len(scores), device=rewards.device), last] += scores
        advantages, returns = generalised_advantages(rewards, old_values, mask, s.gamma, s.lam)
        advantages = whiten(advantages, mask)

        totals = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
        updates = 0
        shuffle = torch.Generator().manual_seed(s.seed * 1000 + iteration)
        for _ in range(s.epochs):
            for rows in torch.randperm(len(scores), generator=shuffle).split(s.minibatch_size):
                rows = rows.to(job.device)
                logits, values = self.model(ids[rows], attention[rows])
                logp = sampled_logprobs(logits, ids[rows], s.temperature)[:, R]
                policy_loss, _, clip_fraction = clipped_policy_loss(
                    logp, old_logp[rows], advantages[rows], mask[rows], s.clip_range
                )
                value_loss = clipped_value_loss(
                    values[:, R], old_values[rows], returns[rows], mask[rows], s.value_clip_range
                )
                loss = policy_loss + s.vf_coef * value_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if s.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                self.optimizer.step()
                with torch.no_grad():
                    entropy = masked_mean(token_entropy(logits / s.temperature)[:, R], mask[rows])
                for name, value in (
                    ("policy_loss", policy_loss), ("value_loss", value_loss),
                    ("clip_fraction", clip_fraction), ("entropy", entropy),
                ):  # fmt: skip
                    totals[name] += float(value.detach())
                updates += 1
        sequence_kl = kl.sum(dim=1).mean().item()
        self.controller.update(sequence_kl, len(scores))
        return {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl": sequence_kl,
            "kl_k3_per_token": masked_mean(kl_k3(old_logp, ref_logp), mask).item(),
            **{name: total / updates for name, total in totals.items()},
            "response_length": batch.response_lengths.float().mean().item(),
            "ended": batch.finished.float().mean().item(),
            "beta": beta,
        }

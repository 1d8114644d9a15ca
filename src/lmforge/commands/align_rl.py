"""``lmforge align ppo`` and ``lmforge align grpo``: reinforcement learning from a reward.

Parsing and printing only: the recipes are ``align/ppo.py`` and ``align/grpo.py``, their flags the
fields of ``align/rl_settings.py``'s ``PPOConfig`` and ``GRPOConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from lmforge.align.rl_settings import GRPOConfig, PPOConfig
from lmforge.bounds import OUT_DIR, RUN_DIR, Text
from lmforge.commands._json import print_json

REWARD = Text(
    what="a reward: a reward-model run directory, module:function, file.py:function or builtin:arith"
)
PROMPTS = Text(what="prompts: a .jsonl file or builtin:stdlib-instruct / builtin:arith")


def ppo(
    *,
    policy: Annotated[Path, RUN_DIR],
    reward: Annotated[str, REWARD],
    prompts: Annotated[str, PROMPTS],
    out: Annotated[Path, OUT_DIR],
    eval_prompts: Annotated[str | None, PROMPTS] = None,
    settings: Annotated[dict[str, Any] | None, PPOConfig] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Train a causal run with PPO against a reward, with a KL penalty to where it started (RLHF).

    Each iteration samples one response per prompt (KV-cache decoding), scores it with --reward,
    subtracts beta times each token's log-ratio to the frozen starting policy (fixed beta, or
    adapted toward --kl-target), estimates advantages with a value head on the policy (GAE,
    whitened) and takes --epochs passes of clipped policy and value losses. metrics.jsonl logs
    mean reward, KL to the reference, entropy, clip fraction, losses, response length and beta;
    loss.png draws the reward and KL curves. The output is a plain causal run (the value head is
    dropped) that `lmforge generate` reads. Prompts are rendered with the run's chat template
    (or "User: ...\\n\\nAssistant:"); the reward function sees the raw prompt and the response text.

    A reward function is any Python function f(prompts: list[str], completions: list[str]) ->
    list[float]; builtin:arith gives 1.0 to a completion that starts with the right sum.

    Args:
        policy: the causal (GPT-family) run to train; also the frozen reference.
        reward: the reward: the run directory of a reward model, module:function,
            path/to/file.py:function or builtin:arith.
        prompts: the training prompts: a .jsonl file ({"prompt": ...} or {"messages": [...]} per
            line), or the prompts of builtin:stdlib-instruct or builtin:arith.
        out: the run directory to create.
        eval_prompts: prompts for the before/after evaluation (default: the built-in source's val
            split, or the --prompts file itself).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge align ppo --policy my_sft_run --reward builtin:arith --prompts builtin:arith --out runs/ppo --iterations 30
        lmforge align ppo --policy my_sft_run --reward my_rewards.py:brevity --prompts builtin:stdlib-instruct --out runs/ppo-brief --kl-target 6
    """
    from lmforge.align.ppo import plan_ppo, run_ppo

    config = PPOConfig(**(settings or {}))
    job = plan_ppo(
        policy=policy, reward=reward, prompts=prompts, out=out, settings=config,
        eval_prompts=eval_prompts, overwrite=overwrite,
    )  # fmt: skip
    return _report(job, run_ppo, progress, as_json)


def grpo(
    *,
    policy: Annotated[Path, RUN_DIR],
    reward: Annotated[str, REWARD],
    prompts: Annotated[str, PROMPTS],
    out: Annotated[Path, OUT_DIR],
    eval_prompts: Annotated[str | None, PROMPTS] = None,
    settings: Annotated[dict[str, Any] | None, GRPOConfig] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Train a causal run with GRPO: groups of sampled responses per prompt, no value model.

    Each iteration samples --group-size responses to each of --batch-size prompts, scores them
    with --reward and gives every token of a response the advantage (reward - its group's mean) /
    its group's std; --epochs passes of the clipped objective plus beta times the k3 estimate of
    the KL to the frozen starting policy. Made for verifiable rewards: builtin:arith checks the sum.
    Logs and output as `lmforge align ppo` (a plain causal run; reward and KL curves in loss.png).

    Args:
        policy: the causal (GPT-family) run to train; also the frozen reference.
        reward: the reward: module:function, path/to/file.py:function, builtin:arith or the run
            directory of a reward model.
        prompts: the training prompts: a .jsonl file ({"prompt": ...} or {"messages": [...]} per
            line), or the prompts of builtin:arith or builtin:stdlib-instruct.
        out: the run directory to create.
        eval_prompts: prompts for the before/after evaluation (default: the built-in source's val
            split, or the --prompts file itself).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge align grpo --policy my_sft_run --reward builtin:arith --prompts builtin:arith --out runs/grpo --iterations 50 --group-size 8
    """
    from lmforge.align.grpo import plan_grpo, run_grpo

    config = GRPOConfig(**(settings or {}))
    job = plan_grpo(
        policy=policy, reward=reward, prompts=prompts, out=out, settings=config,
        eval_prompts=eval_prompts, overwrite=overwrite,
    )  # fmt: skip
    return _report(job, run_grpo, progress, as_json)


def _report(job, run, progress: bool, as_json: bool) -> dict:
    if not as_json:
        print(*job.describe(), sep="\n")
    summary = run(job, progress=progress)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
    if summary["interrupted"]:
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return summary


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict) -> None:
    method = summary["method"].upper()
    if summary["interrupted"]:
        print(f"interrupted after {summary['iterations']} iterations; the policy so far is saved")
    print(
        f"{method}: {summary['iterations']} iterations in {summary['elapsed_s']:.1f} s "
        f"({summary['s_per_iteration']:.2f} s/iteration); training reward {_number(summary['reward_first'])} "
        f"-> {_number(summary['reward_last'])}, KL to reference {_number(summary['kl_last'])} nats/response"
    )
    if summary["reward_before"] is not None:
        print(
            f"evaluation ({summary['eval_prompts']} prompts, one sample each): reward {_number(summary['reward_before'])} -> "
            f"{_number(summary['reward_after'])}, KL {_number(summary['kl_after'])}, response length "
            f"{_number(summary['response_length_before'], 1)} -> {_number(summary['response_length_after'], 1)}"
        )
    for sample in summary["samples"]:
        print(
            f"  {sample['prompt'][:60]!r}\n    before: {sample['before'][:70]!r}\n    after:  {str(sample['after'])[:70]!r}"
        )
    print(f"run directory: {summary['run']}   curves: {summary['plot']}")
    print(f'next: lmforge generate --checkpoint {summary["run"]} --prompt "..."')

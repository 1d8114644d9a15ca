"""The outer loop PPO and GRPO share: iterations over prompt batches with a progress bar, one
metrics.jsonl record per iteration, Ctrl-C that stops after saving, the reward/KL plot and the summary.

    summary = run_iterations(job, update)   # update(iteration, prompt_indices) -> metrics record

A failure before the weights are first saved removes the half-made run directory (``Run
.removed_unless_saved``); Ctrl-C stops the loop, saves the policy as it is and marks the summary
``interrupted``, which the command turns into exit status 130.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from lmforge.align.rl_job import RLJob, evaluate_policy, prompt_order, start_run

Update = Callable[[int, list[int]], dict[str, Any]]


def run_iterations(job: RLJob, update: Update, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job.policy`` in place, write the run directory, and return the summary."""
    run = start_run(job)
    with run.removed_unless_saved():
        return _loop(job, run, update, progress)


def _loop(job: RLJob, run, update: Update, progress: bool) -> dict[str, Any]:
    from lmforge.train.metrics import MetricsLog

    settings = job.settings
    before = evaluate_policy(job, job.policy)
    batches = prompt_order(
        len(job.prompts), min(settings.batch_size, len(job.prompts)), settings.iterations, settings.seed
    )
    bar = _bar(settings.iterations, job.kind) if progress and sys.stderr.isatty() else None
    metrics = MetricsLog(run.metrics_path)
    records: list[dict[str, Any]] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for iteration, indices in enumerate(batches, 1):
            record = {"step": iteration, **update(iteration, indices)}
            record["elapsed_s"] = round(time.perf_counter() - start, 3)
            metrics.write(record)
            records.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    run.save_weights(job.policy)
    after = evaluate_policy(job, job.policy) if not interrupted else {}
    plot_rewards(
        run.metrics_path, run.plot_path, f"{run.path.name}: {job.kind.upper()} on {job.task['reward']}"
    )
    return summarize(job, run, records, before, after, elapsed, interrupted)


def _bar(total: int, kind: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=kind, unit="it", file=sys.stderr, dynamic_ncols=True)


def summarize(job: RLJob, run, records, before, after, elapsed: float, interrupted: bool) -> dict[str, Any]:
    """What ``lmforge align ppo|grpo`` prints (or gives as JSON)."""
    last = records[-1] if records else {}
    samples = []
    for i, prompt in enumerate(job.eval_prompts[: len(before.get("completions", []))]):
        samples.append(
            {
                "prompt": prompt.text,
                "before": before["completions"][i],
                "after": after["completions"][i] if after else None,
            }
        )
    return {
        "run": str(run.path),
        "method": job.kind,
        "family": job.family,
        "iterations": len(records),
        "elapsed_s": round(elapsed, 2),
        "s_per_iteration": round(elapsed / max(len(records), 1), 3),
        "reward_first": records[0]["reward"] if records else None,
        "reward_last": last.get("reward"),
        "kl_last": last.get("kl"),
        "reward_before": before.get("reward"),
        "reward_after": after.get("reward"),
        "kl_after": after.get("kl"),
        "response_length_before": before.get("response_length"),
        "response_length_after": after.get("response_length"),
        "eval_prompts": len(job.eval_prompts),
        "samples": samples,
        "parameters": job.policy.num_parameters(),
        "interrupted": interrupted,
        "plot": str(run.plot_path),
    }


def plot_rewards(metrics_path, out_path, title: str = "") -> None:
    """Mean reward and KL to the reference per iteration, one panel each."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.fileio import atomic_write_bytes
    from lmforge.fonts import readable
    from lmforge.train.metrics import read_metrics

    records = read_metrics(metrics_path)
    (title,), families = readable([title])
    with matplotlib.rc_context({"font.family": families}):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), dpi=110, sharex=True)
        steps = [r["step"] for r in records]
        top.plot(steps, [r["reward"] for r in records], color="#4C72B0", marker="o", markersize=2)
        top.set_ylabel("mean reward")
        bottom.plot(steps, [r["kl"] for r in records], color="#DD8452", marker="o", markersize=2)
        bottom.set_ylabel("KL to reference (nats / response)")
        bottom.set_xlabel("iteration")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        if title:
            top.set_title(title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())

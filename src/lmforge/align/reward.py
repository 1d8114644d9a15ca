"""Train a reward model on preference pairs (the second step of RLHF, Ouyang et al. 2022).

    job = plan_reward(checkpoint="runs/sft", train="builtin:stdlib-prefs", val=None,
                      out="runs/rm", settings=RewardConfig(epochs=1))     # checks, encodes, builds
    print(*job.describe(), sep="\\n")
    summary = run_reward(job)          # summary["accuracy"], summary["margin"]

The model is the checkpoint's Transformer with a scalar head (align/reward_model.py); the loss is
Bradley-Terry, -log sigmoid(r_chosen - r_rejected), summed over the pairs of a batch by the
objective and divided by their count by the trainer. Each evaluation logs the held-out loss,
pairwise accuracy (the share of pairs whose chosen response scores higher) and mean margin
(r_chosen - r_rejected) to metrics.jsonl as val_loss, val_accuracy and val_margin; loss.png draws
the losses above the accuracy. The weights with the lowest held-out loss are kept (best/) and
scored once more at the end; `lmforge reward` and PPO's --reward read the run.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lmforge.align.preference_settings import RewardConfig
from lmforge.align.preferences import PairBatches, PairData, is_builtin, load_pairs
from lmforge.align.reward_model import (
    REWARD_KIND,
    pair_rewards,
    preference_metrics,
    reward_loss,
    reward_model_from,
)


@dataclass
class RewardJob:
    """One reward-model training, checked and built; nothing written yet."""

    run_path: Path
    overwrite: bool
    family: str
    net: nn.Module  # the reward model, LoRA adapters applied when asked
    config: RewardConfig  # max_steps resolved from the epochs
    data: PairData
    task: dict[str, Any]  # config.json's "task"
    lora_rank: int | None = None

    train_pairs = property(lambda self: self.data.train.pairs)
    val_pairs = property(lambda self: self.data.val.pairs)
    tokenizer = property(lambda self: self.data.tokenizer)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def describe(self) -> list[str]:
        adapters = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        return [
            f"reward model: {self.family} from {self.task['base'] or 'scratch'} with a scalar head on the last "
            f"token, {self.net.num_parameters():,} parameters ({self.trainable:,} trained{adapters})",
            *self.data.describe(self.net.config.block_size),
            "loss: Bradley-Terry, -log sigmoid(r_chosen - r_rejected)",
        ]


def plan_reward(
    *,
    checkpoint: str | Path,
    train: str,
    val: str | None,
    out: str | Path,
    settings: RewardConfig,
    from_scratch: bool = False,
    overwrite: bool = False,
    lora=None,
) -> RewardJob:
    """Check the inputs, read and encode the pairs and build the reward model; writes nothing."""
    from lmforge.fileio import check_output_dir
    from lmforge.run import RUN_OUTPUT, Run

    inputs = [checkpoint, *(Path(s) for s in (train, val) if s is not None and not is_builtin(s))]
    check_output_dir(out, overwrite, inputs=inputs, kind=RUN_OUTPUT)
    source = Run.open(checkpoint)
    saved = source.read_config()
    net = reward_model_from(source, saved, from_scratch)
    data = load_pairs(source, train, val, int(saved["model"]["block_size"]))
    with_lora = lora is not None and lora.enabled
    if with_lora:
        net = lora.apply(net)
    config = dataclasses.replace(settings, max_steps=settings.steps_for(len(data.train.pairs)))
    config.validate()
    task = {
        "kind": REWARD_KIND,
        "base": None if from_scratch else str(checkpoint),
        "train_data": str(train),
        "val_data": data.val_source,
    }
    return RewardJob(
        Path(out), overwrite, saved["family"], net, config, data, task, lora.lora_rank if with_lora else None
    )


def run_reward(job: RewardJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into a new run directory; a failure before the first checkpoint leaves none."""
    from lmforge.run import Run

    run = Run.create(job.run_path, overwrite=job.overwrite)
    with run.removed_unless_saved():
        return _train(job, run, progress)


def _train(job: RewardJob, run, progress: bool) -> dict[str, Any]:
    from lmforge.align.plots import plot_preference_run
    from lmforge.finetune.batches import padding_id
    from lmforge.finetune.classify import plain_weights
    from lmforge.train.metrics import MetricsLog
    from lmforge.train.optim import describe_optimizer
    from lmforge.train.trainer import Trainer
    from lmforge.train.transforms import ready_for_training

    net, config = job.net, job.config
    pad = padding_id(job.tokenizer)
    run.save_tokenizer(job.tokenizer)
    run.write_config(
        {
            "family": job.family,
            "model": net.config.to_dict(),
            "train": dataclasses.asdict(config),
            "task": job.task,
        }
    )
    train_model, transforms, device = ready_for_training(net, config)
    eval_batch = max(2 * config.batch_size, 32)
    periodic = job.val_pairs
    if config.eval_batches is not None:
        from lmforge.data.batching import evenly_spread

        periodic = evenly_spread(periodic, config.eval_batches * eval_batch)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return preference_metrics(*pair_rewards(model, periodic, pad, eval_batch))

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        # LoRA adapters are merged into a copy; without them (no peft import) the model itself
        run.save_weights(plain_weights(net) if job.lora_rank else net, "best" if tag == "best" else "last")
        if state is not None:
            run.save_train_state(state)

    metrics = MetricsLog(run.metrics_path)
    trainer = Trainer(
        train_model,
        config,
        PairBatches(job.train_pairs, config.batch_size, pad, config.seed, context=net.context_limit),
        evaluate=evaluate,
        save=save,
        log=metrics.write,
        progress=progress and sys.stderr.isatty(),
        objective=reward_loss,
    )
    try:
        result = trainer.fit()
    finally:
        metrics.close()
    best = run.load_model("best").to(device)
    final = preference_metrics(*pair_rewards(best, job.val_pairs, pad, eval_batch))
    plot_preference_run(
        run.metrics_path,
        run.plot_path,
        title=f"{run.path.name}: reward model, accuracy {final['accuracy']:.1%}",
    )
    return {
        "run": str(run.path),
        "family": job.family,
        "steps": result.steps,
        "pairs_seen": result.steps * config.batch_size * config.grad_accum,
        "elapsed_s": round(result.elapsed_s, 2),
        "s_per_step": round(result.elapsed_s / max(result.steps, 1), 4),
        "train_loss": result.last_train_loss,
        "val_loss": final["loss"],
        "accuracy": final["accuracy"],
        "margin": final["margin"],
        "val_pairs": len(job.val_pairs),
        "parameters": best.num_parameters(),
        "trainable_parameters": job.trainable,
        "responses_cut": job.data.train.cut + job.data.val.cut,
        "pairs_left_out": job.data.train.dropped + job.data.val.dropped,
        "interrupted": result.interrupted,
        "transforms": [t.name for t in transforms],
        "optimizer": describe_optimizer(trainer.optimizer),
        "plot": str(run.plot_path),
    }

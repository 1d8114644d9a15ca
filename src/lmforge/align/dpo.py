"""Direct preference optimisation (Rafailov et al. 2023): train a causal run on preference pairs,
with no reward model and no sampling.

    job = plan_dpo(checkpoint="runs/sft", train="builtin:stdlib-prefs", val=None, out="runs/dpo",
                   settings=DPOConfig(epochs=1, beta=0.1))
    print(*job.describe(), sep="\\n")
    summary = run_dpo(job)             # summary["accuracy"], summary["margin"]

The policy starts as the checkpoint; the reference is a frozen copy of it. The reference never
changes, so its log-probability of every response, training and validation pairs alike, is
computed once before the first step (one no-grad pass over the pairs), cached as a tensor per pair
and put in each batch beside the ids; the copy is then dropped, so training holds one model, as
TRL's ``precompute_ref_log_probs``. A response's log-probability is the sum over its tokens and
its end-of-text (``response_mask``, align/preferences.py) of log pi(token | everything before).

The loss is DPO's sigmoid loss with ``--beta`` (align/losses.py); dropout is off (TRL's default),
so at step 0 the policy scores exactly as the reference and every margin is 0. Each step logs
train_accuracy, train_margin, train_chosen_reward and train_rejected_reward (the implicit rewards
beta * (log pi - log ref), averaged over the step's pairs) beside train_loss; each evaluation the
same on the held-out pairs as val_*. The run saved is a plain causal run: generate, chat, score and
serve read it like any other. best/ has the highest held-out preference accuracy (the lower loss
among equals), not the lowest loss: the loss starts at log 2 and can rise above it while accuracy
climbs (the pairs still ranked wrong grow confidently wrong), so the lowest held-out loss is often
step 0's, the unchanged reference.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.align.losses import dpo_loss
from lmforge.align.preference_settings import DPOConfig
from lmforge.align.preferences import (
    EncodedPair,
    PairBatches,
    PairData,
    check_causal_family,
    collate_pairs,
    in_batches,
    is_builtin,
    load_pairs,
)
from lmforge.errors import CheckpointError

DPO_KIND = "dpo"
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each row's response log-probability (N,): its response tokens' log-probs summed."""
    from lmforge.align.logprobs import masked_sum, sequence_token_logprobs

    per_token = sequence_token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    return masked_sum(per_token, batch["response_mask"])


@torch.no_grad()
def reference_logps(
    model: nn.Module, pairs: list[EncodedPair], pad_id: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen (N,), rejected (N,)) response log-probabilities of ``model`` over ``pairs``, on the CPU."""
    device = next(model.parameters()).device
    context = getattr(model, "context_limit", None)
    chosen, rejected = [], []
    for group in in_batches(pairs, batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(group, pad_id, context).items()}
        c, r = sequence_logps(model, batch).chunk(2)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    return torch.cat(chosen), torch.cat(rejected)


class DPOObjective:
    """DPO's loss summed over a batch's pairs (the trainer divides by the pair count), keeping the
    implicit rewards of the pairs seen since ``take_stats`` for the per-step metrics."""

    def __init__(self, beta: float, label_smoothing: float = 0.0) -> None:
        self.beta, self.label_smoothing = beta, label_smoothing
        self._chosen: list[torch.Tensor] = []
        self._rejected: list[torch.Tensor] = []

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        chosen, rejected = sequence_logps(model, batch).chunk(2)  # chosen rows first
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen,
            rejected,
            batch["ref_chosen_logps"],
            batch["ref_rejected_logps"],
            self.beta,
            self.label_smoothing,
        )
        self._chosen.append(chosen_rewards.cpu())
        self._rejected.append(rejected_rewards.cpu())
        return losses.sum(), losses.numel()

    def take_stats(self, prefix: str) -> dict[str, float]:
        """Accuracy, margin and rewards of the pairs since the last call, then forget them."""
        if not self._chosen:
            return {}
        chosen, rejected = torch.cat(self._chosen), torch.cat(self._rejected)
        self._chosen, self._rejected = [], []
        return {f"{prefix}_{k}": round(v, 6) for k, v in reward_stats(chosen, rejected).items()}


def reward_stats(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """What DPO logs of implicit rewards (TRL's rewards/accuracies, margins, chosen, rejected)."""
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "chosen_reward": chosen.mean().item(),
        "rejected_reward": rejected.mean().item(),
    }


@dataclass
class DPOJob:
    """One DPO training, checked and built; nothing written or computed yet."""

    run_path: Path
    overwrite: bool
    family: str
    net: nn.Module  # the policy, LoRA adapters applied when asked
    reference: nn.Module | None  # the frozen copy; dropped once its log-probs are cached
    config: DPOConfig
    data: PairData
    task: dict[str, Any]
    lora_rank: int | None = None
    reference_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    train_pairs = property(lambda self: self.data.train.pairs)
    val_pairs = property(lambda self: self.data.val.pairs)
    tokenizer = property(lambda self: self.data.tokenizer)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def describe(self) -> list[str]:
        adapters = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        lines = [
            f"policy: {self.family} from {self.task['base']}, {self.net.num_parameters():,} parameters "
            f"({self.trainable:,} trained{adapters}); sigmoid loss, beta {self.config.beta}"
            + (f", label smoothing {self.config.label_smoothing}" if self.config.label_smoothing else ""),
            *self.data.describe(self.net.config.block_size),
            f"reference: a frozen copy of the checkpoint, its log-probabilities of all "
            f"{len(self.train_pairs) + len(self.val_pairs):,} pairs computed once before training and cached",
        ]
        return lines


def policy_from(run, saved: dict[str, Any]) -> nn.Module:
    """The checkpoint's language model without dropout (and without any classifier head)."""
    from lmforge.models.registry import build_model

    family = saved["family"]
    check_causal_family(family, "DPO")
    kind = (saved.get("task") or {}).get("kind")
    if kind in ("reward", "classify"):
        raise CheckpointError(
            f"--checkpoint {run.path} is a {'reward model' if kind == 'reward' else 'classifier'}, not a "
            "language model; DPO trains the language model itself: give the run it was trained from"
        )
    model = build_model(family, {**saved["model"], "dropout": 0.0, "num_labels": 0})
    run.load_weights(model, "best" if run.weights_path("best").exists() else "last")
    return model


def plan_dpo(
    *,
    checkpoint: str | Path,
    train: str,
    val: str | None,
    out: str | Path,
    settings: DPOConfig,
    overwrite: bool = False,
    lora=None,
) -> DPOJob:
    """Check the inputs, read and encode the pairs, build the policy and its reference; writes nothing."""
    from lmforge.fileio import check_output_dir
    from lmforge.run import RUN_OUTPUT, Run

    inputs = [checkpoint, *(Path(s) for s in (train, val) if s is not None and not is_builtin(s))]
    check_output_dir(out, overwrite, inputs=inputs, kind=RUN_OUTPUT)
    source = Run.open(checkpoint)
    saved = source.read_config()
    net = policy_from(source, saved)
    data = load_pairs(source, train, val, int(saved["model"]["block_size"]))
    reference = copy.deepcopy(net).eval().requires_grad_(False)
    with_lora = lora is not None and lora.enabled
    if with_lora:
        net = lora.apply(net)
    config = dataclasses.replace(settings, max_steps=settings.steps_for(len(data.train.pairs)))
    config.validate()
    task = {
        "kind": DPO_KIND,
        "base": str(checkpoint),
        "train_data": str(train),
        "val_data": data.val_source,
        "beta": config.beta,
        "label_smoothing": config.label_smoothing,
    }
    return DPOJob(
        Path(out), overwrite, saved["family"], net, reference, config, data, task,
        lora.lora_rank if with_lora else None,
    )  # fmt: skip


def cache_reference(job: DPOJob, device: torch.device, pad_id: int, batch_size: int) -> None:
    """The reference's log-probabilities of every pair, once; then the reference is dropped."""
    if job.reference is None:
        return
    reference = job.reference.to(device)
    job.reference_cache = {
        "train": reference_logps(reference, job.train_pairs, pad_id, batch_size),
        "val": reference_logps(reference, job.val_pairs, pad_id, batch_size),
    }
    job.reference = None


def rank_by_accuracy(figures: dict[str, float]) -> tuple[float, float]:
    """best/'s key (lower wins): held-out accuracy first, then the held-out loss."""
    return (-figures["accuracy"], figures["loss"])


def run_dpo(job: DPOJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into a new run directory; a failure before the first checkpoint leaves none."""
    from lmforge.run import Run

    run = Run.create(job.run_path, overwrite=job.overwrite)
    with run.removed_unless_saved():
        return _train(job, run, progress)


def _train(job: DPOJob, run, progress: bool) -> dict[str, Any]:
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
    cache_reference(job, device, pad, eval_batch)
    train_ref, val_ref = job.reference_cache["train"], job.reference_cache["val"]
    objective = DPOObjective(config.beta, config.label_smoothing)
    periodic = list(range(len(job.val_pairs)))
    if config.eval_batches is not None:
        from lmforge.data.batching import evenly_spread

        periodic = evenly_spread(periodic, config.eval_batches * eval_batch)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return evaluate_pairs(model, objective, [job.val_pairs[i] for i in periodic],
                              (val_ref[0][periodic], val_ref[1][periodic]), pad, eval_batch)  # fmt: skip

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        # LoRA adapters are merged into a copy; without them (no peft import) the model itself
        run.save_weights(plain_weights(net) if job.lora_rank else net, "best" if tag == "best" else "last")
        if state is not None:
            run.save_train_state(state)

    metrics = MetricsLog(run.metrics_path)
    trainer = Trainer(
        train_model,
        config,
        PairBatches(
            job.train_pairs,
            config.batch_size,
            pad,
            config.seed,
            dict(zip(REF_KEYS, train_ref)),
            net.context_limit,
        ),
        evaluate=evaluate,
        save=save,
        log=metrics.write,
        on_step=lambda step, loss: metrics.write({"step": step, **objective.take_stats("train")}),
        progress=progress and sys.stderr.isatty(),
        objective=objective,
        best_by=rank_by_accuracy,
    )
    try:
        result = trainer.fit()
    finally:
        metrics.close()
    best = run.load_model("best").to(device)
    final = evaluate_pairs(best, objective, job.val_pairs, val_ref, pad, eval_batch)
    plot_preference_run(
        run.metrics_path,
        run.plot_path,
        title=f"{run.path.name}: DPO, beta {config.beta}, accuracy {final['accuracy']:.1%}",
    )
    return {
        "run": str(run.path),
        "family": job.family,
        "steps": result.steps,
        "pairs_seen": result.steps * config.batch_size * config.grad_accum,
        "elapsed_s": round(result.elapsed_s, 2),
        "s_per_step": round(result.elapsed_s / max(result.steps, 1), 4),
        "beta": config.beta,
        "train_loss": result.last_train_loss,
        "val_loss": final["loss"],
        "accuracy": final["accuracy"],
        "margin": final["margin"],
        "chosen_reward": final["chosen_reward"],
        "rejected_reward": final["rejected_reward"],
        "val_pairs": len(job.val_pairs),
        "reference_pairs_cached": len(job.train_pairs) + len(job.val_pairs),
        "parameters": best.num_parameters(),
        "trainable_parameters": job.trainable,
        "responses_cut": job.data.train.cut + job.data.val.cut,
        "pairs_left_out": job.data.train.dropped + job.data.val.dropped,
        "interrupted": result.interrupted,
        "transforms": [t.name for t in transforms],
        "optimizer": describe_optimizer(trainer.optimizer),
        "plot": str(run.plot_path),
    }


@torch.no_grad()
def evaluate_pairs(
    model: nn.Module,
    objective: DPOObjective,
    pairs: list[EncodedPair],
    reference: tuple[torch.Tensor, torch.Tensor],
    pad_id: int,
    batch_size: int,
) -> dict[str, float]:
    """Held-out DPO loss (mean), accuracy, margin and rewards of ``model`` against cached reference log-probs."""
    policy_chosen, policy_rejected = reference_logps(model, pairs, pad_id, batch_size)
    losses, chosen, rejected = dpo_loss(
        policy_chosen, policy_rejected, reference[0], reference[1], objective.beta, objective.label_smoothing
    )
    return {"loss": losses.mean().item(), **reward_stats(chosen, rejected)}

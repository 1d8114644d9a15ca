"""The fine-tuning flags, declared once (as ``TrainConfig`` declares pretraining's): torch-free, so
``lmforge finetune classify --help`` answers at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmforge.errors import UserInputError
from lmforge.train.config import TrainConfig, check_bounds, setting


@dataclass
class ClassifyConfig(TrainConfig):
    """training (budget, batches, optimizer and schedule, evaluation, device)"""

    not_flags = ("parallel", "dist_timeout")  # fine-tuning runs in one process

    batch_size: int = setting(16, "examples per micro-batch", positive=True)
    lr: float = setting(
        1e-3,
        "peak learning rate (for the small models trained here; BERT-base is usually fine-tuned at 2e-5 to 5e-5)",
        positive=True,
    )
    warmup_steps: int = setting(10, "optimizer steps of linear warm-up", non_negative=True)
    weight_decay: float = setting(0.01, "AdamW weight decay, applied to matrices only", non_negative=True)
    eval_every: int = setting(50, "evaluate on the validation set every this many steps", positive=True)
    eval_batches: int | None = setting(
        None,
        "validation batches per periodic evaluation, spread evenly over the set (default: all of it; "
        "the final evaluation always reads all of it)",
        positive=True,
    )
    epochs: float | None = setting(
        None,
        "passes over the training examples (with --max-steps or --max-time: whichever ends first)",
        positive=True,
    )

    def steps_for(self, examples: int) -> int | None:
        """The optimizer steps of ``epochs`` passes over ``examples``, capped by --max-steps."""
        if self.epochs is None:
            return self.max_steps
        per_epoch = math.ceil(examples / (self.batch_size * self.grad_accum))
        steps = max(1, math.ceil(self.epochs * per_epoch))
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def validate(self) -> None:
        """Every bound, and a budget (--epochs counts as one)."""
        check_bounds(self)
        if self.max_steps is None and self.max_time is None and self.epochs is None:
            raise UserInputError("give a budget: --epochs N, --max-steps N or --max-time SECONDS")


@dataclass
class SFTConfig(ClassifyConfig):
    """training (budget, batches, optimizer and schedule, evaluation, device)"""

    batch_size: int = setting(
        8,
        "rows per micro-batch: blocks of packed examples, or single examples with --no-packing",
        positive=True,
    )
    lr: float = setting(
        5e-4,
        "peak learning rate (for the small models trained here; larger pretrained models are usually "
        "fine-tuned at 1e-5 to 1e-4, and LoRA adapters at about 1e-4 to 1e-3)",
        positive=True,
    )
    eval_every: int = setting(50, "measure the validation loss every this many steps", positive=True)

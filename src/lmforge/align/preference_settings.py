"""The flags of ``lmforge align reward`` and ``lmforge align dpo``, declared once: torch-free, so
their ``--help`` answers at once. Both train on preference pairs with the fine-tuning budget
(``--epochs``, ``--max-steps``, ``--max-time``) of ``finetune classify``."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.finetune.settings import ClassifyConfig
from lmforge.train.config import setting


@dataclass
class RewardConfig(ClassifyConfig):
    """training (budget, batches, optimizer and schedule, evaluation, device)"""

    batch_size: int = setting(16, "preference pairs per micro-batch (twice as many rows)", positive=True)
    lr: float = setting(3e-4, "peak learning rate", positive=True)


@dataclass
class DPOConfig(ClassifyConfig):
    """training (budget, batches, optimizer and schedule, evaluation, device)"""

    batch_size: int = setting(16, "preference pairs per micro-batch (twice as many rows)", positive=True)
    lr: float = setting(
        1e-4,
        "peak learning rate (small: DPO moves the policy away from the reference it starts as)",
        positive=True,
    )
    weight_decay: float = setting(0.0, "AdamW weight decay, applied to matrices only", non_negative=True)
    beta: float = setting(
        0.1,
        "DPO's beta: the strength of the implicit KL penalty to the reference (larger stays closer)",
        positive=True,
    )
    label_smoothing: float = setting(
        0.0,
        "the assumed fraction of flipped preference labels (conservative DPO; 0: none)",
        non_negative=True,
        at_most=0.49,
    )

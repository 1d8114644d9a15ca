"""``--schedule cosine|wsd|linear`` against learning rates computed by hand at chosen steps and
budget fractions, and the trainer following the chosen one."""

from __future__ import annotations

import pytest
import torch

from lmforge.train.optim import CosineSchedule, LinearSchedule, WSDSchedule, make_schedule
from lmforge.train.trainer import TrainConfig, Trainer


def test_wsd_warms_up_holds_then_decays_linearly_over_the_last_fraction():
    schedule = WSDSchedule(max_lr=1.0, min_lr=0.1, warmup_steps=4, decay_fraction=0.2)
    assert [schedule.lr(s, 0.0) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule.lr(4, 0.0) == 1.0
    assert schedule.lr(50, 0.5) == 1.0  # stable
    assert schedule.lr(50, 0.8) == 1.0  # the decay starts at 1 - 0.2
    assert schedule.lr(50, 0.9) == pytest.approx(0.55)  # halfway down: (1.0 + 0.1) / 2
    assert schedule.lr(50, 0.95) == pytest.approx(0.325)  # three quarters: 1.0 - 0.75 * 0.9
    assert schedule.lr(50, 1.0) == pytest.approx(0.1)
    assert schedule.lr(50, 1.4) == pytest.approx(0.1)  # past a --max-time budget: stays at min_lr


def test_wsd_without_decay_fraction_stays_at_max_lr():
    schedule = WSDSchedule(max_lr=2.0, min_lr=0.0, warmup_steps=0, decay_fraction=0.0)
    assert [schedule.lr(9, p) for p in (0.0, 0.5, 1.0)] == [2.0, 2.0, 2.0]


def test_linear_decays_in_a_straight_line_over_the_budget():
    schedule = LinearSchedule(max_lr=1.0, min_lr=0.2, warmup_steps=1)
    assert schedule.lr(0, 0.0) == pytest.approx(0.5)  # warm-up: (0 + 1) / (1 + 1)
    assert schedule.lr(1, 0.25) == pytest.approx(0.8)  # 1.0 - 0.25 * 0.8
    assert schedule.lr(1, 0.5) == pytest.approx(0.6)
    assert schedule.lr(1, 1.0) == pytest.approx(0.2)


def test_factory_builds_each_kind_and_cosine_is_unchanged():
    assert type(make_schedule("cosine", 1.0, 0.1, 4)) is CosineSchedule
    assert make_schedule("wsd", 1.0, 0.1, 4, 0.3) == WSDSchedule(1.0, 0.1, 4, 0.3)
    assert make_schedule("linear", 1.0, 0.1, 4) == LinearSchedule(1.0, 0.1, 4)
    assert make_schedule("cosine", 1.0, 0.1, 4).lr(10, 0.5) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="cosine, wsd or linear"):
        make_schedule("step", 1.0, 0.1, 4)


class Batches:
    def next_batch(self):
        ids = torch.arange(8).repeat(2, 1)
        return {"input_ids": ids, "labels": ids}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_trainer_follows_the_chosen_schedule_by_step_budget():
    """max_steps 10, no warm-up, wsd with the last half decaying: steps 0-5 at the peak, then
    progress 0.6, 0.7, 0.8, 0.9 -> 0.8, 0.6, 0.4, 0.2 of the way down the line to min_lr."""
    embedding = torch.nn.Embedding(8, 4)
    config = TrainConfig(
        max_steps=10, lr=1.0, min_lr=0.0, warmup_steps=0, schedule="wsd", decay_fraction=0.5,
        device="cpu", precision="fp32", eval_every=100,
    )  # fmt: skip
    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = embedding

        def forward(self, input_ids, labels, reduction="sum", **_):
            seen.append(trainer.optimizer.param_groups[0]["lr"])
            loss = self.embedding(input_ids).sum() * 0.0
            return type("Out", (), {"loss": loss})()

    trainer = Trainer(Model(), config, Batches(), progress=False)
    trainer.fit()
    assert seen == pytest.approx([1.0] * 6 + [0.8, 0.6, 0.4, 0.2])

"""The Bradley-Terry and DPO losses against TRL's own code (trl 1.16), called on the same rewards
and log-probabilities: ``RewardTrainer.compute_loss`` and ``DPOTrainer._compute_loss`` (loss_type
"sigmoid", reference log-probs precomputed) run unbound on a stub trainer whose model hands back
the chosen numbers, so the test exercises TRL's formulas, not a copy of them."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lmforge.align.losses import bradley_terry_loss, dpo_loss

trl = pytest.importorskip("trl")


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(tensor):
        return tensor

    gather_for_metrics = gather


def _stub_trainer(model, **fields) -> SimpleNamespace:
    return SimpleNamespace(
        model=model,
        accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        **fields,
    )


class _RewardModel(torch.nn.Module):
    """Hands back fixed rewards as a sequence classifier's logits (2B, 1): chosen rows, then rejected."""

    def __init__(self, rewards: torch.Tensor) -> None:
        super().__init__()
        self.rewards = rewards

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.rewards[:, None])


def trl_reward_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[float, dict]:
    from trl.trainer.reward_trainer import RewardTrainer

    model = _RewardModel(torch.cat([chosen, rejected]))
    stub = _stub_trainer(model, args=SimpleNamespace(center_rewards_coefficient=None))
    inputs = {"input_ids": torch.zeros(2 * len(chosen), 3, dtype=torch.long),
              "attention_mask": torch.ones(2 * len(chosen), 3, dtype=torch.long)}  # fmt: skip
    loss = RewardTrainer.compute_loss(stub, model, inputs)
    return loss.item(), {k: v[-1] for k, v in stub._metrics["train"].items()}


class _PolicyModel(torch.nn.Module):
    """A causal LM whose every row is [prompt token, response token] and whose log-prob of the
    response token is a given number: the sequence log-probabilities TRL sums are exactly those."""

    def __init__(self, logps: torch.Tensor) -> None:
        super().__init__()
        self.logps = logps

    def forward(self, input_ids, attention_mask=None, labels=None, use_cache=False, fused_lm_head=True):
        rows = input_ids.shape[0]
        zeros = torch.zeros(rows, 1)
        return SimpleNamespace(
            log_probs=self.logps[:, None],
            entropy=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros(rows, 1, dtype=torch.bool),
        )


def trl_dpo_loss(pc, pr, rc, rr, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    from trl.trainer.dpo_trainer import DPOTrainer

    model = _PolicyModel(torch.cat([pc, pr]))
    stub = _stub_trainer(
        model,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        args=SimpleNamespace(),
    )
    rows = 2 * len(pc)
    inputs = {
        "input_ids": torch.ones(rows, 2, dtype=torch.long),
        "attention_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * rows),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    return loss.item(), {k: v[-1] for k, v in stub._metrics["train"].items()}


def test_bradley_terry_hand_value():
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))), abs=1e-7)  # 0.2014


def test_bradley_terry_equals_trl_reward_trainer_loss():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(8, generator=generator) * 3, torch.randn(8, generator=generator) * 3
    expected, metrics = trl_reward_loss(chosen, rejected)
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-6)
    assert bradley_terry_loss(chosen, rejected, reduction="sum").item() == pytest.approx(
        8 * expected, abs=1e-5
    )
    from lmforge.align.reward_model import preference_metrics

    ours = preference_metrics(chosen, rejected)
    assert ours["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert ours["margin"] == pytest.approx(metrics["margin"], abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_and_implicit_rewards_equal_trl_sigmoid(beta):
    generator = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-20 * torch.rand(6, generator=generator) for _ in range(4))
    expected, metrics = trl_dpo_loss(pc, pr, rc, rr, beta)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta)
    assert losses.mean().item() == pytest.approx(expected, abs=1e-6)
    from lmforge.align.dpo import reward_stats

    ours = reward_stats(chosen, rejected)
    for name, theirs in [("chosen_reward", "rewards/chosen"), ("rejected_reward", "rewards/rejected"),
                         ("margin", "rewards/margins"), ("accuracy", "rewards/accuracies")]:  # fmt: skip
        assert ours[name] == pytest.approx(metrics[theirs], abs=1e-6), name


def test_dpo_label_smoothing_equals_trl_conservative_form():
    """TRL 1.16's "sigmoid" has no smoothing; its "aot" loss on one pair (where its sort over the
    batch changes nothing) is the conservative-DPO form (1 - eps) L(delta) + eps L(-delta)."""
    generator = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (-10 * torch.rand(4, generator=generator) for _ in range(4))
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=0.2)
    for i in range(4):
        one = [t[i : i + 1] for t in (pc, pr, rc, rr)]
        expected, _ = trl_dpo_loss(*one, beta=0.3, loss_type="aot", label_smoothing=0.2)
        assert losses[i].item() == pytest.approx(expected, abs=1e-6)


def test_dpo_at_the_reference_is_log_2_with_zero_rewards():
    logps = torch.tensor([-3.0, -7.0])
    losses, chosen, rejected = dpo_loss(logps, logps + 1, logps, logps + 1, beta=0.1)
    assert torch.allclose(losses, torch.full((2,), math.log(2)))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0

"""GAE against a hand-computed example, whitening's moments, and the clipped losses by hand."""

from __future__ import annotations

import pytest
import torch

from lmforge.align.gae import generalised_advantages, whiten
from lmforge.align.grpo import group_advantages
from lmforge.align.ppo_losses import clipped_policy_loss, clipped_value_loss


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=1e-5)


def test_gae_equals_the_hand_computed_example():
    # gamma 1, lambda 0.9, V = [0.5, 0.2, 0.1], r = [0, 0, 1], V after the last token = 0:
    # delta = [0 + 0.2 - 0.5, 0 + 0.1 - 0.2, 1 + 0 - 0.1] = [-0.3, -0.1, 0.9]
    # A_2 = 0.9; A_1 = -0.1 + 0.9 * 0.9 = 0.71; A_0 = -0.3 + 0.9 * 0.71 = 0.339
    # second row: 2 tokens then padding (whose values and rewards must not leak in), gamma 1:
    # V = [0.4, 0.3], r = [0.5, 2.0]: delta = [0.5 + 0.3 - 0.4, 2.0 - 0.3] = [0.4, 1.7]
    # A_1 = 1.7; A_0 = 0.4 + 0.9 * 1.7 = 1.93
    values = torch.tensor([[0.5, 0.2, 0.1], [0.4, 0.3, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = generalised_advantages(rewards, values, mask, gamma=1.0, lam=0.9)
    close(advantages, [[0.339, 0.71, 0.9], [1.93, 1.7, 0.0]])
    close(returns, [[0.839, 0.91, 1.0], [2.33, 2.0, 0.0]])


def test_gae_discount_by_hand():
    # gamma 0.5, lambda 1: A_t is the discounted return minus V_t; r = [1, 1], V = 0:
    # A_1 = 1, A_0 = 1 + 0.5 * 1 = 1.5
    advantages, _ = generalised_advantages(
        torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.5, lam=1.0
    )
    close(advantages, [[1.5, 1.0]])


def test_whitening_has_mean_zero_and_std_one_over_masked_entries():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(6, 10, generator=generator) * 3 + 5
    mask = (torch.rand(6, 10, generator=generator) > 0.3).long()
    white = whiten(values, mask)
    kept = white[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-4)
    assert (white[~mask.bool()] == 0).all()
    unshifted = whiten(values, mask, shift_mean=False)[mask.bool()]
    assert unshifted.mean().item() == pytest.approx(values[mask.bool()].mean().item(), rel=1e-5)


def test_clipped_policy_loss_by_hand_inside_and_outside_the_clip_range():
    # eps 0.2: A = 2, ratio 1.1 (inside) -> -2.2; A = 2, ratio 1.5 -> max(-3.0, -2.4) = -2.4 (clipped);
    # A = -2, ratio 0.5 -> max(1.0, 1.6) = 1.6 (clipped); A = -2, ratio 1.5 -> max(3.0, 2.4) = 3.0 (not);
    # A = 1, ratio 0.9 (inside) -> -0.9
    ratios = torch.tensor([[1.1, 1.5, 0.5, 1.5, 0.9]])
    advantages = torch.tensor([[2.0, 2.0, -2.0, -2.0, 1.0]])
    old = torch.zeros(1, 5)
    loss, per_token, clip_fraction = clipped_policy_loss(ratios.log(), old, advantages, torch.ones(1, 5), 0.2)
    close(per_token, [[-2.2, -2.4, 1.6, 3.0, -0.9]])
    assert loss.item() == pytest.approx(-0.9 / 5, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(2 / 5)


def test_clipped_policy_loss_gradient_stops_past_the_clip():
    logp = torch.tensor([[1.5, 1.1]]).log().requires_grad_()
    loss, _, _ = clipped_policy_loss(
        logp, torch.zeros(1, 2), torch.tensor([[2.0, 2.0]]), torch.ones(1, 2), 0.2
    )
    loss.backward()
    # d/dlogp of -A * ratio / 2 = -A * ratio / 2 inside; 0 for the clipped token
    close(logp.grad, [[0.0, -2.0 * 1.1 / 2]])


def test_sequence_reduction_averages_each_response_first():
    per_token_ratio = torch.ones(2, 3)
    advantages = torch.tensor([[1.0], [3.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    token, _, _ = clipped_policy_loss(per_token_ratio.log(), torch.zeros(2, 3), advantages, mask, 0.2)
    sequence, _, _ = clipped_policy_loss(
        per_token_ratio.log(), torch.zeros(2, 3), advantages, mask, 0.2, reduce="sequence"
    )
    assert token.item() == pytest.approx(-(1 + 1 + 1 + 3) / 4)
    assert sequence.item() == pytest.approx(-(1 + 3) / 2)


def test_clipped_value_loss_by_hand():
    # old V 1.0, clip 0.2, return 2.0: V 1.5 -> max((1.5-2)^2, (1.2-2)^2) = 0.64; V 0.9 -> (0.9-2)^2 = 1.21
    values = torch.tensor([[1.5, 0.9]])
    loss = clipped_value_loss(values, torch.ones(1, 2), torch.full((1, 2), 2.0), torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)


def test_group_advantages_by_hand():
    # group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> +-0.866; a flat group -> 0
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3]), group_size=4)
    half = 0.5 / (3**-0.5 + 1e-4)
    assert advantages.tolist() == pytest.approx([half, -half, -half, half, 0, 0, 0, 0], abs=1e-6)

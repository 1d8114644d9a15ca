"""The per-token KL estimators against the exact KL of two categorical distributions."""

from __future__ import annotations

import pytest
import torch

from lmforge.align.kl import KLController, kl_k1, kl_k3, masked_mean


def test_k3_is_never_negative_and_zero_for_identical_policies():
    generator = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 9, generator=generator) - 3
    logq = torch.randn(4, 9, generator=generator) - 3
    assert (kl_k3(logp, logq) >= 0).all()
    assert torch.equal(kl_k3(logp, logp), torch.zeros_like(logp))
    assert torch.equal(kl_k1(logp, logp), torch.zeros_like(logp))


def test_k3_by_hand():
    # p = 0.5, q = 0.25: r = 0.5, k3 = (0.5 - 1) - ln 0.5 = 0.193147...
    value = kl_k3(torch.tensor([0.5]).log(), torch.tensor([0.25]).log())
    assert value.item() == pytest.approx(-0.5 + 0.6931471805599453, abs=1e-6)


def test_k1_and_k3_averaged_over_samples_estimate_the_exact_kl():
    generator = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(12, generator=generator), 0)
    q = torch.softmax(torch.randn(12, generator=generator), 0)
    exact = torch.distributions.kl_divergence(
        torch.distributions.Categorical(probs=p), torch.distributions.Categorical(probs=q)
    ).item()
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    logp, logq = p.log()[tokens], q.log()[tokens]
    assert kl_k1(logp, logq).mean().item() == pytest.approx(exact, rel=0.03)
    assert kl_k3(logp, logq).mean().item() == pytest.approx(exact, rel=0.03)


def test_masked_mean_reads_only_the_masked_tokens():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    assert masked_mean(values, mask, dim=1).tolist() == [1.5, 3.0]


def test_adaptive_controller_moves_beta_toward_the_target():
    # Ziegler et al.: beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon
    controller = KLController(beta=0.1, target=6.0, horizon=100)
    assert controller.update(9.0, samples=10) == pytest.approx(
        0.1 * (1 + 0.2 * 0.1)
    )  # error 0.5 clipped to 0.2
    controller = KLController(beta=0.1, target=6.0, horizon=100)
    assert controller.update(5.4, samples=50) == pytest.approx(0.1 * (1 - 0.1 * 0.5))
    fixed = KLController(beta=0.1)
    assert fixed.update(100.0, samples=1000) == 0.1

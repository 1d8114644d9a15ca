"""Sampling against exact distributions: top-k support, greedy = argmax, frequencies = probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.generate.sampling import apply_top_k, sample
from lmforge.models.gpt import ModelOutput


class FixedDistribution(nn.Module):
    """A 'model' whose next-token logits are always the same, whatever the context."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, input_ids):
        B, T = input_ids.shape
        return ModelOutput(logits=self.logits.expand(B, T, -1))


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = apply_top_k(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]
    assert torch.equal(apply_top_k(logits, 0), logits)


def test_greedy_is_argmax_and_stops_at_eos():
    model = FixedDistribution([0.0, 3.0, 1.0])
    out = sample(model, torch.tensor([[2]]), 5, block_size=8, temperature=0)
    assert out.tolist() == [[2, 1, 1, 1, 1, 1]]
    stopped = sample(model, torch.tensor([[2]]), 5, block_size=8, temperature=0, eos_id=1)
    assert stopped.tolist() == [[2, 1]]


def test_sampled_frequencies_match_the_distribution():
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    model = FixedDistribution(probabilities.log().tolist())
    generator = torch.Generator().manual_seed(0)
    out = sample(model, torch.zeros(4000, 1, dtype=torch.long), 1, block_size=4, generator=generator)
    counts = torch.bincount(out[:, 1], minlength=4).double()
    expected = probabilities.double() * 4000
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_top_k_one_with_temperature_equals_greedy():
    model = FixedDistribution([0.2, 0.1, 0.9, 0.3])
    a = sample(model, torch.tensor([[0]]), 4, block_size=4, temperature=0.7, top_k=1)
    assert a.tolist() == [[0, 2, 2, 2, 2]]


def test_negative_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        sample(FixedDistribution([0.0, 1.0]), torch.tensor([[0]]), 1, block_size=4, temperature=-1)

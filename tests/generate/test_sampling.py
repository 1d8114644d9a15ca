"""Greedy and ancestral sampling against exact distributions: argmax, frequencies = probabilities."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate import GenerationConfig, generate
from lmforge.generate.sampling import sample
from tests.generate.helpers import FixedDistribution, tiny_gpt

# chi-square critical value, 3 degrees of freedom, p = 0.001 (standard tables; scipy.stats.chi2.ppf(0.999, 3))
CHI2_3DOF_P001 = 16.266


def chi_square(counts: torch.Tensor, probabilities: torch.Tensor) -> float:
    expected = probabilities.double() * counts.sum()
    return ((counts.double() - expected) ** 2 / expected).sum().item()


def test_sampled_frequencies_match_the_distribution():
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    model = FixedDistribution(probabilities.log().tolist())
    config = GenerationConfig(max_new_tokens=1, num_return_sequences=4000)
    out = sample(
        model, torch.zeros(1, 1, dtype=torch.long), None, config, generator=torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(out.ids[:, 0], minlength=4)
    assert chi_square(counts, probabilities) < CHI2_3DOF_P001


def test_every_step_is_drawn_from_the_distribution():
    # 400 rows x 10 steps: the tokens of every step, pooled, have the model's frequencies
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    model = FixedDistribution(probabilities.log().tolist())
    config = GenerationConfig(max_new_tokens=10, num_return_sequences=400)
    out = sample(
        model, torch.zeros(1, 1, dtype=torch.long), None, config, generator=torch.Generator().manual_seed(1)
    )
    assert chi_square(torch.bincount(out.ids.flatten(), minlength=4), probabilities) < CHI2_3DOF_P001


def test_temperature_and_top_k_change_the_distribution_as_defined():
    logits = torch.tensor([1.0, 0.5, 0.0, -1.0, -3.0])
    model = FixedDistribution(logits.tolist())
    config = GenerationConfig(max_new_tokens=1, num_return_sequences=4000, temperature=0.5, top_k=4)
    out = sample(
        model, torch.zeros(1, 1, dtype=torch.long), None, config, generator=torch.Generator().manual_seed(2)
    )
    counts = torch.bincount(out.ids[:, 0], minlength=5)
    assert counts[4] == 0  # outside the top 4
    expected = torch.softmax(logits[:4] / 0.5, dim=-1)
    assert chi_square(counts[:4], expected) < CHI2_3DOF_P001


def test_greedy_is_argmax_and_stops_at_eos():
    model = FixedDistribution([0.0, 3.0, 1.0])
    prompt = torch.tensor([[2]])
    out = sample(model, prompt, None, GenerationConfig(strategy="greedy", max_new_tokens=5))
    assert out.ids.tolist() == [[1, 1, 1, 1, 1]] and out.lengths.tolist() == [5]
    results = generate(model, [[2]], GenerationConfig(strategy="greedy", max_new_tokens=5, eos_id=1))
    assert results[0][0].ids == [] and results[0][0].finish == "eos"


def test_min_new_tokens_holds_eos_back():
    model = FixedDistribution([0.0, 3.0, 1.0])
    config = GenerationConfig(strategy="greedy", max_new_tokens=5, eos_id=1, min_new_tokens=3)
    (result,) = generate(model, [[2]], config)[0]
    assert result.ids == [2, 2, 2] and result.finish == "eos"


def test_temperature_zero_and_top_k_one_equal_greedy():
    model = tiny_gpt(std=0.3)
    greedy = generate(model, [[1, 2, 3]], GenerationConfig(strategy="greedy", max_new_tokens=12))
    cold = generate(model, [[1, 2, 3]], GenerationConfig(temperature=0, max_new_tokens=12))
    top1 = generate(
        model,
        [[1, 2, 3]],
        GenerationConfig(temperature=0.7, top_k=1, max_new_tokens=12),
        generator=torch.Generator().manual_seed(0),
    )
    assert greedy[0][0].ids == cold[0][0].ids == top1[0][0].ids


def test_same_seed_same_samples_and_rows_differ():
    model = tiny_gpt()
    config = GenerationConfig(max_new_tokens=15, num_return_sequences=3)
    first = generate(model, [[1, 2]], config, generator=torch.Generator().manual_seed(5))
    again = generate(model, [[1, 2]], config, generator=torch.Generator().manual_seed(5))
    assert [c.ids for c in first[0]] == [c.ids for c in again[0]]
    assert len({tuple(c.ids) for c in first[0]}) == 3


def test_logprob_is_the_models_log_probability_of_the_ids():
    model = tiny_gpt()
    (result,) = generate(
        model,
        [[4, 5]],
        GenerationConfig(max_new_tokens=6, temperature=1.5, top_k=10),
        generator=torch.Generator().manual_seed(3),
    )[0]
    ids = torch.tensor([[4, 5, *result.ids]])
    with torch.no_grad():
        logprobs = model(ids).logits[0, 1:-1].log_softmax(-1)  # predictions of the 6 new tokens
    expected = logprobs.gather(1, ids[0, 2:, None]).sum().item()
    assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_on_token_sees_every_step_with_its_distribution():
    model = FixedDistribution([0.0, 1.0, 2.0])
    seen = []
    generate(
        model,
        [[0]],
        GenerationConfig(max_new_tokens=4),
        generator=torch.Generator().manual_seed(0),
        on_token=lambda ids, probs: seen.append((ids.tolist(), probs.sum(-1).tolist())),
    )
    assert len(seen) == 4 and all(total == [pytest.approx(1.0)] for _, total in seen)

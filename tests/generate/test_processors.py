"""Every logits processor against its Hugging Face twin (transformers.generation.logits_process)."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate.processors import (
    MinNewTokens,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    build_processors,
)

hf = pytest.importorskip("transformers.generation.logits_process")
SEEDS = [0, 1, 2, 3, 4]


def random_logits(seed: int, batch: int = 4, vocab: int = 50, ties: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=gen) * 3
    if ties:  # few distinct values: many tokens share a score, also at the cut-off
        logits = logits.round()
    return logits


def random_ids(seed: int, batch: int = 4, length: int = 12, vocab: int = 50) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(100 + seed))


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 2.5])
def test_temperature_matches_hf(seed, temperature):
    logits, ids = random_logits(seed), random_ids(seed)
    expected = hf.TemperatureLogitsWarper(temperature)(ids, logits.clone())
    assert_same(Temperature(temperature)(ids, logits), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 3, 10, 49, 50, 80])
def test_top_k_matches_hf(seed, ties, k):
    logits, ids = random_logits(seed, ties=ties), random_ids(seed)
    expected = hf.TopKLogitsWarper(k)(ids, logits.clone())
    assert_same(TopK(k)(ids, logits), expected)


def test_top_k_keeps_ties_with_the_kth_score():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, 2.0]])
    kept = torch.isfinite(TopK(2)(None, logits))
    assert kept.tolist() == [[False, True, True, True, False]]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_hf(seed, ties, p):
    logits, ids = random_logits(seed, ties=ties), random_ids(seed)
    expected = hf.TopPLogitsWarper(p)(ids, logits.clone())
    assert_same(TopP(p)(ids, logits), expected)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(TopP(0.79)(None, logits)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(TopP(0.81)(None, logits)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(TopP(0.01)(None, logits)).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_hf(seed, penalty):
    logits, ids = random_logits(seed), random_ids(seed)  # 12 ids of 50: repeats within a row too
    expected = hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert_same(RepetitionPenalty(penalty)(ids, logits), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("generated", [0, 2, 3, 5])
def test_min_new_tokens_matches_hf(seed, generated):
    prompt_length, eos = 7, 11
    logits, ids = random_logits(seed), random_ids(seed, length=prompt_length + generated)
    expected = hf.MinNewTokensLengthLogitsProcessor(prompt_length, 3, eos)(ids, logits.clone())
    ours = MinNewTokens(prompt_length, 3, eos)(ids, logits)
    assert_same(ours, expected)
    assert torch.isinf(ours[:, eos]).all() == (generated < 3)
    assert torch.equal(logits, random_logits(seed))  # the input is left alone


@pytest.mark.parametrize("seed", SEEDS)
def test_composed_processors_match_hf_list(seed):
    logits, ids = random_logits(seed), random_ids(seed)
    settings = {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.2}
    ours = build_processors(prompt_length=8, sampling=True, min_new_tokens=10, eos_id=3, **settings)
    theirs = hf.LogitsProcessorList(
        [
            hf.RepetitionPenaltyLogitsProcessor(1.2),
            hf.MinNewTokensLengthLogitsProcessor(8, 10, 3),
            hf.TemperatureLogitsWarper(0.7),
            hf.TopKLogitsWarper(20),
            hf.TopPLogitsWarper(0.8),
        ]
    )
    assert_same(apply_processors(ours, ids, logits), theirs(ids, logits.clone()))


def test_no_op_settings_add_no_processor():
    assert build_processors(prompt_length=3, sampling=True) == []
    # greedy and beam search never warp: temperature, top-k and top-p cannot move the maximum
    assert build_processors(prompt_length=3, sampling=False, temperature=0.5, top_k=3, top_p=0.5) == []

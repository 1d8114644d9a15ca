"""Greedy and beam search against Hugging Face ``generate`` on the same random GPT-2 weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.generate import GenerationConfig, generate
from tests.generate.helpers import hf_gpt2_twin, tiny_gpt

PROMPTS = [[3, 17, 42, 8, 8, 25], [51, 2, 9, 33, 14, 7]]  # same length: HF and lmforge pad differently


def hf_rows(hf, prompts, eos_id, **settings) -> list[list[int]]:
    ids = torch.tensor(prompts)
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
            **settings,
        )
    return out[:, ids.shape[1] :].tolist()


def our_rows(model, prompts, config, width: int) -> list[list[int]]:
    """Our continuations as HF returns them: end-of-text kept, padded with it to ``width``."""
    rows = []
    for continuations in generate(model, prompts, config):
        for c in continuations:
            row = c.ids + ([config.eos_id] if c.finish == "eos" else [])
            rows.append(row + [config.eos_id] * (width - len(row)))
    return rows


def a_token_greedy_emits(ours, prompts, max_new_tokens) -> int:
    """A token our model emits mid-way, so that making it end-of-text ends some rows early."""
    config = GenerationConfig(strategy="greedy", max_new_tokens=max_new_tokens)
    return generate(ours, prompts, config)[0][0].ids[max_new_tokens // 2]


def never_emitted(ours, prompts, config) -> int:
    """A token that, made end-of-text, ends no continuation (beams also explore, so check each)."""
    for token in range(ours.config.vocab_size):
        results = generate(ours, prompts, dataclasses.replace(config, eos_id=token))
        if all(c.finish != "eos" and token not in c.ids for rows in results for c in rows):
            return token
    raise AssertionError("every token ends some continuation")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eos_occurs", [True, False])
def test_matches_hf_gpt2_greedy(seed, eos_occurs):
    _, probe = hf_gpt2_twin(seed, eos_id=0)
    n = 20
    plain = GenerationConfig(strategy="greedy", max_new_tokens=n)
    eos = a_token_greedy_emits(probe, PROMPTS, n) if eos_occurs else never_emitted(probe, PROMPTS, plain)
    hf, ours = hf_gpt2_twin(seed, eos_id=eos)
    config = GenerationConfig(strategy="greedy", max_new_tokens=n, eos_id=eos)
    expected = hf_rows(hf, PROMPTS, eos, max_new_tokens=n)
    assert our_rows(ours, PROMPTS, config, len(expected[0])) == expected
    assert any(eos in row for row in expected) == eos_occurs


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_hf_gpt2_greedy_with_repetition_penalty_and_min_new_tokens(seed):
    _, probe = hf_gpt2_twin(seed, eos_id=0)
    eos = a_token_greedy_emits(probe, PROMPTS, 8)
    hf, ours = hf_gpt2_twin(seed, eos_id=eos)
    config = GenerationConfig(
        strategy="greedy", max_new_tokens=20, eos_id=eos, repetition_penalty=1.5, min_new_tokens=5
    )
    expected = hf_rows(hf, PROMPTS, eos, max_new_tokens=20, repetition_penalty=1.5, min_new_tokens=5)
    assert our_rows(ours, PROMPTS, config, len(expected[0])) == expected


BEAM_SETTINGS = [
    {"num_beams": 4, "length_penalty": 1.0, "num_return_sequences": 1},
    {"num_beams": 4, "length_penalty": 2.0, "num_return_sequences": 3},
    {"num_beams": 4, "length_penalty": -1.0, "num_return_sequences": 4},
    {"num_beams": 3, "length_penalty": 0.0, "num_return_sequences": 2},
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "settings",
    BEAM_SETTINGS,
    ids=lambda s: "beams{num_beams}-lp{length_penalty}-r{num_return_sequences}".format(**s),
)
@pytest.mark.parametrize("eos_occurs", [True, False])
def test_matches_hf_gpt2_beam_search(seed, settings, eos_occurs):
    _, probe = hf_gpt2_twin(seed, eos_id=0)
    n = 16
    plain = GenerationConfig(strategy="beam", max_new_tokens=n, **settings)
    if eos_occurs:
        # a token inside the best beam: as end-of-text it finishes hypotheses at different lengths
        eos = generate(probe, PROMPTS, plain)[0][0].ids[n // 3]
    else:
        eos = never_emitted(probe, PROMPTS, plain)
    hf, ours = hf_gpt2_twin(seed, eos_id=eos)
    config = GenerationConfig(strategy="beam", max_new_tokens=n, eos_id=eos, early_stopping=True, **settings)
    expected = hf_rows(hf, PROMPTS, eos, max_new_tokens=n, early_stopping=True, **settings)
    assert our_rows(ours, PROMPTS, config, len(expected[0])) == expected
    assert any(eos in row for row in expected) == eos_occurs


@pytest.mark.parametrize("early_stopping", [False, "never"])
def test_matches_hf_gpt2_beam_search_other_early_stopping(early_stopping):
    _, probe = hf_gpt2_twin(3, eos_id=0)
    plain = GenerationConfig(strategy="beam", max_new_tokens=16, num_beams=4)
    eos = generate(probe, PROMPTS, plain)[0][0].ids[4]
    hf, ours = hf_gpt2_twin(3, eos_id=eos)
    settings = {
        "num_beams": 4,
        "length_penalty": 1.5,
        "num_return_sequences": 2,
        "early_stopping": early_stopping,
    }
    config = GenerationConfig(strategy="beam", max_new_tokens=16, eos_id=eos, **settings)
    expected = hf_rows(hf, PROMPTS, eos, max_new_tokens=16, **settings)
    assert our_rows(ours, PROMPTS, config, len(expected[0])) == expected


def test_beam_scores_are_length_penalized_log_probabilities():
    model = tiny_gpt(std=0.3)
    config = GenerationConfig(
        strategy="beam", max_new_tokens=10, num_beams=4, num_return_sequences=4, length_penalty=2.0
    )
    results = generate(model, [[1, 2, 3]], config)[0]
    scores = [c.score for c in results]
    assert scores == sorted(scores, reverse=True)
    for c in results:  # no processors: the beam score is the model's log-probability over length ** 2
        assert c.score == pytest.approx(c.logprob / len(c.ids) ** 2.0, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_one_beam_equals_greedy(seed):
    model = tiny_gpt(seed=seed, std=0.3)
    eos = generate(model, [[1, 2, 3]], GenerationConfig(strategy="greedy", max_new_tokens=20))[0][0].ids[7]
    greedy = generate(model, [[1, 2, 3]], GenerationConfig(strategy="greedy", max_new_tokens=20, eos_id=eos))
    beam = generate(
        model, [[1, 2, 3]], GenerationConfig(strategy="beam", num_beams=1, max_new_tokens=20, eos_id=eos)
    )
    assert beam[0][0].ids == greedy[0][0].ids and beam[0][0].finish == greedy[0][0].finish == "eos"

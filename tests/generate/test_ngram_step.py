"""The n-gram step model against the n-gram model itself: same distributions, same greedy text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.generate import GenerationConfig, StepModel, generate, pad_prompts
from lmforge.generate.ngram_step import ZERO_PROB_LOGIT, NGramStepModel
from lmforge.models.ngram import NGramConfig, NGramLM

EOS = 0
DOCS = [[1, 2, 3, 4, 2, 3, 5], [2, 3, 4, 1], [5, 5, 2, 3, 4], [1, 2, 1, 2, 3]]


def lm(smoothing: str = "modified-kn", order: int = 3) -> NGramLM:
    return NGramLM.fit(DOCS, NGramConfig(order=order, smoothing=smoothing, eos_id=EOS, vocab_size=8))


@pytest.mark.parametrize("smoothing", ["mle", "add-k", "kn", "modified-kn", "stupid-backoff"])
def test_softmax_of_logits_is_the_next_distribution_through_start_and_step(smoothing):
    model = lm(smoothing)
    step_model = NGramStepModel(model)
    assert isinstance(step_model, StepModel) and step_model.block_size is None
    prompts = [[1, 2], [3], [4, 0, 5, 2, 3]]  # left-padded to one batch; the third crosses end-of-text
    input_ids, mask = pad_prompts(prompts)
    logits, state = step_model.start(input_ids, mask, max_new_tokens=3, copies=2)
    assert logits.shape == (6, 8) and logits.dtype == torch.float32
    rows = [p for p in prompts for _ in range(2)]
    for new in ([3, 3, 2, 2, 0, 4], [4, 5, 1, 7, 6, 0]):
        for row, ids in enumerate(rows):
            expected = model.next_distribution(ids)
            expected = expected / expected.sum()  # stupid backoff: softmax renormalises its scores
            np.testing.assert_allclose(logits[row].softmax(-1).numpy(), expected, rtol=1e-5, atol=1e-7)
        logits, state = step_model.step(torch.tensor(new), state)
        rows = [ids + [token] for ids, token in zip(rows, new)]


def test_reorder_keeps_the_chosen_rows():
    step_model = NGramStepModel(lm())
    input_ids, mask = pad_prompts([[1, 2], [5, 5]])
    logits, state = step_model.start(input_ids, mask, max_new_tokens=2)
    state = step_model.reorder(state, torch.tensor([1, 1]))
    next_logits, _ = step_model.step(torch.tensor([2, 2]), state)
    expected = lm().next_distribution([5, 5, 2])
    for row in range(2):
        np.testing.assert_allclose(next_logits[row].softmax(-1).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_impossible_tokens_get_a_finite_logit_that_softmax_zeroes():
    logits, _ = NGramStepModel(lm("mle")).start(torch.tensor([[1, 2]]), None, max_new_tokens=1)
    assert torch.isfinite(logits).all()
    assert (logits[0] == ZERO_PROB_LOGIT).sum() >= 5  # only 3 and 1 ever follow "1 2"
    assert logits.softmax(-1)[0, 4].item() == 0.0


def argmax_continuation(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding written out: the likeliest next id of the whole context (lowest on ties),
    appended, until end-of-text; the reference the step model must reproduce."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(np.argmax(model.next_distribution(ids))))
        if ids[-1] == EOS:
            break
    return ids[len(prompt) :]


@pytest.mark.parametrize("smoothing", ["mle", "modified-kn"])
def test_greedy_through_generate_equals_greedy_written_out(smoothing):
    model = lm(smoothing)
    prompts = [[1], [2, 3], [5, 5, 2]]
    config = GenerationConfig(strategy="greedy", max_new_tokens=12, eos_id=EOS)
    results = generate(NGramStepModel(model), prompts, config)
    for prompt, (continuation,) in zip(prompts, results):
        own = argmax_continuation(model, prompt, 12)
        assert continuation.ids == [t for t in own if t != EOS]
        expected = model.logprobs(prompt + own)[len(prompt) :].sum()  # end-of-text included
        assert continuation.logprob == pytest.approx(expected, abs=1e-4)


def test_beam_search_and_sampling_only_produce_possible_tokens_under_mle():
    model = lm("mle", order=2)
    step_model = NGramStepModel(model)
    beam = GenerationConfig(
        strategy="beam", num_beams=3, max_new_tokens=6, eos_id=EOS, num_return_sequences=3
    )
    sample = GenerationConfig(strategy="sample", max_new_tokens=20, num_return_sequences=4, eos_id=EOS)
    (beams,) = generate(step_model, [[1, 2]], beam)
    (samples,) = generate(step_model, [[1, 2]], sample, generator=torch.Generator().manual_seed(0))
    for continuation in beams + samples:
        ids = [1, 2] + continuation.ids + ([EOS] if continuation.finish == "eos" else [])
        assert np.isfinite(continuation.logprob) and continuation.logprob > -100
        assert all(model.next_distribution(ids[:i])[ids[i]] > 0 for i in range(2, len(ids)))

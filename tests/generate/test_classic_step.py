"""Decoding the classic models from their state against recomputing from the whole prefix."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate import GenerationConfig, as_step_model, generate
from lmforge.generate.classic_step import RecurrentStepModel, WindowStepModel
from lmforge.models.registry import build_model

VOCAB = 31
VARIANTS = {
    "rnn": ("rnn", {}),
    "rnn-loop": ("rnn", {"recurrence": "loop"}),
    "lstm": ("lstm", {"n_layer": 2}),
    "gru": ("gru", {}),
    "window": ("window", {"context": 4}),
}
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15], [16, 17, 18, 19, 20]]


def tiny(name: str, seed: int = 0) -> torch.nn.Module:
    """A small model with peaked (tie-free) next-token distributions."""
    family, overrides = VARIANTS[name]
    torch.manual_seed(seed)
    model = build_model(family, {"vocab_size": VOCAB, "n_embd": 8, "hidden_size": 16, **overrides}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def uncached_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt) :].tolist()


def test_as_step_model_finds_the_familys_interface():
    assert isinstance(as_step_model(tiny("lstm")), RecurrentStepModel)
    assert isinstance(as_step_model(tiny("rnn")), RecurrentStepModel)
    assert isinstance(as_step_model(tiny("window")), WindowStepModel)
    assert as_step_model(tiny("gru")).block_size is None  # no context limit: nothing is cropped


@pytest.mark.parametrize("name", VARIANTS)
def test_state_logits_equal_recomputed_logits(name):
    model = tiny(name)
    step_model = as_step_model(model)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, state = step_model.start(ids[:, :2], None, max_new_tokens=18)
        for t in range(2, 20):
            full = model(ids[:, :t]).logits[:, -1]
            torch.testing.assert_close(logits, full, rtol=0, atol=1e-5)
            logits, state = step_model.step(ids[:, t], state)


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_ids_equal_uncached(name):
    model = tiny(name)
    (result,) = generate(model, [[3, 14, 15]], GenerationConfig(strategy="greedy", max_new_tokens=20))[0]
    assert result.ids == uncached_greedy(model, [3, 14, 15], 20)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_one_beam_equals_greedy(name, seed):
    model = tiny(name, seed)
    eos = uncached_greedy(model, [1, 2, 3], 20)[7]
    greedy = generate(model, [[1, 2, 3]], GenerationConfig(strategy="greedy", max_new_tokens=20, eos_id=eos))
    beam = generate(
        model, [[1, 2, 3]], GenerationConfig(strategy="beam", num_beams=1, max_new_tokens=20, eos_id=eos)
    )
    assert beam[0][0].ids == greedy[0][0].ids and beam[0][0].finish == greedy[0][0].finish == "eos"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_each_batched_row_equals_its_unbatched_output(name, strategy):
    # rows are left-padded; the model leaves its state unchanged over padding (classic_step.py)
    model = tiny(name)
    config = GenerationConfig(strategy=strategy, max_new_tokens=15, eos_id=0, num_beams=3)
    batched = generate(model, PROMPTS, config)
    for prompt, rows in zip(PROMPTS, batched):
        alone = generate(model, [prompt], config)[0]
        assert [c.ids for c in rows] == [c.ids for c in alone]
        assert [c.logprob for c in rows] == pytest.approx([c.logprob for c in alone], abs=1e-4)


@pytest.mark.parametrize("name", ["lstm", "window"])
def test_beam_reorder_selects_rows_of_the_state(name):
    model = tiny(name)
    step_model = as_step_model(model)
    with torch.inference_mode():
        _, state = step_model.start(torch.tensor([[1, 2], [3, 4]]), None, max_new_tokens=3, copies=2)
        index = torch.tensor([3, 3, 0, 1])
        reordered = step_model.reorder(state, index)
        moved, _ = step_model.step(torch.tensor([5, 6, 7, 8]), reordered)
        # row i of the reordered state continues old row index[i]: the prompts [3, 4], [3, 4], [1, 2], [1, 2]
        expected = model(torch.tensor([[3, 4, 5], [3, 4, 6], [1, 2, 7], [1, 2, 8]])).logits[:, -1]
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-5)


def test_sampling_is_reproducible_and_bf16_weights_generate():
    model = tiny("lstm")
    config = GenerationConfig(max_new_tokens=12, temperature=1.0)
    first = generate(model, [[1, 2]], config, generator=torch.Generator().manual_seed(0))
    again = generate(model, [[1, 2]], config, generator=torch.Generator().manual_seed(0))
    assert first[0][0].ids == again[0][0].ids
    (result,) = generate(model.to(torch.bfloat16), [[1, 2]], GenerationConfig(strategy="greedy"))[0]
    assert all(0 <= i < VOCAB for i in result.ids)

"""Batched generation with left padding against one prompt at a time; the prompt checks."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.generate import GenerationConfig, generate, pad_prompts
from tests.generate.helpers import VARIANTS, tiny_gpt

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15], [16, 17, 18, 19, 20]]


def test_pad_prompts_pads_on_the_left_with_the_rows_first_token():
    ids, mask = pad_prompts([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 8, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_each_batched_row_equals_its_unbatched_output(variant, strategy):
    model = tiny_gpt(std=0.3, **variant)
    config = GenerationConfig(
        strategy=strategy, max_new_tokens=15, eos_id=0, num_beams=3, repetition_penalty=1.2
    )
    batched = generate(model, PROMPTS, config)
    for prompt, rows in zip(PROMPTS, batched):
        alone = generate(model, [prompt], config)[0]
        assert [c.ids for c in rows] == [c.ids for c in alone]
        assert [c.logprob for c in rows] == pytest.approx([c.logprob for c in alone], abs=1e-4)


def test_past_the_context_the_longest_row_equals_unbatched():
    # block_size 32: 7 + 40 tokens shift the window twice. A batch shifts all rows together when its
    # padded width fills the context, i.e. on the longest row's schedule (step.py), so that row is exact.
    model = tiny_gpt(std=0.3)
    config = GenerationConfig(strategy="greedy", max_new_tokens=40)
    batched = generate(model, PROMPTS[:2], config)
    assert batched[0][0].ids == generate(model, PROMPTS[:1], config)[0][0].ids


def test_bf16_weights_generate_what_recomputing_without_a_cache_chooses():
    model = tiny_gpt(std=0.3).to(torch.bfloat16)
    (result,) = generate(model, [[1, 2, 3]], GenerationConfig(strategy="greedy", max_new_tokens=8))[0]
    assert len(result.ids) == 8
    prefix, logprob = [1, 2, 3], 0.0
    with torch.no_grad():
        for token in result.ids:  # each step against the whole prefix run again, no KV cache
            logits = model(torch.tensor([prefix])).logits[0, -1].float()
            # the cached bf16 pass rounds differently: the choice is the maximum up to that rounding
            assert logits[token] >= logits.max() - 0.05, (token, logits.argmax().item())
            logprob += torch.log_softmax(logits, -1)[token].item()
            prefix.append(token)
    assert result.logprob == pytest.approx(logprob, abs=0.05 * len(result.ids))


def test_empty_prompt_is_refused():
    with pytest.raises(UserInputError, match="at least one token"):
        generate(tiny_gpt(), [[1], []], GenerationConfig())


def test_stop_strings_need_a_tokenizer():
    with pytest.raises(UserInputError, match="tokenizer"):
        generate(tiny_gpt(), [[1]], GenerationConfig(stop=("x",)))


def test_a_model_without_a_step_interface_is_refused():
    with pytest.raises(TypeError, match="StepModel"):
        generate(torch.nn.Linear(2, 2), [[1]], GenerationConfig())

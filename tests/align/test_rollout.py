"""Rollouts: batched, left-padded log-probs against each row scored alone, and responses that end at
end-of-text."""

from __future__ import annotations

import copy

import pytest
import torch

from lmforge.align.logprobs import sequence_token_logprobs
from lmforge.align.rl_job import open_policy
from lmforge.align.rollout import sample_rollouts, score_rollouts
from lmforge.generate import GenerationConfig
from tests.align.rl_fixtures import tiny_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    run, model, _, _ = open_policy(tiny_policy(tmp_path_factory.mktemp("rollout") / "policy"))
    tokenizer = run.load_tokenizer()
    eos = tokenizer.document_separator_id
    with torch.no_grad():  # make end-of-text likely enough that some responses end and some run out
        model.lm_head.weight[eos] = model.ln_f.weight.detach() * 0.9 + 0.1
    return model.eval(), tokenizer, eos


@pytest.fixture(scope="module")
def rollouts(policy):
    model, tokenizer, eos = policy
    prompts = [tokenizer.encode(text) for text in ["Speak", "All:", "hear me speak"]]
    config = GenerationConfig(strategy="sample", max_new_tokens=10, eos_id=eos, num_return_sequences=3)
    batch = sample_rollouts(
        model, prompts, config, eos_id=eos, generator=torch.Generator().manual_seed(3), tokenizer=tokenizer
    )
    reference = copy.deepcopy(model)
    return score_rollouts(batch, model, reference), prompts


def test_batched_left_padded_logprobs_equal_each_row_scored_alone(policy, rollouts):
    model, _, _ = policy
    batch, prompts = rollouts
    assert len({len(p) for p in prompts}) > 1, "the prompts must differ in length, so some rows are padded"
    for row in range(batch.input_ids.shape[0]):
        real = batch.attention_mask[row].bool()
        ids = batch.input_ids[row][real][None]  # the row unpadded: prompt, then response
        assert ids[0].tolist() == batch.prompt_ids(row) + batch.response_ids(row)
        assert batch.prompt_ids(row) == prompts[batch.prompt_index[row]]
        with torch.no_grad():
            alone = sequence_token_logprobs(model, ids, None)[0]
        length = int(batch.response_mask[row].sum())
        prompt_length = len(prompts[batch.prompt_index[row]])
        expected = alone[prompt_length : prompt_length + length]
        got = batch.logprobs[row, batch.prompt_width : batch.prompt_width + length]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_reference_equal_to_the_policy_gives_the_same_logprobs(rollouts):
    batch, _ = rollouts
    torch.testing.assert_close(batch.logprobs, batch.ref_logprobs, atol=1e-6, rtol=0)
    assert (batch.logprobs[batch.response_mask == 0] == 0).all()


def test_responses_stop_at_end_of_text(policy, rollouts):
    _, tokenizer, eos = policy
    batch, _ = rollouts
    R = batch.response
    finished = batch.finished.tolist()
    assert any(finished) and not all(finished), "the test needs rows of both kinds"
    for row, ended in enumerate(finished):
        length = int(batch.response_mask[row].sum())
        response = batch.response_ids(row)
        assert response == batch.input_ids[row, R][:length].tolist()
        if ended:
            assert response[-1] == eos and eos not in response[:-1]
            assert batch.completions[row] == tokenizer.decode(response[:-1])
        else:
            assert length == 10 and eos not in response
        assert batch.response_mask[row, R][length:].sum() == 0  # right padding after the response
        assert batch.attention_mask[row, R][length:].sum() == 0


def test_rows_are_prompt_major(rollouts):
    batch, _ = rollouts
    assert batch.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]

"""Text scoring against hand computations: a fixed distribution, the model's own softmax, full context."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmforge.models.gpt import GPT, GPTConfig, ModelOutput
from lmforge.train.scoring import TokenScores, score_tokens


class FixedDistribution(nn.Module):
    """A 'model' whose next-token distribution is the same whatever the context."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(probs).log()

    def forward(self, input_ids):
        B, T = input_ids.shape
        return ModelOutput(logits=self.logits.expand(B, T, -1))


def tiny_gpt(block_size: int = 8) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)  # a sharper, context-dependent distribution
    return model.eval()


def test_fixed_distribution_gives_the_hand_computed_values():
    model = FixedDistribution([0.5, 0.25, 0.125, 0.125])
    scores = score_tokens(model, [1, 2, 3, 0], block_size=4, start_id=0)
    assert scores.token_ids == [1, 2, 3, 0]
    assert scores.probs == pytest.approx([0.25, 0.125, 0.125, 0.5], rel=1e-6)
    expected = math.log(0.25) + 2 * math.log(0.125) + math.log(0.5)  # = -(2 + 3 + 3 + 1) ln 2
    assert scores.logprob == pytest.approx(expected, rel=1e-6)
    assert scores.logprob == pytest.approx(-9 * math.log(2), rel=1e-6)
    assert scores.perplexity == pytest.approx(2 ** (9 / 4), rel=1e-6)  # exp(9 ln 2 / 4 tokens)


def test_without_a_start_token_the_first_token_is_context_only():
    scores = score_tokens(FixedDistribution([0.5, 0.5]), [1, 0, 1], block_size=4)
    assert scores.token_ids == [0, 1]
    assert scores.logprob == pytest.approx(2 * math.log(0.5), rel=1e-6)
    assert math.isnan(score_tokens(FixedDistribution([0.5, 0.5]), [1], block_size=4).perplexity)


def test_logprob_is_the_sum_of_log_probs_and_perplexity_follows():
    scores = score_tokens(tiny_gpt(), [3, 1, 4, 1, 5, 9], block_size=8, start_id=0)
    assert scores.logprob == pytest.approx(sum(math.log(p) for p in scores.probs), rel=1e-9)
    assert scores.perplexity == pytest.approx(math.exp(-scores.logprob / 6), rel=1e-9)


def test_equals_the_models_softmax_computed_by_hand():
    model = tiny_gpt()
    text = [3, 1, 4, 1, 5, 9, 2]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[0, *text]])).logits[0].double(), dim=-1)  # (T, vocab)
    by_hand = [probs[t, token].item() for t, token in enumerate(text)]
    scores = score_tokens(model, text, block_size=8, start_id=0)
    assert scores.probs == pytest.approx(by_hand, rel=1e-5)
    assert scores.logprob == pytest.approx(sum(math.log(p) for p in by_hand), rel=1e-5)


def test_long_text_gives_every_token_as_much_context_as_fits():
    model, block = tiny_gpt(block_size=5), 5
    text = torch.randint(1, 11, (17,), generator=torch.Generator().manual_seed(2)).tolist()
    sequence = [0, *text]
    by_hand = []
    with torch.no_grad():
        for j in range(1, len(sequence)):  # token j from the (up to) `block` tokens right before it
            context = sequence[max(0, j - block) : j]
            logits = model(torch.tensor([context])).logits[0, -1].double()
            by_hand.append(torch.log_softmax(logits, -1)[sequence[j]].item())
    for batch_size in (1, 4):
        scores = score_tokens(model, text, block_size=block, start_id=0, stride=1, batch_size=batch_size)
        assert scores.token_ids == text
        assert scores.logprobs == pytest.approx(by_hand, abs=1e-5)


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_any_stride_scores_every_token_once(stride):
    model, text = tiny_gpt(block_size=5), list(range(1, 11)) * 2
    scores = score_tokens(model, text, block_size=5, start_id=0, stride=stride)
    full = score_tokens(model, text, block_size=5, start_id=0, stride=1)
    assert scores.token_ids == text and len(scores.logprobs) == len(text)
    assert scores.logprobs[:5] == pytest.approx(full.logprobs[:5], abs=1e-6)  # the first window is shared
    assert isinstance(scores, TokenScores)

"""Sequence log-probabilities: against log_softmax by hand, and unchanged by either padding side."""

from __future__ import annotations

import pytest
import torch

from lmforge.align.logprobs import masked_mean, masked_sum, sequence_token_logprobs, token_logprobs
from lmforge.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module", params=["learned", "rope"])
def model(request) -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_encoding=request.param)
    ).eval()


def test_token_logprobs_equal_log_softmax_gathered() -> None:
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    targets = torch.randint(0, 7, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, targets).double(), expected, rtol=0, atol=1e-6)


def test_sequence_logprobs_are_the_chain_rule_over_the_unpadded_row(model: GPT) -> None:
    row = torch.tensor([[3, 7, 1, 9, 4, 2]])
    with torch.no_grad():
        lp = sequence_token_logprobs(model, row)
        # the chain rule by hand: each prefix's next-token distribution from a separate forward
        for t in range(1, row.shape[1]):
            probs = torch.softmax(model(row[:, :t]).logits[0, -1].double(), -1)
            assert lp[0, t].item() == pytest.approx(probs[row[0, t]].log().item(), abs=1e-5)
    assert lp[0, 0] == 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_on_either_side_changes_no_log_probability(model: GPT, side: str) -> None:
    short, long = [5, 6, 7], [1, 2, 3, 4, 5, 6]
    pad = 0
    if side == "left":
        ids = torch.tensor([[pad] * 3 + short, long])
        mask = torch.tensor([[0] * 3 + [1] * 3, [1] * 6])
        real = slice(3, 6)
    else:
        ids = torch.tensor([short + [pad] * 3, long])
        mask = torch.tensor([[1] * 3 + [0] * 3, [1] * 6])
        real = slice(0, 3)
    with torch.no_grad():
        batched = sequence_token_logprobs(model, ids, mask)
        alone = sequence_token_logprobs(model, torch.tensor([short]))
        long_alone = sequence_token_logprobs(model, torch.tensor([long]))
    torch.testing.assert_close(batched[0, real][1:], alone[0, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(batched[1], long_alone[0], rtol=0, atol=1e-5)


def test_masked_sum_and_mean() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert masked_sum(values, mask).tolist() == [5.0, 4.0]
    assert masked_mean(values, mask).item() == pytest.approx(3.0)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0

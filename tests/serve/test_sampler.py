"""The engine's batched sampling against the reference processors (generate/processors.py, tested
against Hugging Face) and against the distribution it draws from."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.generate.processors import TopK, TopP, apply_processors
from lmforge.serve.sampler import RowSampler, SamplingParams, choose, top_k_top_p

CPU = torch.device("cpu")


def test_top_k_top_p_equals_the_reference_processors_row_by_row():
    torch.manual_seed(0)
    logits = torch.randn(12, 50) * 2
    logits[3, :10] = 1.5  # ties with the k-th score stay, as in TopK
    settings = [(0, 0.5), (5, 1.0), (3, 0.9), (10, 0.3), (0, 1.0), (50, 0.99), (1, 1.0), (7, 0.05)]
    settings += [(100, 0.8), (2, 0.6), (0, 0.999), (20, 0.7)]
    top_k = torch.tensor([k for k, _ in settings])
    top_p = torch.tensor([p for _, p in settings])
    got = top_k_top_p(logits, top_k, top_p)
    for row, (k, p) in enumerate(settings):
        processors = ([TopK(k)] if k else []) + ([TopP(p)] if p < 1 else [])
        expected = apply_processors(processors, torch.zeros(1, 0, dtype=torch.long), logits[row : row + 1])[0]
        assert torch.equal(torch.isinf(got[row]), torch.isinf(expected)), (k, p)
        kept = ~torch.isinf(expected)
        assert torch.equal(got[row][kept], logits[row][kept])


@pytest.mark.parametrize(
    ("settings", "probabilities"),
    [
        ({}, [0.5, 0.3, 0.2]),
        ({"top_p": 0.6}, [0.5 / 0.8, 0.3 / 0.8, 0.0]),  # the 0.2 tail is <= 1 - 0.6: removed
        ({"top_k": 1}, [1.0, 0.0, 0.0]),
        ({"temperature": 0.5}, [25 / 38, 9 / 38, 4 / 38]),  # p^(1/t), renormalised
    ],
)
def test_draws_follow_the_processed_distribution(settings, probabilities):
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]]).expand(64, 3)
    draws = 25
    counts = torch.zeros(3)
    for batch in range(draws):
        samplers = [
            RowSampler(SamplingParams(max_tokens=1, seed=batch * 64 + i, **settings), 3, CPU)
            for i in range(64)
        ]
        tokens, _, _ = choose(logits, samplers)
        counts += torch.bincount(torch.tensor(tokens), minlength=3)
    n = 64 * draws
    for observed, p in zip((counts / n).tolist(), probabilities):
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(observed - p) <= 4 * sigma + 1e-12  # exactly 0 where p is 0


def test_a_rows_draw_does_not_depend_on_its_neighbours():
    torch.manual_seed(1)
    logits = torch.randn(5, 40)
    alone = choose(logits[2:3], [RowSampler(SamplingParams(max_tokens=1, seed=7, top_p=0.8), 40, CPU)])[0]
    neighbours = [
        RowSampler(SamplingParams(max_tokens=1, seed=s, temperature=t), 40, CPU)
        for s, t in [(1, 0.5), (2, 0)]
    ]
    mine = RowSampler(SamplingParams(max_tokens=1, seed=7, top_p=0.8), 40, CPU)
    batch = choose(
        logits, [*neighbours, mine, RowSampler(SamplingParams(max_tokens=1, top_k=3), 40, CPU), neighbours[0]]
    )[0]
    assert batch[2] == alone[0]


def test_penalties_hand_computed():
    # logits [2.0, 1.9, 0.0]; presence 0.5, frequency 0.15 over the tokens generated so far:
    # step 1: no counts -> 0;  step 2: 2.0 - 0.5 - 0.15 = 1.35 < 1.9 -> 1
    # step 3: 1.35 vs 1.9 - 0.65 = 1.25 -> 0;  step 4: 2.0 - 0.5 - 0.30 = 1.20 < 1.25 -> 1
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    params = SamplingParams(
        max_tokens=4, temperature=0, presence_penalty=0.5, frequency_penalty=0.15, logprobs=0
    )
    sampler = RowSampler(params, 3, CPU)
    plain = RowSampler(SamplingParams(max_tokens=4, temperature=0), 3, CPU)
    chosen, plain_chosen = [], []
    for _ in range(4):
        tokens, logprobs, _ = choose(logits, [sampler])
        chosen.append((tokens[0], logprobs[0]))
        plain_chosen.append(choose(logits, [plain])[0][0])
    raw = torch.log_softmax(logits[0], -1)  # logprobs report the unpenalised distribution
    assert chosen == [(t, pytest.approx(raw[t].item())) for t in [0, 1, 0, 1]]
    assert plain_chosen == [0, 0, 0, 0]
    assert torch.equal(logits, torch.tensor([[2.0, 1.9, 0.0]]))  # the caller's logits are untouched

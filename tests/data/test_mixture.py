"""Data mixtures: parsing DIR:WEIGHT, per-row source draws whose shares match the weights, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.bounds import split_weight
from lmforge.data.mixture import MixtureSampler, mixed_eval_batches, mixed_windows, parse_mixture
from lmforge.errors import UserInputError
from tests.data.test_masking import CLS, SEP, ListTokenizer


def source(offset: int, length: int) -> np.ndarray:
    """Ids offset, offset+1, ...: a window tells which source it came from and where it started."""
    return (np.arange(length) + offset).astype(np.uint32)


A, B, C = source(0, 60), source(10_000, 5_000), source(20_000, 300)


def source_of(rows: torch.Tensor) -> list[int]:
    return (rows[:, 0] // 10_000).tolist()


# --- DIR:WEIGHT ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("data/web:0.6", ("data/web", "0.6")),
        ("data/web:3", ("data/web", "3")),
        ("data/web:1e-2", ("data/web", "1e-2")),
        ("data/web", ("data/web", None)),
        ("data/run:3/", ("data/run:3/", None)),  # a directory whose name ends in :3, written with a slash
        ("data/a:b", ("data/a:b", None)),  # not a number: part of the path
        ("web:nan", ("web", "nan")),  # a number Python reads: a weight, refused later as not finite
        ("builtin:stdlib-docs:0.6", ("builtin:stdlib-docs", "0.6")),
    ],
)
def test_split_weight_takes_only_a_trailing_number(spec, expected):
    assert split_weight(spec) == expected


def test_weights_are_normalised_to_sum_to_one():
    entries = parse_mixture(["web:3", "books:1.5", "code:0.5"])
    assert [e.weight for e in entries] == pytest.approx([0.6, 0.3, 0.1])
    assert [e.given_weight for e in entries] == [3.0, 1.5, 0.5]
    assert [e.name for e in entries] == ["web", "books", "code"]
    assert entries[0].spec == "web:3"


def test_one_directory_without_a_weight_is_the_plain_dataset():
    (entry,) = parse_mixture("data/web")
    assert (entry.weight, entry.given_weight, entry.spec) == (1.0, None, "data/web")


def test_same_names_are_made_unique(tmp_path):
    entries = parse_mixture([f"{tmp_path}/x/data:1", f"{tmp_path}/y/data:1"])
    assert [e.name for e in entries] == ["data", "data-2"]


@pytest.mark.parametrize(
    ("specs", "says"),
    [
        (["a:0", "b:1"], "positive finite"),
        (["a:-1", "b:1"], "positive finite"),
        (["a:nan", "b:1"], "positive finite"),
        (["a:inf", "b:1"], "positive finite"),
        (["a:1", "b"], "b has no weight"),
        (["a:1", "./a:2"], "twice"),
        ([], "needs a prepared dataset"),
    ],
)
def test_bad_mixtures_are_one_clear_line(specs, says):
    with pytest.raises(UserInputError, match=says) as error:
        parse_mixture(specs)
    assert "\n" not in str(error.value)


# --- the draw ------------------------------------------------------------------------------------
def test_rows_are_windows_of_the_source_they_were_drawn_from():
    x, y, drawn = mixed_windows(
        [A, B, C], torch.tensor([0.2, 0.5, 0.3]), 64, 8, torch.Generator().manual_seed(1)
    )
    assert source_of(x) == drawn.tolist()
    steps = torch.arange(8)
    assert torch.equal(x, x[:, :1] + steps) and torch.equal(y, x + 1)  # contiguous windows, shifted targets


def test_sources_are_the_first_draw_of_the_seeded_generator():
    """The documented draw, checked by hand: torch.multinomial of the weights with the sampler's
    seed picks each row's source before any window start is drawn."""
    sampler = MixtureSampler([A, B], [1.0, 3.0], batch_size=10, block_size=4, seed=7)
    expected = torch.multinomial(
        torch.tensor([0.25, 0.75], dtype=torch.float64),
        10,
        replacement=True,
        generator=torch.Generator().manual_seed(7),
    )
    assert source_of(sampler.next_batch()["input_ids"]) == expected.tolist()


def test_shares_of_rows_match_the_weights_not_the_sizes():
    """Each source's row count is Binomial(n, w): within 5 standard deviations of n*w (a false
    alarm about once in 1.7 million runs), although A holds 60 tokens and B 5,000."""
    weights = [0.5, 0.2, 0.3]
    sampler = MixtureSampler([A, B, C], weights, batch_size=32, block_size=8, seed=0)
    counts = torch.zeros(3, dtype=torch.int64)
    batches = 200
    for _ in range(batches):
        counts += torch.bincount(torch.tensor(source_of(sampler.next_batch()["input_ids"])), minlength=3)
    n = batches * 32
    for count, w in zip(counts.tolist(), weights):
        assert abs(count - n * w) <= 5 * math.sqrt(n * w * (1 - w)), (counts, weights)
    # tokens read: every row of a source is block_size tokens of it, exactly
    assert sampler.tokens_seen == [c * 8 for c in counts.tolist()]


def test_state_dict_resumes_the_exact_batches_and_counts():
    first = MixtureSampler([A, B, C], [0.5, 0.2, 0.3], batch_size=8, block_size=6, seed=3)
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(3)]
    second = MixtureSampler([A, B, C], [0.5, 0.2, 0.3], batch_size=8, block_size=6, seed=99)
    second.load_state_dict(state)
    assert second.tokens_seen == state["tokens_seen"]
    for want in expected:
        got = second.next_batch()
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])
    assert second.tokens_seen == first.tokens_seen


def test_state_of_another_mixture_is_refused():
    sampler = MixtureSampler([A, B], [0.5, 0.5], batch_size=4, block_size=4)
    with pytest.raises(UserInputError, match="mixture of 3 sources, not 2"):
        sampler.load_state_dict(MixtureSampler([A, B, C], [1, 1, 1], 4, 4).state_dict())


def test_a_source_shorter_than_a_window_is_refused():
    with pytest.raises(Exception, match="needs 9"):
        MixtureSampler([A, source(0, 5)], [0.5, 0.5], batch_size=4, block_size=8)


def test_masked_rows_are_cls_window_sep_from_their_source():
    words = [np.full(200, 5 + i, dtype=np.uint16) for i in range(3)]  # source i holds only word 5+i
    sampler = MixtureSampler(
        words, [0.2, 0.3, 0.5], batch_size=64, block_size=10, seed=0, tokenizer=ListTokenizer()
    )
    batch = sampler.next_batch()
    ids, labels = batch["input_ids"], batch["labels"]
    assert (ids[:, 0] == CLS).all() and (ids[:, -1] == SEP).all()
    original = torch.where(labels != -100, labels, ids)[:, 1:-1]
    assert (original == original[:, :1]).all()  # each row's window is one source's
    assert (labels != -100).any()
    counts = torch.bincount(original[:, 0] - 5, minlength=3)
    assert sampler.tokens_seen == [c * 8 for c in counts.tolist()]  # 8 data tokens a row, [CLS]/[SEP] aside


def test_eval_batches_are_fixed_and_cut_by_source():
    first = mixed_eval_batches([A, B, C], [0.5, 0.2, 0.3], batch_size=16, block_size=6, num_batches=4, seed=1)
    again = mixed_eval_batches([A, B, C], [0.5, 0.2, 0.3], batch_size=16, block_size=6, num_batches=4, seed=1)
    rows = 0
    for index, (batches, same) in enumerate(zip(first, again)):
        for batch, other in zip(batches, same, strict=True):
            assert set(source_of(batch["input_ids"])) == {index}
            assert torch.equal(batch["input_ids"], other["input_ids"])
            rows += len(batch["input_ids"])
    assert rows == 4 * 16

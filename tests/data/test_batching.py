"""Windows and padded batches against hand-computed batches and their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.batching import (
    Batch,
    WindowSampler,
    evenly_spread,
    pad_batch,
    padded_width,
    random_windows,
    sequential_window_starts,
    sequential_windows,
)
from lmforge.errors import DataError, TokenizerError, UserInputError


@pytest.fixture
def memmap_tokens(tmp_path) -> np.memmap:
    """Like a prepared train.bin: uint16 ids on disk."""
    values = np.random.default_rng(0).integers(0, 65535, size=5000, dtype=np.uint16)
    path = tmp_path / "train.bin"
    values.tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r")


# --- random windows ------------------------------------------------------------------------
def test_windows_are_contiguous_slices_and_targets_are_inputs_shifted(memmap_tokens):
    x, y = random_windows(
        memmap_tokens, batch_size=16, block_size=32, generator=torch.Generator().manual_seed(1)
    )
    assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == torch.int64
    data = torch.from_numpy(memmap_tokens.astype(np.int64))
    for row_x, row_y in zip(x, y):
        # the start is where the row's 33 tokens occur in the data
        starts = [s for s in range(len(data) - 32) if torch.equal(data[s : s + 32], row_x)]
        assert starts, "a window is not a contiguous slice of the data"
        assert torch.equal(row_y, data[starts[0] + 1 : starts[0] + 33])
    torch.testing.assert_close(x[:, 1:], y[:, :-1])


def test_window_values_above_int16_survive_the_cast():
    data = np.arange(70000, 70000 + 50, dtype=np.uint32)  # position = value - 70000
    x, y = random_windows(data, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(y, x + 1)
    assert torch.equal(x - x[:, :1], torch.arange(10).expand(8, 10))


def test_windows_cover_every_valid_start_and_never_run_past_the_end():
    block = 5
    data = np.arange(block + 3, dtype=np.uint16)  # valid starts: 0, 1, 2
    gen = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(50):
        x, y = random_windows(data, 4, block, gen)
        seen.update(x[:, 0].tolist())
        assert int(y.max()) <= len(data) - 1
    assert seen == {0, 1, 2}
    x, y = random_windows(np.arange(block + 1), 3, block, gen)  # exactly one window fits
    assert x[:, 0].tolist() == [0, 0, 0] and y[:, -1].tolist() == [block] * 3


def test_same_generator_state_gives_same_batch(memmap_tokens):
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    first = random_windows(memmap_tokens, 4, 16, gen)
    second = random_windows(memmap_tokens, 4, 16, gen)
    assert not torch.equal(first[0], second[0])
    gen.set_state(state)
    again = random_windows(memmap_tokens, 4, 16, gen)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_windows_leave_global_rng_alone(memmap_tokens):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    random_windows(memmap_tokens, 4, 16, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


def test_window_sampler_resumes_exactly(memmap_tokens):
    sampler = WindowSampler(memmap_tokens, batch_size=2, block_size=8, seed=11)
    sampler.next_batch()
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(3)]
    resumed = WindowSampler(memmap_tokens, batch_size=2, block_size=8, seed=999)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert got.keys() == {"input_ids", "labels"}
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])


def test_too_short_data_is_a_clear_error():
    with pytest.raises(DataError, match="needs 9"):
        random_windows(np.arange(8), 1, 8, torch.Generator())


# --- sequential windows ---------------------------------------------------------------------
def test_sequential_windows_hand_computed_with_stride():
    data = np.arange(10, 17, dtype=np.uint16)
    batches = list(sequential_windows(data, block_size=3, batch_size=2, stride=2))
    assert [b["input_ids"].tolist() for b in batches] == [[[10, 11, 12], [12, 13, 14]], [[13, 14, 15]]]
    assert [b["labels"].tolist() for b in batches] == [[[11, 12, 13], [-100, 14, 15]], [[-100, -100, 16]]]


@settings(max_examples=60, deadline=None)
@given(
    num_tokens=st.integers(2, 60),
    block_size=st.integers(1, 12),
    stride_fraction=st.floats(0.01, 1.0),
    batch_size=st.integers(1, 4),
    use_stride=st.booleans(),
)
def test_sequential_windows_score_every_target_exactly_once(
    num_tokens, block_size, stride_fraction, batch_size, use_stride
):
    data = np.arange(num_tokens, dtype=np.uint32)  # value = position
    stride = max(1, int(block_size * stride_fraction)) if use_stride else None
    scored = []
    for batch in sequential_windows(data, block_size, batch_size, stride):
        x, y = batch["input_ids"], batch["labels"]
        keep = y != -100
        assert torch.equal(y[keep], (x + 1)[keep])  # each label is its input's successor
        scored += y[keep].tolist()
    assert sorted(scored) == list(range(1, num_tokens))


def test_strided_windows_score_only_their_last_stride_targets():
    starts, already = sequential_window_starts(num_tokens=101, block_size=8, stride=3)
    assert starts[0] == 0 and already[0] == 0
    assert (starts[:-1] % 3 == 0).all() and starts[-1] == 100 - 8  # last window ends on the last token
    assert (already[1:-1] == 8 - 3).all()  # the HF recipe: 5 tokens of extra context, 3 new targets


def test_ranks_split_the_windows_without_loss():
    data = np.arange(100, dtype=np.uint16)
    alone = [t for b in sequential_windows(data, 7, 3, stride=4) for t in b["labels"][b["labels"] != -100]]
    shared = [
        t
        for rank in range(3)
        for b in sequential_windows(data, 7, 3, stride=4, rank=rank, world_size=3)
        for t in b["labels"][b["labels"] != -100]
    ]
    assert sorted(map(int, shared)) == sorted(map(int, alone)) == list(range(1, 100))


def test_bad_stride_is_a_clear_error():
    with pytest.raises(UserInputError, match="stride"):
        sequential_window_starts(100, block_size=8, stride=9)


# --- padded batches -------------------------------------------------------------------------
def test_pad_uses_tokenizer_pad_id():
    # the lecture's PadSequence called pad_sequence(batch_first=True), which pads with 0 whatever
    # the pad id: this test fails for that implementation
    batch = pad_batch([[5, 6, 7], [8]], pad_id=3)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 3, 3]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[5, 6, 7], [8, -100, -100]]
    lecture = torch.nn.utils.rnn.pad_sequence([torch.tensor([5, 6, 7]), torch.tensor([8])], batch_first=True)
    assert not torch.equal(lecture, batch.input_ids)


def test_mask_comes_from_lengths_not_from_ids():
    # 0 is a real token here, and the pad id (reused eos) also ends a real sequence
    batch = pad_batch([[0, 9, 2], [0]], pad_id=2)
    assert batch.input_ids.tolist() == [[0, 9, 2], [0, 2, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[0, 9, 2], [0, -100, -100]]


def test_left_padding_for_generation():
    batch = pad_batch([[5, 6, 7], [8]], pad_id=3, padding_side="left")
    assert batch.input_ids.tolist() == [[5, 6, 7], [3, 3, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.labels.tolist() == [[5, 6, 7], [-100, -100, 8]]


def test_truncation_keeps_the_requested_side():
    right = pad_batch([[1, 2, 3, 4, 5], [6]], pad_id=0, block_size=3)
    assert right.input_ids.tolist() == [[1, 2, 3], [6, 0, 0]]
    left = pad_batch([[1, 2, 3, 4, 5], [6]], pad_id=0, block_size=3, truncation_side="left")
    assert left.input_ids.tolist() == [[3, 4, 5], [6, 0, 0]]


def test_pad_to_block_size_gives_a_fixed_width():
    batch = pad_batch([[1, 2], [3]], pad_id=9, block_size=4, pad_to_block_size=True)
    assert batch.input_ids.tolist() == [[1, 2, 9, 9], [3, 9, 9, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]


def test_shifted_labels_are_next_real_token():
    right = pad_batch([[5, 6, 7], [8, 4]], pad_id=3, shift_labels=True)
    assert right.labels.tolist() == [[6, 7, -100], [4, -100, -100]]
    left = pad_batch([[5, 6, 7], [8, 4]], pad_id=3, padding_side="left", shift_labels=True)
    assert left.input_ids.tolist() == [[5, 6, 7], [3, 8, 4]]
    assert left.labels.tolist() == [[6, 7, -100], [-100, 4, -100]]


def test_accepts_tensors_and_arrays_and_moves_to_device():
    batch = pad_batch([torch.tensor([1, 2]), np.array([3], dtype=np.uint16)], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2], [3, 0]] and batch.input_ids.dtype == torch.int64
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and set(moved.as_dict()) == {"input_ids", "attention_mask", "labels"}


def test_missing_pad_token_is_a_clear_error():
    with pytest.raises(TokenizerError, match="this tokenizer has no pad token"):
        pad_batch([[1, 2]], pad_id=None)


@pytest.mark.parametrize("sequences", [[], [[1, 2], []]], ids=["no sequences", "an empty sequence"])
def test_empty_input_is_a_clear_error(sequences):
    with pytest.raises(DataError, match="empty"):
        pad_batch(sequences, pad_id=0)


def test_bad_side_is_a_clear_error():
    with pytest.raises(UserInputError, match="padding_side"):
        pad_batch([[1]], pad_id=0, padding_side="middle")


def test_evenly_spread_keeps_every_group_of_a_grouped_list():
    grouped = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    assert evenly_spread(grouped, 6) == ["a", "a", "b", "b", "c", "c"]
    assert evenly_spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert evenly_spread([1, 2], 5) == [1, 2]


@pytest.mark.parametrize(
    "longest, context, width",
    [
        (17, None, 17),  # no context: the longest row
        (17, 128, 32),  # up to the next multiple of 16
        (32, 128, 32),  # already one
        (1, 128, 16),
        (17, 20, 20),  # never past the context
        (25, 20, 25),  # nor under the longest row (the model will refuse it, not the batch)
    ],
)
def test_padded_width_rounds_up_to_16_within_the_context(longest, context, width):
    assert padded_width(longest, context) == width

"""Parallel streams for truncated BPTT: the documented batches, continuity, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.streams import StreamSampler
from lmforge.errors import DataError


def test_the_docstring_example():
    sampler = StreamSampler(np.arange(21, dtype=np.uint16), batch_size=2, block_size=3)
    batches = [sampler.next_batch() for _ in range(4)]
    assert batches[0]["input_ids"].tolist() == [[0, 1, 2], [10, 11, 12]]
    assert batches[0]["labels"].tolist() == [[1, 2, 3], [11, 12, 13]]
    assert batches[1]["input_ids"].tolist() == [[3, 4, 5], [13, 14, 15]]
    assert batches[2]["labels"].tolist() == [[7, 8, 9], [17, 18, 19]]
    assert [b["carry_state"].tolist() for b in batches] == [[False] * 2, [True] * 2, [True] * 2, [False] * 2]
    assert batches[3]["input_ids"].tolist() == batches[0]["input_ids"].tolist()  # the next epoch


def test_consecutive_batches_continue_each_stream_exactly():
    data = np.random.default_rng(0).integers(0, 60000, size=5003).astype(np.uint16)
    sampler = StreamSampler(data, batch_size=7, block_size=16)
    windows = sampler.windows_per_epoch
    batches = [sampler.next_batch() for _ in range(windows)]
    rows = np.concatenate([b["input_ids"].numpy() for b in batches], axis=1)  # (B, windows * T)
    targets = np.concatenate([b["labels"].numpy() for b in batches], axis=1)
    length = sampler.stream_length
    for row in range(7):
        start = row * length
        assert (rows[row] == data[start : start + windows * 16]).all()
        assert (targets[row] == data[start + 1 : start + 1 + windows * 16]).all()
    assert sampler.state_dict() == {"epoch": 1, "window": 0}


def test_resume_state_round_trips():
    data = np.arange(1000, dtype=np.uint32)
    first = StreamSampler(data, batch_size=3, block_size=10)
    for _ in range(40):  # into the second epoch (33 windows each)
        first.next_batch()
    second = StreamSampler(data, batch_size=3, block_size=10)
    second.load_state_dict(first.state_dict())
    for _ in range(40):
        a, b = first.next_batch(), second.next_batch()
        assert all((a[key] == b[key]).all() for key in ("input_ids", "labels", "carry_state"))


def test_too_little_data_is_refused():
    with pytest.raises(DataError, match="fewer than one window"):
        StreamSampler(np.arange(50, dtype=np.uint16), batch_size=8, block_size=10)

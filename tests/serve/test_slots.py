"""The batch's KV storage views against hand-indexed truths: where each write lands, what each read returns."""

from __future__ import annotations

import torch

from lmforge.serve.slots import KVSlots


def filled_slots(seed: int = 0) -> KVSlots:
    slots = KVSlots(2, 4, 3, 10, 5, dtype=torch.float32, device=torch.device("cpu"))
    torch.manual_seed(seed)
    slots.keys.normal_()
    slots.values.normal_()
    return slots


def test_decode_view_writes_each_row_at_its_own_length():
    slots = filled_slots()
    keys_before, values_before = slots.keys.clone(), slots.values.clone()
    lengths = torch.tensor([4, 0, 7])  # rows 0..2 of 4; row 3 is untouched
    view = slots.decode_view(lengths, span=8)
    k, v = torch.randn(3, 3, 1, 5), torch.randn(3, 3, 1, 5)
    got_k, got_v = view.update(1, k, v)
    expected_k, expected_v = keys_before.clone(), values_before.clone()
    for row, position in enumerate(lengths.tolist()):
        expected_k[1, row, :, position] = k[row, :, 0]
        expected_v[1, row, :, position] = v[row, :, 0]
    assert torch.equal(slots.keys, expected_k) and torch.equal(slots.values, expected_v)
    assert torch.equal(got_k, expected_k[1, :3, :, :8]) and torch.equal(got_v, expected_v[1, :3, :, :8])
    assert view.length == 7  # the longest row's past: the model's bound on positions


def test_prefill_view_appends_a_chunk_after_the_rows_past():
    slots = filled_slots(1)
    before = slots.keys.clone()
    view = slots.prefill_view(row=2, start=3)
    k, v = torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    got_k, got_v = view.update(0, k, v)
    expected = before.clone()
    expected[0, 2, :, 3:7] = k[0]
    assert torch.equal(slots.keys, expected)
    assert torch.equal(got_k, expected[0, 2:3, :, :7]) and torch.equal(got_v[0, :, 3:7], v[0])
    assert view.length == 3  # the model's past: its default positions and causal mask start there


def test_move_copies_the_filled_prefix_only():
    slots = filled_slots(2)
    before = slots.keys.clone()
    slots.move(source=3, target=1, length=6)
    assert torch.equal(slots.keys[:, 1, :, :6], before[:, 3, :, :6])
    assert torch.equal(slots.keys[:, 1, :, 6:], before[:, 1, :, 6:])
    assert torch.equal(slots.keys[:, [0, 2, 3]], before[:, [0, 2, 3]])

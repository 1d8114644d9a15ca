"""The batch's KV storage views against hand-indexed truths: where each write lands, what each read returns."""

from __future__ import annotations

import pytest
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


def _decode_step(model, slots: KVSlots, lengths: list[int], row_keys: list[int] | None) -> torch.Tensor:
    """One engine-style decoding step (explicit positions, a bool mask) over rows of ``lengths``."""
    span = max(lengths) + 1
    positions = torch.tensor(lengths)
    mask = torch.arange(span)[None, :] <= positions[:, None]
    ids = torch.arange(len(lengths))[:, None] + 3
    with torch.inference_mode():
        view = slots.decode_view(positions, span, row_keys=row_keys)
        return model(
            ids, attention_mask=mask[:, None, None, :], position_ids=positions[:, None], kv_cache=view
        ).logits


@pytest.mark.parametrize("n_kv_head", [None, 2], ids=["multi-head", "grouped-query"])
def test_attending_row_by_row_equals_the_masked_batch(n_kv_head, monkeypatch):
    """Each row over its own keys (serve's ragged step) gives the logits of the batched step under
    the mask, and writes the same keys and values (within rounding)."""
    from lmforge.models import attention
    from lmforge.models.gpt import GPT, GPTConfig

    calls = []
    row_by_row = attention.attend_rows
    monkeypatch.setattr(attention, "attend_rows", lambda *a: calls.append(a[3]) or row_by_row(*a))
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32)
    ).eval()
    layout = model.cache_layout()
    batched, ragged = (
        KVSlots(
            layout.layers,
            4,
            layout.heads,
            32,
            layout.head_size,
            dtype=torch.float32,
            device=torch.device("cpu"),
        )
        for _ in range(2)
    )
    for slots in (batched, ragged):
        torch.manual_seed(1)
        slots.keys.normal_()
        slots.values.normal_()
    lengths = [20, 3, 11]
    expected = _decode_step(model, batched, lengths, None)
    assert calls == []
    got = _decode_step(model, ragged, lengths, [n + 1 for n in lengths])
    assert calls == [[21, 4, 12]] * 2  # each layer, each row over its own keys
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ragged.keys, batched.keys, rtol=0, atol=1e-5)  # layer 1's: rounding apart
    torch.testing.assert_close(ragged.values, batched.values, rtol=0, atol=1e-5)

"""The KV cache against recomputation: same logits, same greedy ids, no reallocation, exact reordering."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate import GenerationConfig, KVCache, generate
from lmforge.generate.step import GPTStepModel
from tests.generate.helpers import VARIANTS, tiny_gpt


def uncached_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt) :].tolist()


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
def test_cached_logits_equal_recomputed_logits(variant):
    model = tiny_gpt(**variant)
    step_model = GPTStepModel(model)
    ids = torch.randint(0, 61, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, state = step_model.start(ids[:, :5], None, max_new_tokens=15)
        for t in range(5, 20):
            full = model(ids[:, :t]).logits[:, -1]
            torch.testing.assert_close(logits, full, rtol=0, atol=1e-5)
            logits, state = step_model.step(ids[:, t], state)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
def test_cached_greedy_ids_equal_uncached(variant):
    model = tiny_gpt(std=0.3, **variant)
    prompt = [3, 14, 15, 9, 2]
    (result,) = generate(model, [prompt], GenerationConfig(strategy="greedy", max_new_tokens=20))[0]
    assert result.ids == uncached_greedy(model, prompt, 20)


def test_cache_storage_is_never_reallocated():
    model = tiny_gpt()
    step_model = GPTStepModel(model)
    with torch.inference_mode():
        logits, state = step_model.start(torch.tensor([[1, 2, 3]]), None, max_new_tokens=10, copies=2)
        pointers = (state.cache.keys.data_ptr(), state.cache.values.data_ptr())
        shape = state.cache.keys.shape
        for _ in range(9):
            logits, state = step_model.step(logits.argmax(-1), state)
            state = step_model.reorder(state, torch.tensor([1, 0]))
    assert (state.cache.keys.data_ptr(), state.cache.values.data_ptr()) == pointers
    assert state.cache.keys.shape == shape == (2, 2, 4, 13, 8)  # (L, B, nh, prompt + max_new, hs)
    assert state.cache.length == 12  # the last chosen token is never fed


def test_reorder_equals_index_select_and_expands_rows():
    cache = KVCache(2, 4, 3, 5, 2)
    k = torch.randn(2, 3, 3, 2, generator=torch.Generator().manual_seed(0))  # 2 rows, 3 positions
    for layer in range(2):
        cache.update(layer, k + layer, -k)
    cache.advance(3)
    cache.reorder(torch.tensor([1, 1, 0, 1]))  # 2 rows -> 4, a beam's copies
    expected = k[[1, 1, 0, 1]]
    torch.testing.assert_close(cache.keys[0, :, :, :3], expected)
    torch.testing.assert_close(cache.keys[1, :, :, :3], expected + 1)
    torch.testing.assert_close(cache.values[0, :, :, :3], -expected)
    keys, _ = cache.update(0, torch.zeros(4, 3, 1, 2), torch.zeros(4, 3, 1, 2))
    assert keys.shape == (4, 3, 4, 2)


@pytest.mark.parametrize(
    "index",
    [[2, 0, 1, 3], [0, 1, 2, 3], [3, 3, 0, 0], [1, 0, 3, 2], [0, 0, 0, 0]],
    ids=["a cycle and a kept row", "nothing moves", "a source overwritten", "swaps", "all one row"],
)
def test_reorder_with_kept_rows_cycles_and_swaps_equals_index_select(index):
    """reorder copies only the rows that change; a row read as a source and overwritten as a
    target (a cycle, a swap) must still give its old content, as an index_select of all rows does."""
    cache = KVCache(2, 4, 3, 6, 2)
    k = torch.randn(4, 3, 5, 2, generator=torch.Generator().manual_seed(1))
    for layer in range(2):
        cache.update(layer, k + layer, -k)
    cache.advance(5)
    before_keys, before_values = cache.keys.clone(), cache.values.clone()
    cache.reorder(torch.tensor(index))
    torch.testing.assert_close(cache.keys[:, :, :, :5], before_keys[:, index, :, :5])
    torch.testing.assert_close(cache.values[:, :, :, :5], before_values[:, index, :, :5])
    # past the cache's length nothing is touched (those positions are not the rows' yet)
    assert torch.equal(cache.keys[:, :, :, 5:].nan_to_num(), before_keys[:, :, :, 5:].nan_to_num())


def test_cache_refuses_to_overflow():
    cache = KVCache(1, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="holds 2 positions"):
        cache.update(0, torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))


def test_past_the_context_the_window_shifts_by_half():
    # block_size 32 and a 30-token prompt: tokens 30-32 see everything before them; then the cache is
    # full, the newest 16 tokens are recomputed, and later tokens see from token 17 on
    model = tiny_gpt(std=0.3)
    prompt = torch.randint(0, 61, (30,), generator=torch.Generator().manual_seed(2)).tolist()
    (result,) = generate(model, [prompt], GenerationConfig(strategy="greedy", max_new_tokens=6))[0]
    ids = prompt + result.ids
    first_seen = {30: 0, 31: 0, 32: 0, 33: 17, 34: 17, 35: 17}
    with torch.no_grad():
        for t, start in first_seen.items():
            assert model(torch.tensor([ids[start:t]])).logits[0, -1].argmax().item() == ids[t]

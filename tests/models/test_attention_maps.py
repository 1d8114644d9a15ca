"""Attention maps: causal rows summing to 1, clear errors for layers and heads that do not exist, a PNG."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.models.attention_maps import attention_weights, draw_attention, select_maps
from lmforge.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=24, n_layer=3, n_head=2, n_embd=16)).eval()


def test_weights_are_causal_rows_summing_to_one(model):
    weights = attention_weights(model, list(range(12)))
    assert weights.shape == (3, 2, 12, 12)
    future = torch.triu(torch.ones(12, 12, dtype=torch.bool), diagonal=1)
    assert torch.all(weights[:, :, future] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 12))
    assert torch.all(weights[:, :, 0, 0] == 1)  # the first token can only look at itself


def test_select_maps_names_the_valid_range(model):
    weights = attention_weights(model, [1, 2, 3])
    assert select_maps(weights, None, None, every=False) == [(0, 0)]
    assert select_maps(weights, 2, 1, every=False) == [(2, 1)]
    assert len(select_maps(weights, None, None, every=True)) == 6
    with pytest.raises(UserInputError, match=r"--layer 3 does not exist: this model has layers 0\.\.2"):
        select_maps(weights, 3, 0, every=False)
    with pytest.raises(UserInputError, match=r"--head -1 does not exist: this model has heads 0\.\.1"):
        select_maps(weights, 0, -1, every=False)
    with pytest.raises(UserInputError, match="leave out --layer"):
        select_maps(weights, 1, None, every=True)


@pytest.mark.parametrize("every", [False, True])
def test_draws_a_valid_png(model, tmp_path, every):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    labels = ["<|endoftext|>", "T", "o", "␣", "b", "e", r"\$"]
    weights = attention_weights(model, list(range(len(labels))))
    path = tmp_path / "attention.png"
    draw_attention(weights, labels, select_maps(weights, None, None, every), path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).ndim == 3
    assert [p.name for p in tmp_path.iterdir()] == ["attention.png"]  # no temporary file left

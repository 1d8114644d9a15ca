"""FLOPs per token counted from the modules (models/flops.py) against PyTorch's own FLOP counter
(torch.utils.flop_counter, which counts the matmuls a forward and backward pass really run)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmforge.models.flops import TRAINING_MULTIPLIER, attention_flops_per_token, forward_flops_per_token
from lmforge.models.registry import build_model

T = 8  # tokens of the one sequence measured


def measured(model: torch.nn.Module, backward: bool = False) -> int:
    ids = torch.randint(0, model.config.vocab_size, (1, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # attention as two bmm
        out = model(ids, labels=ids)
        if backward:
            out.loss.backward()
    return counter.get_total_flops()


SMALL = {"vocab_size": 11, "block_size": T, "n_layer": 2, "n_head": 2, "n_embd": 8}


@pytest.mark.parametrize(
    "family,config",
    [
        ("window", {"vocab_size": 11, "context": 3, "n_embd": 4, "hidden_size": 5, "block_size": T}),
        ("rnn", {"vocab_size": 11, "n_embd": 4, "hidden_size": 6, "n_layer": 2, "block_size": T}),
    ],
)
def test_models_without_attention_count_what_pytorch_counts(family, config):
    torch.manual_seed(0)
    model = build_model(family, config)
    assert attention_flops_per_token(model, T) == 0
    assert forward_flops_per_token(model, T) * T == measured(model)


def test_an_lstm_counts_four_gates_of_input_and_recurrent_matmuls():
    # nn.LSTM runs as one fused op that the counter does not see: a hand count instead
    model = build_model(
        "lstm", {"vocab_size": 11, "n_embd": 4, "hidden_size": 6, "n_layer": 2, "block_size": T}
    )
    gates = 2 * 4 * 6 * (4 + 6) + 2 * 4 * 6 * (
        6 + 6
    )  # layer 1 reads the 4-dim embedding, layer 2 the 6-dim state
    assert forward_flops_per_token(model, T) == gates + 2 * 6 * 11


def test_bidirectional_attention_counts_every_key_as_the_math_kernel_does():
    torch.manual_seed(0)
    model = build_model("bert", {**SMALL, "dropout": 0.0}).eval()
    # the counter sees the full T x T scores; a BERT query does look at all T keys. The pooler
    # serves classification, once per sequence; the language-model forward does not run it.
    pooler = 2 * 8 * 8
    assert (forward_flops_per_token(model, T) - pooler) * T == measured(model)
    assert attention_flops_per_token(model, T) == 2 * 4 * T * 8  # layers x 4 x context x width


def test_causal_attention_counts_half_the_scores_the_math_kernel_computes():
    torch.manual_seed(0)
    model = build_model("gpt", SMALL).eval()
    linears = forward_flops_per_token(model, T) - attention_flops_per_token(model, T)
    full_scores = measured(model) - linears * T  # the kernel computes the masked half too
    # Kaplan et al.: a causal query sees context/2 keys on average: 2 x n_layer x context x width
    assert attention_flops_per_token(model, T) == 2 * 2 * T * 8
    assert attention_flops_per_token(model, T) * T * 2 == full_scores


def test_training_is_three_times_the_forward_pass():
    torch.manual_seed(0)
    model = build_model("gpt", SMALL)
    assert measured(model, backward=True) == TRAINING_MULTIPLIER * measured(model)

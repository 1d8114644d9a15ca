"""The fixed-window LM against Bengio et al.'s equation computed by hand."""

from __future__ import annotations

import pytest
import torch

from lmforge.models.window import FixedWindowLM, WindowConfig


def tiny(direct: bool = True, seed: int = 0, context: int = 3) -> FixedWindowLM:
    torch.manual_seed(seed)
    model = FixedWindowLM(
        WindowConfig(vocab_size=6, context=context, n_embd=2, hidden_size=4, direct=direct, block_size=8)
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)  # the direct connections too (they start at zero)
    return model


@pytest.mark.parametrize("direct", [True, False])
def test_equals_the_hand_computation(direct):
    model = tiny(direct)
    C = model.embedding.weight  # (V, m)
    H, d = model.hidden.weight, model.hidden.bias
    U, b = model.output.weight, model.output.bias
    tokens = [1, 2, 3, 4, 5]
    logits = model(torch.tensor([tokens])).logits[0]  # (T, V)
    for t in range(len(tokens)):
        # the 3 tokens ending at t, oldest first; before the start of the text: zero vectors
        parts = [C[tokens[j]] if j >= 0 else torch.zeros(2) for j in (t - 2, t - 1, t)]
        x = torch.cat(parts)  # (n * m,) = (6,)
        y = b + U @ torch.tanh(d + H @ x)  # Bengio et al. 2003, eq. 1
        if direct:
            y = y + model.direct.weight @ x  # + W x
        torch.testing.assert_close(logits[t], y, rtol=0, atol=1e-6)


def test_loss_is_the_cross_entropy_of_the_aligned_labels():
    model = tiny()
    x, y = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 3, -100, 5]])
    out = model(x, labels=y, reduction="sum")
    log_probs = out.logits[0].log_softmax(-1)
    expected = -(log_probs[0, 2] + log_probs[1, 3] + log_probs[3, 5])
    torch.testing.assert_close(out.loss, expected)


def test_a_prediction_sees_only_the_last_n_tokens():
    model = tiny(context=3)
    a, b = torch.tensor([[1, 1, 1, 2, 3, 4]]), torch.tensor([[5, 0, 2, 2, 3, 4]])
    # position 5 sees (2, 3, 4) in both rows, whatever came before; position 2 sees different tokens
    torch.testing.assert_close(model(a).logits[0, 5], model(b).logits[0, 5], rtol=0, atol=0)
    assert not torch.allclose(model(a).logits[0, 2], model(b).logits[0, 2])


def test_padding_reads_as_the_start_of_the_text():
    model = tiny()
    alone = model(torch.tensor([[4, 5]])).logits
    padded = model(torch.tensor([[4, 4, 4, 5]]), attention_mask=torch.tensor([[0, 0, 1, 1]])).logits
    torch.testing.assert_close(padded[:, 2:], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_last_logits_only_equals_the_last_position(length):
    model = tiny()
    x = torch.arange(length)[None] % 6
    torch.testing.assert_close(
        model(x, last_logits_only=True).logits[:, -1], model(x).logits[:, -1], rtol=0, atol=1e-6
    )


def test_num_parameters_counts_the_embedding_once():
    model = tiny()
    assert model.num_parameters() - model.num_parameters(exclude_embeddings=True) == 6 * 2

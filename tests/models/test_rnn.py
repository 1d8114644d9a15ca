"""Recurrent LMs against the lecture's equations and PyTorch's layers; state carrying and truncation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.models.registry import build_model
from lmforge.models.rnn import ElmanConfig, ElmanRNN, RNNConfig
from lmforge.train.objectives import CarriedStateLoss

VOCAB = 13
FAMILIES = ["rnn", "lstm", "gru"]


def tiny(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {"vocab_size": VOCAB, "n_embd": 5, "hidden_size": 7, "n_layer": 2, "block_size": 8, **overrides}
    model = build_model(family, config).eval()
    with torch.no_grad():  # every weight random, biases included, so a dropped term shows
        for param in model.parameters():
            param.normal_(0.0, 0.4)
    return model


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("recurrence", ["fused", "loop"])
@pytest.mark.parametrize("n_layer", [1, 2])
def test_elman_matches_the_lecture_equations(activation, recurrence, n_layer):
    model = tiny("rnn", n_layer=n_layer, activation=activation, recurrence=recurrence).double()
    x_ids = ids(3, 9)
    log_probs = model(x_ids).logits.log_softmax(-1)  # (B, T, V)
    sigma = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[activation]
    rnn, C = model.recurrence, model.embedding.weight
    W_yh, b_y = model.head.weight, model.head.bias
    for b in range(3):
        h = [torch.zeros(7, dtype=torch.float64) for _ in range(n_layer)]  # h_0 = 0
        for t in range(9):
            x_t = C[x_ids[b, t]]
            for k in range(n_layer):
                W_ax, W_ah = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                b_a = getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}")
                a_t = W_ah @ h[k] + W_ax @ x_t + b_a  # a_t = W_ah h_{t-1} + W_ax x_t + b_a
                h[k] = sigma(a_t)  # h_t = sigma(a_t)
                x_t = h[k]  # the next layer's input
            y_t = torch.softmax(W_yh @ h[-1] + b_y, dim=-1)  # y_t = softmax(W_yh h_t + b_y)
            torch.testing.assert_close(log_probs[b, t], y_t.log(), rtol=0, atol=1e-6)


def test_fused_nn_rnn_equals_the_loop_with_gradients():
    fused = tiny("rnn", recurrence="fused")
    loop = ElmanRNN(ElmanConfig(**{**fused.config.to_dict(), "recurrence": "loop"})).eval()
    loop.load_state_dict(fused.state_dict())
    x_ids, y_ids = ids(4, 10), ids(4, 10, seed=2)
    out_fused, out_loop = fused(x_ids, labels=y_ids), loop(x_ids, labels=y_ids)
    torch.testing.assert_close(out_fused.logits, out_loop.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_fused.state[0], out_loop.state[0], rtol=0, atol=1e-5)
    out_fused.loss.backward()
    out_loop.loss.backward()
    for (name, a), b in zip(fused.named_parameters(), loop.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_lstm_and_gru_equal_a_manual_composition_of_torch_layers(family):
    model = tiny(family)
    layer_class = torch.nn.LSTM if family == "lstm" else torch.nn.GRU
    reference = layer_class(5, 7, num_layers=2, batch_first=True)
    reference.load_state_dict(model.recurrence.state_dict())
    x_ids = ids(3, 11)
    h, _ = reference(F.embedding(x_ids, model.embedding.weight))  # (B, T, H)
    expected = F.linear(h, model.head.weight, model.head.bias)
    torch.testing.assert_close(model(x_ids).logits, expected, rtol=0, atol=1e-6)


def window_batch(x_ids, y_ids=None, carry=(False, False)):
    batch = {"input_ids": x_ids, "labels": x_ids if y_ids is None else y_ids}
    return {**batch, "carry_state": torch.tensor(carry)}


@pytest.mark.parametrize("family", FAMILIES)
def test_two_carried_windows_equal_one_long_window(family):
    model, objective = tiny(family, seed=3), CarriedStateLoss()
    x_ids, y_ids = ids(2, 16), ids(2, 16, seed=4)
    long = model(x_ids, labels=y_ids, reduction="sum")
    first, _ = objective(model, window_batch(x_ids[:, :7], y_ids[:, :7], (False, False)))
    second, _ = objective(model, window_batch(x_ids[:, 7:], y_ids[:, 7:], (True, True)))
    torch.testing.assert_close(first + second, long.loss, rtol=1e-6, atol=1e-5)
    carried = objective._start(torch.tensor([True, True]), x_ids)
    torch.testing.assert_close(carried[0], long.state[0], rtol=0, atol=1e-5)
    # a row whose carry_state is False starts from zeros: the window alone
    objective(model, window_batch(x_ids[:, :7], carry=(False, False)))
    start = objective._start(torch.tensor([True, False]), x_ids)
    reset = model(x_ids[:, 7:], state=start)
    torch.testing.assert_close(reset.logits[1], model(x_ids[1:, 7:]).logits[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_stop_at_the_start_of_the_window(family):
    # untied (n_embd != hidden_size): embedding rows get gradient only from the inputs that use them
    model, objective = tiny(family, seed=5), CarriedStateLoss()
    early, late = torch.arange(0, 6).repeat(2, 1), torch.arange(6, 12).repeat(2, 1)  # disjoint tokens
    objective(model, window_batch(early, carry=(False, False)))
    carried = tuple(s.clone() for s in objective.state)
    assert not any(s.requires_grad for s in objective.state)
    loss, _ = objective(model, window_batch(late, carry=(True, True)))
    loss.backward()
    truncated = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert truncated["embedding.weight"][:6].abs().max() == 0  # nothing reached window 1's inputs
    assert truncated["embedding.weight"][6:12].abs().max() > 0
    # the gradient is that of window 2 alone from a constant initial state
    model.zero_grad()
    model(late, labels=late, state=carried, reduction="sum").loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, truncated[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_calls_without_the_objective_leave_the_carried_state(family):
    model, objective = tiny(family), CarriedStateLoss()
    objective(model, window_batch(ids(2, 5)))
    stored = objective.state
    model(ids(3, 4))  # evaluation, scoring or decoding in between
    assert objective.state is stored


@pytest.mark.parametrize("family", FAMILIES)
def test_carried_state_round_trips_through_a_checkpoint(family):
    model, objective = tiny(family), CarriedStateLoss()
    objective(model, window_batch(ids(2, 5)))
    restored = CarriedStateLoss()
    restored.load_state_dict(objective.state_dict())
    for saved, loaded in zip(objective.state, restored.state):
        assert torch.equal(saved, loaded)


@pytest.mark.parametrize(
    "family,overrides", [("rnn", {}), ("rnn", {"recurrence": "loop"}), ("lstm", {}), ("gru", {})]
)
def test_left_padding_leaves_the_state_unchanged(family, overrides):
    model = tiny(family, **overrides)
    row = ids(1, 5)
    padded = torch.cat([torch.full((1, 3), 4), row], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    alone, masked = model(row), model(padded, attention_mask=mask)
    torch.testing.assert_close(masked.logits[:, 3:], alone.logits, rtol=0, atol=1e-6)
    for a, b in zip(masked.state, alone.state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_ties_the_head_only_when_the_sizes_match():
    tied = build_model("lstm", {"vocab_size": VOCAB, "n_embd": 8, "hidden_size": 8})
    assert tied.head.weight is tied.embedding.weight and tied.config.tie_embeddings
    untied = build_model("lstm", {"vocab_size": VOCAB, "n_embd": 4, "hidden_size": 8})
    assert untied.head.weight is not untied.embedding.weight
    assert untied.num_parameters() - untied.num_parameters(exclude_embeddings=True) == VOCAB * (4 + 8)
    with pytest.raises(ValueError, match="n_embd == hidden_size"):
        RNNConfig(n_embd=4, hidden_size=8, tie_embeddings=True)


def test_bf16_autocast_trains_and_carries():
    model = tiny("lstm").train()
    x_ids = ids(2, 6)
    objective = CarriedStateLoss()
    objective(model, window_batch(x_ids, carry=(False, False)))
    fp32_loss, _ = objective(model, window_batch(x_ids, carry=(True, True)))
    objective = CarriedStateLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        objective(model, window_batch(x_ids, carry=(False, False)))
        loss, _ = objective(model, window_batch(x_ids, carry=(True, True)))
    loss.backward()
    # bf16 rounds activations to 8 bits of mantissa: the loss agrees with fp32 to a few parts in 1000
    torch.testing.assert_close(loss.float(), fp32_loss.detach(), rtol=1e-2, atol=1e-2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_recurrence_runs_on_every_cpu(family, cpu_capability):
    """Where the layer has no bf16 kernel (forced: every layer) the recurrence runs in fp32 inside
    autocast, so its output is exactly the plain fp32 recurrence of the same embeddings."""
    from lmforge.hardware import bf16_recurrent_works

    model = tiny(family).train()
    x_ids = ids(2, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x_ids, labels=x_ids)
        h, _ = model.recur(model.embedding(x_ids), model.initial_state(2, torch.zeros(1)), None)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.recurrence.weight_hh_l0.grad is not None
    if not bf16_recurrent_works(type(model.recurrence)):
        assert h.dtype == torch.float32
        fp32_h, _ = model.recur(model.embedding(x_ids), model.initial_state(2, torch.zeros(1)), None)
        torch.testing.assert_close(h, fp32_h, rtol=0, atol=0)
    if cpu_capability == "avx2":
        assert not bf16_recurrent_works(type(model.recurrence))

"""oneDNN linear layers against PyTorch's own nn.Linear: same outputs and gradients."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.train.onednn_linear import OneDNNLinear, onednn_available, use_onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN")


@pytest.mark.parametrize("bias", [True, False])
def test_outputs_and_gradients_equal_nn_linear(bias):
    torch.manual_seed(0)
    plain = nn.Linear(48, 80, bias=bias)
    fast = copy.deepcopy(plain)
    assert use_onednn_linears(fast) == 1 and type(fast) is OneDNNLinear
    x = torch.randn(3, 7, 48, requires_grad=True)
    x_fast = x.detach().clone().requires_grad_()
    grad = torch.randn(3, 7, 80)
    plain(x).backward(grad)
    out = fast(x_fast)
    out.backward(grad)
    torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_fast.grad, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-4)
    if bias:
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)


def test_switching_a_gpt_keeps_ties_state_dict_and_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32))
    reference = copy.deepcopy(model)
    switched = use_onednn_linears(model)
    assert switched == 2 * 4 + 1  # qkv, attention out, MLP in and out per block; the head
    assert model.lm_head.weight is model.wte.weight
    assert model.state_dict().keys() == reference.state_dict().keys()
    ids = torch.randint(0, 61, (2, 16))
    loss, expected = model(ids, labels=ids).loss, reference(ids, labels=ids).loss
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(model.wte.weight.grad, reference.wte.weight.grad, rtol=1e-4, atol=1e-5)


def test_autocast_falls_back_to_pytorch():
    layer = nn.Linear(8, 4)
    use_onednn_linears(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16


def test_training_transforms_switch_linears_only_where_the_race_says_so(monkeypatch):
    """Both outcomes of the race train the same model to the same losses (MKL is the fallback)."""
    from lmforge.train import onednn_linear
    from lmforge.train import trainer as trainer_module
    from lmforge.train.transforms import apply_transforms, training_transforms
    from tests.train.test_trainer import WindowSource, config, corpus, small_gpt

    losses = {}
    for pays_off in (True, False):
        monkeypatch.setattr(onednn_linear, "onednn_linears_pay_off", lambda device, model, p=pays_off: p)
        model = small_gpt()
        transforms = training_transforms(
            device=torch.device("cpu"), precision="fp32", compile=False, model=model
        )
        model = apply_transforms(model, transforms)
        trainer = trainer_module.Trainer(
            model, config(max_steps=5), WindowSource(corpus(), 4, 16), progress=False
        )
        kinds = {type(m) for m in model.modules() if isinstance(m, nn.Linear)}
        assert kinds == ({OneDNNLinear} if pays_off else {nn.Linear})
        losses[pays_off] = trainer.fit().last_train_loss
    assert math.isclose(losses[True], losses[False], rel_tol=1e-4)


def test_onednn_race_is_cached_per_model_shapes(tmp_path, monkeypatch):
    from lmforge import hardware
    from lmforge.train.onednn_linear import onednn_linears_pay_off

    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    model = GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=1, n_head=4, n_embd=32))
    answer = onednn_linears_pay_off("cpu", model)
    entries = json.loads((tmp_path / "hardware.json").read_text())
    (key,) = entries
    assert "(32, 96)" in key and entries[key]["fast"] is answer
    assert onednn_linears_pay_off("meta", model) is False  # not a CPU: nothing to race

"""Activation checkpointing (``transforms.activation_checkpointing``): the same loss and gradients as
keeping every activation, the same parameter names and ties, refused for models without blocks,
and, measured, a lower peak of memory in a training step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.models.bert import BERT, BERTConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.registry import build_model, preset_config
from lmforge.resources import training_estimate
from lmforge.train.transforms import activation_checkpointing, tied_parameters, training_transforms


def gpt(dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=32, dropout=dropout))


def bert(num_labels: int = 0) -> BERT:
    torch.manual_seed(0)
    config = BERTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=32, dropout=0.1)
    return BERT(BERTConfig(**{**config.__dict__, "num_labels": num_labels}))


def loss_and_gradients(model: torch.nn.Module, step) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    torch.manual_seed(123)  # the same dropout masks in both runs
    loss = step(model)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_step(make, step) -> None:
    plain_loss, plain = loss_and_gradients(make(), step)
    model = make()
    names = [name for name, _ in model.named_parameters()]
    ties = tied_parameters(model)
    checkpointed = activation_checkpointing(model)
    assert [name for name, _ in checkpointed.named_parameters()] == names  # no new key prefixes
    assert tied_parameters(checkpointed) == ties and ties
    assert all(block.checkpointed for block in checkpointed.h)
    loss, gradients = loss_and_gradients(checkpointed, step)
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    assert gradients.keys() == plain.keys()
    assert {name for name in names if name.startswith("h.")} <= gradients.keys()  # every block's
    for name, grad in gradients.items():
        torch.testing.assert_close(grad, plain[name], rtol=0, atol=1e-6, msg=name)


IDS = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))


def test_gpt_gives_the_same_loss_and_gradients_with_dropout():
    assert_same_step(lambda: gpt(dropout=0.1), lambda m: m(IDS[:, :-1], labels=IDS[:, 1:]).loss)


def test_bert_masked_lm_gives_the_same_loss_and_gradients():
    labels = torch.where(IDS % 3 == 0, IDS, -100)
    mask = torch.ones_like(IDS)
    mask[0, 12:] = 0  # a padded row: the attention mask goes through the recomputation too
    assert_same_step(bert, lambda m: m(IDS, attention_mask=mask, labels=labels).loss)


def test_bert_classifier_through_the_last_blocks_one_position_path():
    targets = torch.tensor([0, 1, 2, 1])
    step = lambda m: torch.nn.functional.cross_entropy(m.sequence_logits(IDS), targets)  # noqa: E731
    assert_same_step(lambda: bert(num_labels=3), step)


def test_only_a_forward_that_records_gradients_without_a_cache_is_checkpointed(monkeypatch):
    # filling a key-value cache inside a recomputed block would write it twice; without gradients
    # there is no backward to recompute for
    import torch.utils.checkpoint as checkpoint_module

    from lmforge.generate.cache import KVCache

    calls = []
    real = checkpoint_module.checkpoint
    monkeypatch.setattr(checkpoint_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, plain = activation_checkpointing(gpt()), gpt()
    model(IDS).logits.sum().backward()
    assert len(calls) == 3  # one per block
    with torch.no_grad():
        model(IDS)
    cache = KVCache(3, 4, 2, 16, 16)
    decoded = torch.cat(
        [model(IDS[:, :10], kv_cache=cache).logits, model(IDS[:, 10:12], kv_cache=cache).logits], 1
    )
    assert len(calls) == 3 and cache.length == 12
    torch.testing.assert_close(decoded, plain(IDS[:, :12]).logits, rtol=1e-5, atol=1e-5)


def test_models_without_blocks_are_refused_with_one_line():
    family, config = preset_config("lstm", vocab_size=50)
    with pytest.raises(UserInputError, match="--activation-checkpointing .* LSTMLM model has none"):
        activation_checkpointing(build_model(family, config))


def test_it_is_named_in_the_transforms_and_goes_first():
    names = [
        t.name
        for t in training_transforms(
            device=torch.device("cpu"), precision="fp32", compile=True, checkpointing=True
        )
    ]
    assert names == ["activation-checkpointing", "compile"]


def test_the_memory_check_counts_one_layer_plus_each_layers_input():
    model = gpt()
    sizes = dict(batch_size=4, block_size=16, eval_batches=1)
    full = training_estimate(model, **sizes).parts["activations"]
    kept = training_estimate(model, **sizes, checkpointing=True).parts["activations"]
    tokens_width_bytes = 4 * 16 * 32 * 4
    assert full == tokens_width_bytes * 3 * 8  # 3 layers x ACTIVATION_FLOATS
    assert kept == tokens_width_bytes * (3 + 8)  # each layer's input, one layer's inside


# The measured property: peak resident memory of one forward and backward, in a fresh process each
# (VmHWM: this process's peak RSS; ru_maxrss would carry over the parent's from before exec), less the memory held just before the forward.
_PEAK = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from lmforge.models.gpt import GPT, GPTConfig
    from lmforge.train.transforms import activation_checkpointing
    torch.set_num_threads(1)
    model = GPT(GPTConfig(vocab_size=64, block_size=256, n_layer=16, n_head=4, n_embd=64))
    if sys.argv[1] == "on":
        activation_checkpointing(model)
    ids = torch.randint(0, 64, (16, 257))
    model(ids[:2, :-1], labels=ids[:2, 1:]).loss.backward()  # allocator and autograd warmed up
    model.zero_grad(set_to_none=False)
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    before = resident()
    model(ids[:, :-1], labels=ids[:, 1:]).loss.backward()
    peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print(json.dumps({"before": before, "peak": peak}))
    """
)


def peak_growth(mode: str) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed blocks go back: RSS follows the tensors
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, mode], capture_output=True, text=True, check=True, env=env
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["peak"] - measured["before"]


@pytest.mark.slow  # about 20 s of training steps at a size where the memory shows
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_checkpointing_lowers_the_measured_peak_memory_of_a_training_step():
    # 16 layers of 16 x 256 tokens x 64 wide: about 20 MiB of activations per layer kept without
    # checkpointing, about 1 MiB per layer (its input) plus one layer's 20 MiB with it
    plain, checkpointed = peak_growth("off"), peak_growth("on")
    assert plain > 150 * 2**20
    assert checkpointed < plain / 3  # measured here: 264 MiB -> 37 MiB


@pytest.mark.slow
def test_compiled_checkpointed_blocks_give_the_eager_gradients():
    from lmforge.train.transforms import compiled

    step = lambda m: m(IDS[:, :-1], labels=IDS[:, 1:]).loss  # noqa: E731
    plain_loss, plain = loss_and_gradients(gpt(), step)
    model = activation_checkpointing(gpt())
    wrapped = compiled(model)
    loss, _ = loss_and_gradients(wrapped, step)
    gradients = {name: p.grad for name, p in model.named_parameters()}
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in plain.items():
        torch.testing.assert_close(gradients[name], grad, rtol=1e-4, atol=1e-5, msg=name)

"""build_sketch: the model's shapes on the meta device, built without running nn.init's fills,
which are put back afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from lmforge.models.registry import build_model, build_sketch, preset_config


@pytest.mark.parametrize(
    "preset", ["gpt-nano", "llama-nano", "bert-nano", "seq2seq-nano", "lstm", "rnn-attn", "window"]
)
def test_the_sketch_has_the_models_shapes_on_the_meta_device(preset):
    family, config = preset_config(preset, vocab_size=50)
    sketch, model = build_sketch(family, config), build_model(family, config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert {name: tuple(p.shape) for name, p in sketch.named_parameters()} == shapes
    assert {p.device.type for p in sketch.parameters()} == {"meta"}


def test_init_fills_are_restored_and_fill_again():
    before = nn.init.normal_
    family, config = preset_config("gpt-nano", vocab_size=50)
    build_sketch(family, config)
    assert nn.init.normal_ is before
    weight = torch.zeros(64, 64)
    nn.init.normal_(weight, std=0.02)
    assert 0.015 < weight.std().item() < 0.025


def test_the_sketch_does_not_import_dynamo():
    """torch runs meta normal_ and arange through reference code that imports torch._dynamo."""
    code = (
        "import sys; from lmforge.models.registry import build_sketch, preset_config; "
        "build_sketch(*preset_config('gpt-nano', vocab_size=50)); print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

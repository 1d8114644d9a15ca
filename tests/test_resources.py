"""The memory estimates against hand-counted bytes, and the machine's memory against /proc/meminfo."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lmforge.errors import UserInputError
from lmforge.resources import (
    MEMORY_ENV,
    Estimate,
    check_fits,
    evaluation_estimate,
    generation_estimate,
    gib,
    machine_memory,
    parse_size,
    training_estimate,
)


class Stub(nn.Module):
    """50 parameters, a 100-float buffer (400 bytes), width 8, 2 layers, 5 ids."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(n_embd=8, n_layer=2, vocab_size=5)
        self.linear = nn.Linear(10, 5, bias=False)
        self.register_buffer("table", torch.zeros(100))


def test_training_estimate_by_hand():
    estimate = training_estimate(Stub(), batch_size=3, block_size=4, eval_batches=2)
    # 12 tokens a batch: 50 x 16 (weight, gradient, two AdamW moments); the 400-byte buffer;
    # 12 x width 8 x 2 layers x 8 floats x 4 bytes; logits and gradient 2 x 12 x 5 x 4;
    # x, y and the gathered rows 3 x 12 x 8 plus two evaluation batches of x and y 2 x 2 x 12 x 8
    assert estimate.parts == {
        "weights, gradients and optimizer state": 800,
        "the model's buffers (position tables)": 400,
        "activations": 6144,
        "logits and their gradient": 480,
        "token batches": 288 + 384,
    }
    assert estimate.total == 8496
    half_sgd = training_estimate(
        Stub(), batch_size=3, block_size=4, eval_batches=2, optimizer="sgd", half_precision=True
    )
    assert half_sgd.total == 8496 - 200 - 3072  # 12 bytes a parameter; 2-byte activations


def test_evaluation_and_generation_estimates_by_hand():
    evaluation = evaluation_estimate(Stub(), batch_size=3, block_size=4)
    # weights 50 x 4 + 400; one layer's 4 numbers per unit 12 x 8 x 4 x 4; 2 x 12 x 5 x 4; 3 x 12 x 8
    assert evaluation.total == 600 + 1536 + 480 + 288
    generation = generation_estimate(
        Stub(), rows=2, prompt_length=3, new_tokens=5, cache_bytes_per_position=16, context=6
    )
    # cache: 2 rows x min(8, 6) positions x 16; ids: 2 x (2 copies x 8 positions x 8 + 5 x (4 + 8));
    # logits 3 x 2 x 5 x 4
    assert generation.parts["the key-value cache"] == 192
    assert generation.parts["token ids and log-probabilities"] == 376
    assert generation.total == 600 + 192 + 376 + 120


def test_a_meta_model_has_the_sizes_of_the_real_one():
    from lmforge.models.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_encoding="rope")
    with torch.device("meta"):
        sketch = GPT(config)
    real = GPT(config)
    assert training_estimate(sketch, batch_size=2, block_size=16, eval_batches=1).parts == (
        training_estimate(real, batch_size=2, block_size=16, eval_batches=1).parts
    )


@pytest.mark.parametrize(
    "text, expected",
    [("8GiB", 8 * 1024**3), ("8G", 8 * 1024**3), ("512 MiB", 512 * 1024**2), ("1000", 1000), ("1e9", 10**9)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_a_bad_size_is_one_line(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(UserInputError, match="LMFORGE_MEMORY='lots' is not a size"):
        machine_memory()


def test_machine_memory_is_memtotal(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    except OSError:
        pytest.skip("no /proc/meminfo")
    found, where = machine_memory("cpu")
    assert where == "this machine"
    # a container's memory.max may lower it, never raise it
    assert 0 < found <= total
    if not any(
        os.path.exists(p)
        for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    ):
        assert found == pytest.approx(total, rel=0.01)


def test_check_fits_names_flags_parts_and_limit(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "1KiB")
    estimate = Estimate({"weights": 2048, "cache": 1024})
    with pytest.raises(UserInputError) as error:
        check_fits(estimate, flags="--x 9", what="the job", device="cpu", hint="lower --x")
    assert str(error.value) == (
        "--x 9 needs about 3.0 KiB for the job (most of it weights: 2.0 KiB); this machine has 1.0 KiB: lower --x"
    )
    monkeypatch.setenv(MEMORY_ENV, "3KiB")
    check_fits(estimate, flags="--x 9", what="the job", device="cpu", hint="lower --x")  # exactly fits


def test_gib_picks_a_readable_unit():
    assert [gib(n) for n in (100, 2048, 3 * 1024**2, 1024**4)] == [
        "100 bytes",
        "2.0 KiB",
        "3.0 MiB",
        "1,024.0 GiB",
    ]

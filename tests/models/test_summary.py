"""The module tree of ``lmforge inspect`` (models/summary.py): its rows add up to the model's own
counts, for every preset, and a 175B-parameter model is shown without memory."""

from __future__ import annotations

import pytest
import torch

from lmforge.models.flops import forward_flops_per_token
from lmforge.models.registry import PRESETS, build_model, preset_config
from lmforge.models.summary import module_rows


def on_meta(preset: str) -> torch.nn.Module:
    family, config = preset_config(preset)
    with torch.device("meta"):
        return build_model(family, config)


@pytest.mark.parametrize("preset", [name for name in PRESETS if name != "gpt3-175b"])
def test_the_rows_add_up_to_the_models_own_counts(preset):
    model = on_meta(preset)
    context = model.config.block_size
    rows = module_rows(model, context, depth=2)
    root, children = rows[0], rows[1:]
    assert root["parameters"] == model.num_parameters()  # tied tables once
    assert root["flops_per_token"] == forward_flops_per_token(model, context)
    assert sum(row["parameters"] for row in children) == root["parameters"]
    assert sum(row["flops_per_token"] for row in children) == root["flops_per_token"]


def test_a_stack_of_blocks_is_one_row_per_block_and_a_tied_head_counts_nothing():
    rows = {row["path"]: row for row in module_rows(on_meta("gpt2"), 1024, depth=4)}
    assert rows["h"]["shape"] == "12 x Block" and rows["h.0-11"]["shape"] == "Block (each)"
    assert rows["h"]["parameters"] == 12 * rows["h.0-11"]["parameters"] == 12 * 7_087_872
    assert rows["h.0-11.attn"]["parameters"] == 768 * 3 * 768 + 3 * 768 + 768 * 768 + 768
    assert rows["lm_head"]["shape"] == "Linear(768 -> 50257), tied" and rows["lm_head"]["parameters"] == 0
    assert rows["lm_head"]["flops_per_token"] == 2 * 768 * 50257  # still a matmul
    assert rows["wte"]["parameters"] == 50257 * 768 and "drop" not in rows  # dropout counts nothing
    assert max(row["depth"] for row in rows.values()) == 3


def test_depth_zero_shows_no_rows():
    assert module_rows(on_meta("lstm"), 64, depth=0) == []


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_gpt3_175b_is_inspected_without_its_weights():
    from lmforge.estimate import inspect_model

    before = _resident_bytes()
    summary = inspect_model("gpt3-175b", depth=3)
    assert summary["params"] == 174_604_259_328
    assert _resident_bytes() - before < 500e6  # its fp32 weights would be 698 GB
    assert summary["weight_memory_gb"] == pytest.approx(
        {"fp32": 698.4, "bf16": 349.2, "int8": 174.6}, rel=1e-3
    )
    forward = summary["forward_flops_per_token"]
    assert summary["training_flops_per_token"] == 3 * forward
    assert summary["attention_flops_per_token"] == 2 * 96 * 2048 * 12288  # Kaplan et al.: 2 n_layer n_ctx d

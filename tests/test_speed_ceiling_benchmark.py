"""benchmarks/speed_ceiling.py: ops sorted into matrix products, attention and the rest; the
ceiling computed by hand; and one real comparison profiled end to end (no assertion on speed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("speed_ceiling")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize(
    "op, kind",
    [
        ("aten::mm", "matmul"),
        ("aten::addmm", "matmul"),
        ("aten::bmm", "matmul"),
        ("mkldnn::_linear_pointwise", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
        ("aten::matmul", "rest"),  # calls mm, whose own time is counted there
        ("aten::gelu_backward", "rest"),
        ("aten::_fused_adamw_", "rest"),
        ("AddmmBackward0", "rest"),
    ],
)
def test_ops_are_sorted_by_name(bench, op, kind):
    assert bench.kind_of(op) == kind


def test_shares_and_ceiling_by_hand(bench):
    times = [
        ("aten::mm", 50.0),
        ("aten::addmm", 20.0),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", 10.0),
    ]
    times += [("aten::gelu", 15.0), ("aten::add", 5.0)]
    shares = bench.shares(times)
    assert shares == pytest.approx({"matmul": 0.7, "attention": 0.1, "rest": 0.2})
    # transformers 120 ms, lmforge 100 ms of which 80 ms matmul + attention: 120 / 80
    assert bench.ceiling(120.0, 100.0, shares) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no time"):
        bench.shares([])


@pytest.mark.slow  # builds GPT-2 through transformers and profiles two steps: ~15 s on 2 cores
def test_a_comparison_is_timed_and_profiled(bench):
    result = bench.measure("gpt-small", rounds=1, steps=2)
    assert set(result["step_ms"]) == {"lmforge", "hf"} and all(ms > 0 for ms in result["step_ms"].values())
    for side in ("lmforge", "hf"):
        assert sum(result["shares"][side].values()) == pytest.approx(1.0)
        assert result["shares"][side]["matmul"] > 0.1  # a Transformer step is mostly matmuls
        assert result["shares"][side]["attention"] > 0  # both run SDPA's flash kernel
    assert result["ratio"] == pytest.approx(result["step_ms"]["hf"] / result["step_ms"]["lmforge"])
    # removing lmforge's other work can only raise the ratio
    assert result["ceiling"] > result["ratio"]

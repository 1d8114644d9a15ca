"""benchmarks/fused_kernels.py's pieces at small sizes: every implementation is timed, and the
training-step comparison runs both sides and leaves LMFORGE_KERNELS as it found it."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

from lmforge.kernels import build, qk_norm_rope, swiglu
from lmforge.kernels.variants import VARIANTS, runnable_variants

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.skipif(
    swiglu._library() is None or qk_norm_rope._library() is None, reason="no C compiler here"
)


@pytest.fixture(scope="module")
def benchmark():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("fused_kernels")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_implementation_is_timed(benchmark):
    timings = benchmark.shape_timings(torch.float32, 2, 16, 2, 16, 64)
    expected = {"pytorch", *(VARIANTS[v] for v in runnable_variants())}
    assert set(timings) == {"swiglu", "qk-norm + rotary"}
    assert all(set(times) == expected and all(ms > 0 for ms in times.values()) for times in timings.values())


def test_training_steps_run_both_sides_and_restore_the_setting(benchmark, monkeypatch):
    monkeypatch.setenv(build.KERNELS_ENV, "native")
    result = benchmark.training_steps("gpt-nano", "fp32", rounds=2, steps=1)
    assert set(result) == {"lmforge kernels", "LMFORGE_KERNELS=aten"}
    assert all(len(side["all_ms"]) == 2 and side["median_ms"] > 0 for side in result.values())
    assert os.environ[build.KERNELS_ENV] == "native"

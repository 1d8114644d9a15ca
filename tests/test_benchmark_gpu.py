"""benchmarks/gpu.py's parts that need no GPU: the model FLOPs of gpt2 against a count by hand,
MFU's arithmetic, where the peak comes from, and the clean skip without CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpt2_on_meta():
    from lmforge.models.registry import build_model, preset_config

    family, config = preset_config("gpt2")
    with torch.device("meta"):
        return build_model(family, config)


def test_gpt2_training_flops_per_token_equal_a_count_by_hand(bench):
    L, C, V, T = 12, 768, 50257, 1024
    layer = (
        2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    )  # 2 norms, attn, mlp
    parameters = V * C + T * C + L * layer + 2 * C  # tied token table counted once, final norm
    assert parameters == 124_439_808  # GPT-2 small, "124M"
    attention_forward = L * 2 * T * C  # q k^T and the weighted sum, a causal query sees T/2 keys
    assert bench.training_flops_per_token(gpt2_on_meta(), T) == 6 * parameters + 3 * attention_forward


def test_mfu_is_model_flops_per_second_over_the_peak(bench):
    # 400k tokens/s of gpt2 on an H100 SXM (dense bf16 989.4 TFLOP/s): 0.803 GFLOP x 4e5 / 9.894e14
    assert bench.mfu(803_261_952, 400_000, 989.4e12) == pytest.approx(0.32475, abs=1e-5)


def test_the_peak_is_the_datasheets_for_a_known_gpu_and_measured_otherwise(bench):
    measured = []

    def measure():
        measured.append(True)
        return 123e12

    assert bench.peak_flops("NVIDIA H200", measure) == (989.4e12, "H200 SXM datasheet")
    assert bench.peak_flops("NVIDIA A100-SXM4-40GB", measure) == (312e12, "A100 40GB datasheet")
    assert not measured
    assert bench.peak_flops("NVIDIA GeForce RTX 4090", measure) == (123e12, "peak measured")
    assert bench.peak_flops("Tesla V100-SXM2-32GB", measure) == (123e12, "peak measured")  # no bf16
    assert len(measured) == 2


def test_without_cuda_it_prints_one_line_and_exits_0(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "LMFORGE_BENCH_TAG": "should-not-exist"}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})  # a checkout not installed
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith("skipped: benchmarks/gpu.py needs a CUDA GPU")
    assert not list((SCRIPT.parent / "results").glob("*should-not-exist*"))

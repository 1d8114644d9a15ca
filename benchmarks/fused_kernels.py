"""lmforge's fused CPU kernels for Llama-style blocks (kernels/swiglu.py, kernels/qk_norm_rope.py)
against PyTorch's own ops, then what they are worth in whole training steps.

1. Each kernel's forward + backward through autograd, as a model runs it, against the PyTorch
   expression it replaces, at gpt-nano's and gpt-mini's shapes, fp32 and bf16, in every
   instruction-set variant this CPU runs (best of interleaved repeats, ms).
2. Training steps of gpt-nano (its preset recipe: QK-norm, rotary, SwiGLU, Muon) and gpt-mini
   (rotary, SwiGLU, AdamW) with every lmforge kernel against ``LMFORGE_KERNELS=aten``, alternated
   block by block in one process (the median of each side's blocks, ms per step).

    python benchmarks/fused_kernels.py [--rounds 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import best_ms, bf16_runs_natively, table, write_result  # noqa: E402
from lmforge.kernels import build, qk_norm_rope, swiglu  # noqa: E402
from lmforge.kernels.variants import VARIANTS, runnable_variants  # noqa: E402
from lmforge.models.layers import RotaryEmbedding  # noqa: E402
from lmforge.models.registry import build_model, preset_config, preset_training  # noqa: E402
from lmforge.train.malloc import keep_freed_memory  # noqa: E402
from lmforge.train.optim import build_optimizer  # noqa: E402

# (batch, time, heads, head size, MLP hidden) of the two presets at batch 16
SHAPES = {"gpt-nano (16 x 64)": (16, 64, 4, 32, 384), "gpt-mini (16 x 256)": (16, 256, 6, 32, 512)}


def forward_backward(function, inputs: tuple, grads: list) -> None:
    outputs = function(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    torch.autograd.backward(outputs, grads)


def shape_timings(dtype: torch.dtype, B: int, T: int, heads: int, dim: int, hidden: int) -> dict:
    """{kernel: {implementation: forward + backward ms}} at one shape."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(B, T, 2 * hidden, generator=generator).to(dtype).requires_grad_()
    grad = [torch.randn(B, T, hidden, generator=generator).to(dtype)]
    qkv = torch.randn(B, T, 3 * heads * dim, generator=generator).to(dtype).requires_grad_()
    gains = (torch.ones(dim, requires_grad=True), torch.ones(dim, requires_grad=True))
    rotary = RotaryEmbedding(dim, T)(torch.arange(T))
    tables = qk_norm_rope._tables(rotary, B, T, dim)
    head_grads = [torch.randn(B, heads, T, dim, generator=generator).to(dtype) for _ in range(3)]
    reference_inputs = (qkv, heads, heads, dim, gains, 1e-5, rotary)
    timings = {
        "swiglu": {"pytorch": best_ms(lambda: forward_backward(swiglu.swiglu_reference, (h,), grad))},
        "qk-norm + rotary": {
            "pytorch": best_ms(
                lambda: forward_backward(qk_norm_rope.reference_heads, reference_inputs, head_grads)
            )
        },
    }
    for which in runnable_variants():
        kernel_inputs = (qkv, *gains, heads, heads, dim, 1e-5, tables, which)
        timings["swiglu"][VARIANTS[which]] = best_ms(
            lambda which=which: forward_backward(swiglu._SwiGLU.apply, (h, which, swiglu.run), grad)
        )
        timings["qk-norm + rotary"][VARIANTS[which]] = best_ms(
            lambda inputs=kernel_inputs: forward_backward(
                qk_norm_rope._AttentionHeads.apply, inputs, head_grads
            )
        )
    return timings


def kernel_rows(dtype: torch.dtype) -> tuple[list[list], dict]:
    rows, results = [], {}
    for shape_name, shape in SHAPES.items():
        timings = results[shape_name] = shape_timings(dtype, *shape)
        for kernel, times in timings.items():
            for name, ms in times.items():
                speedup = "" if name == "pytorch" else f"{times['pytorch'] / ms:.1f}x"
                rows.append(
                    [str(dtype).removeprefix("torch."), shape_name, kernel, name, f"{ms:.3f}", speedup]
                )
    return rows, results


def training_steps(preset: str, dtype: str, rounds: int, steps: int) -> dict:
    """ms per optimizer step with lmforge's kernels and with LMFORGE_KERNELS=aten, alternated."""
    torch.manual_seed(0)
    family, config = preset_config(preset, vocab_size=67)
    model = build_model(family, config)
    recipe = preset_training(preset)
    optimizer = build_optimizer(
        model,
        name=recipe.get("optimizer", "adamw"),
        lr=recipe.get("lr", 3e-3),
        muon_lr=recipe.get("muon_lr", 0.02),
    )
    batch, block = recipe.get("batch_size", 16), config["block_size"]
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 67, (batch, block + 1), generator=generator) for _ in range(steps)]

    def step(ids: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    saved = os.environ.get(build.KERNELS_ENV)
    times: dict[str, list[float]] = {"lmforge kernels": [], "LMFORGE_KERNELS=aten": []}
    try:
        for round_index in range(rounds):
            order = list(times) if round_index % 2 == 0 else list(reversed(times))
            for side in order:
                if side == "LMFORGE_KERNELS=aten":
                    os.environ[build.KERNELS_ENV] = "aten"
                else:
                    os.environ.pop(build.KERNELS_ENV, None)
                step(batches[0])  # warm: the race, if this process has not run it yet
                start = time.perf_counter()
                for ids in batches:
                    step(ids)
                times[side].append((time.perf_counter() - start) / steps * 1e3)
    finally:
        if saved is None:
            os.environ.pop(build.KERNELS_ENV, None)
        else:
            os.environ[build.KERNELS_ENV] = saved
    return {side: {"median_ms": statistics.median(v), "all_ms": v} for side, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8, help="blocks of steps per side (default 8)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per block (default 10)")
    args = parser.parse_args()
    if swiglu._library() is None or qk_norm_rope._library() is None:
        print("no C compiler here: lmforge uses PyTorch's ops, nothing to compare")
        return
    keep_freed_memory()  # as training does
    dtypes = [torch.float32] + ([torch.bfloat16] if bf16_runs_natively() else [])
    rows, kernels = [], {}
    for dtype in dtypes:
        dtype_rows, kernels[str(dtype).removeprefix("torch.")] = kernel_rows(dtype)
        rows += dtype_rows
    print(table(rows, ["dtype", "shape", "kernel", "implementation", "fwd + bwd ms", "speed-up"]))

    step_rows, steps = [], {}
    for preset in ("gpt-nano", "gpt-mini"):
        for dtype in ["fp32"] + (["bf16"] if bf16_runs_natively() else []):
            result = training_steps(preset, dtype, args.rounds, args.steps)
            steps.setdefault(preset, {})[dtype] = result
            ours, theirs = result["lmforge kernels"]["median_ms"], result["LMFORGE_KERNELS=aten"]["median_ms"]
            step_rows.append([preset, dtype, f"{ours:.1f}", f"{theirs:.1f}", f"{theirs / ours:.2f}x"])
            print(f"  {preset} {dtype}: {ours:.1f} against {theirs:.1f} ms a step", flush=True)
    print(table(step_rows, ["model", "precision", "kernels ms/step", "aten ms/step", "speed-up"]))
    print(f"wrote {write_result('fused_kernels', {'kernels': kernels, 'training_steps': steps})}")


if __name__ == "__main__":
    main()

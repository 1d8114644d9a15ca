"""GPT-2's tanh GELU on a CPU, fp32 and bf16: lmforge's compiled kernel (kernels/gelu.py) against
PyTorch's ``F.gelu(x, approximate="tanh")`` and its backward, at the MLP activations of the
training benchmark's two shapes (batch x block x 4 x width), on one thread and on all of them,
in every instruction-set variant this CPU runs; plus the erf form and ``torch.tanh`` alone as
yardsticks. Best of several interleaved repeats; each figure in milliseconds.

    python benchmarks/gelu_kernel.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import best_ms, table, write_result  # noqa: E402
from lmforge.kernels import gelu  # noqa: E402

SHAPES = {"small (12 x 64 x 512)": (12, 64, 512), "large (8 x 256 x 1536)": (8, 256, 1536)}


def time_kernels(x: torch.Tensor, grad: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(forward ms, backward ms) of each kernel on x (backward NaN where there is none)."""
    timings = {
        "pytorch tanh GELU": (
            best_ms(lambda: F.gelu(x, approximate="tanh")),
            best_ms(lambda: torch.ops.aten.gelu_backward(grad, x, approximate="tanh")),
        ),
        "pytorch erf GELU": (
            best_ms(lambda: F.gelu(x)),
            best_ms(lambda: torch.ops.aten.gelu_backward(grad, x)),
        ),
        "torch.tanh alone": (best_ms(lambda: torch.tanh(x)), float("nan")),
    }
    for which in gelu.runnable_variants():
        timings[f"lmforge {gelu.VARIANTS[which]}"] = (
            best_ms(lambda which=which: gelu.run(x, which=which)),
            best_ms(lambda which=which: gelu.run(x, grad, which)),
        )
    return timings


def main() -> None:
    if gelu._library() is None:
        print("no C compiler here: lmforge uses PyTorch's kernel, nothing to compare")
        return
    threads = torch.get_num_threads()
    results, rows = {}, []
    for dtype in (torch.float32, torch.bfloat16):
        dtype_name = str(dtype).removeprefix("torch.")
        for shape_name, shape in SHAPES.items():
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
            grad = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
            for count in sorted({1, threads}):
                torch.set_num_threads(count)
                timings = time_kernels(x, grad)
                pytorch_forward, pytorch_backward = timings["pytorch tanh GELU"]
                for name, (forward, backward) in timings.items():
                    no_backward = backward != backward
                    rows.append(
                        [
                            dtype_name,
                            shape_name,
                            count,
                            name,
                            f"{forward:.3f}",
                            "" if no_backward else f"{backward:.3f}",
                            f"{pytorch_forward / forward:.1f}x",
                            "" if no_backward else f"{pytorch_backward / backward:.1f}x",
                        ]
                    )
                    results.setdefault(dtype_name, {}).setdefault(shape_name, {}).setdefault(str(count), {})[
                        name
                    ] = {"forward_ms": forward, "backward_ms": None if no_backward else backward}
    torch.set_num_threads(threads)
    print(
        table(
            rows,
            [
                "dtype",
                "shape",
                "threads",
                "kernel",
                "forward ms",
                "backward ms",
                "fwd speed-up",
                "bwd speed-up",
            ],
        )
    )
    for dtype in (torch.float32, torch.bfloat16):
        kept = gelu.VARIANTS.get(gelu.chosen_variant(dtype), "none (PyTorch's kernel)")
        print(f"kept for training here in {str(dtype).removeprefix('torch.')}: {kept}")
    print(f"wrote {write_result('gelu_kernel', {'results': results})}")


if __name__ == "__main__":
    main()

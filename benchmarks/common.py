"""Shared benchmark helpers: the machine's description, matmul peaks, and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from lmforge import hardware

RESULTS = Path(__file__).parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_detail": hardware.cpu_name(),  # family/model: "AMD EPYC" alone is Zen 3 or Zen 5
        "cpu_capability": hardware.cpu_capability(),
        "native_bf16": hardware.cpu_has_native_bf16(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import tokenizers

        info["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    return info


def matmul_peak(
    dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 3072), seconds: float = 1.0, device: str = "cpu"
) -> float:
    """Best measured FLOP/s of large square matmuls: the practical ceiling for model FLOPs.

    The best over a few sizes and repeats, so a moment of noise from another process lowers
    nothing but one sample. A kernel this CPU refuses (oneDNN's bf16 without AVX-512) is left out:
    the peak comes from what runs.
    """
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, dtype=dtype, device=device)
        b = torch.randn(size, size, dtype=dtype, device=device)
        kernels = [lambda a=a, b=b: a @ b]
        if device == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            # PyTorch's fp32 CPU matmul is MKL's, far from the cores' peak on AMD; oneDNN's (what
            # lmforge trains with there) is the honest ceiling, so take the better of the two.
            kernels.append(lambda a=a, b=b: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
        for kernel in kernels:
            try:
                for _ in range(2):
                    kernel()
            except RuntimeError:
                continue
            for _ in range(3):
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 3:
                    kernel()
                    count += 1
                if device == "cuda":
                    torch.cuda.synchronize()
                best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best


def bf16_runs_natively(device: str = "cpu") -> bool:
    """Whether bf16 rows are worth timing here: where bf16 is emulated (CPUs without AVX-512 BF16
    or AMX, e.g. Zen 3) they run about 8x slower than fp32, so the scripts skip them and say so."""
    return not hardware.bf16_is_emulated(device)


def write_result(name: str, payload: dict) -> Path:
    """``results/<name>.json``, or ``results/<name>-<tag>.json`` with ``LMFORGE_BENCH_TAG=<tag>``
    (figures from a second machine, e.g. ``zen3``, beside the reference ones)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = os.environ.get("LMFORGE_BENCH_TAG")
    path = RESULTS / (f"{name}-{tag}.json" if tag else f"{name}.json")
    payload = {"machine": machine(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def in_turn(variants: list, round_index: int) -> list:
    """The variants in the order round ``round_index`` runs them: reversed every other round, so
    that a machine whose speed drifts within a round favours none (a shared VM: seq2seq_speed in
    a fixed order read 0.83x, steps alternated one by one 1.04x, on the same CPU within minutes)."""
    return variants if round_index % 2 == 0 else variants[::-1]


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join("| " + line + " |" for line in lines)


def best_ms(run, repeats: int = 7, calls: int = 10) -> float:
    """Milliseconds per call of ``run``: the best of ``repeats`` timings of ``calls`` calls, after
    one warm-up call (another process can only slow a run down)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3

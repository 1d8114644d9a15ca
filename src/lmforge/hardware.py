"""What this machine can compute, and which fast paths pay off on it: decided by trying, not assuming.

    cpu_capability()            'AVX2' on a Zen 3 EPYC, 'AVX512' on Zen 4/5 (torch's own answer)
    cpu_has_native_bf16()       False on Zen 3: a bf16 matmul there is emulated in fp32 and slow
    onednn_bf16_works()         False on Zen 3: oneDNN's bf16 inner product and weight packing need
                                AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, and say so by raising
    bf16_recurrent_works(nn.LSTM)  False on Zen 3: oneDNN has no bf16 LSTM primitive for AVX2

Two kinds of answers. *Support* (can the op run at all?) comes from a one-time probe that runs a
tiny instance of the op and catches the failure; it is kept for the process. *Speed* (is the fast
path faster than PyTorch's default here?) comes from ``measured_choice``: a short timed race (a few
ms to ~1 s), cached on disk per CPU model, torch version and thread count in
``$LMFORGE_CACHE/hardware.json`` (default ``~/.cache/lmforge``; delete the file to measure again).
Nothing is decided from a figure measured on another CPU.

Override: ``LMFORGE_CPU_CAPABILITY=avx2`` gives every support answer that a CPU without AVX-512
and without bf16 hardware gets (no native bf16, no oneDNN bf16, recurrent layers in fp32 under
bf16 autocast), even on a machine that has them: that is how an AVX-512 developer machine and CI
run the fallbacks (``tests/conftest.py`` has a fixture for it). Unset or ``auto``: detect. It can
only take capabilities away; the speed races still time the kernels the machine really runs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.errors import UserInputError
from lmforge.fileio import temporary_file

CAPABILITY_ENV = "LMFORGE_CPU_CAPABILITY"
CACHE_ENV = "LMFORGE_CACHE"
_FORCIBLE = ("avx2",)

# gpt-nano (benchmarks/train_throughput.py small shape), fp32 vs --precision bf16 steps/s on a
# 2-core AMD EPYC Zen 3 (family 25, model 1, AVX2, no bf16 hardware), torch 2.13.
EMULATED_BF16_SLOWDOWN = 8


# --- what the CPU is --------------------------------------------------------------------------
def forced_capability() -> str | None:
    """The capability ``LMFORGE_CPU_CAPABILITY`` forces ('avx2'), or None to detect."""
    value = os.environ.get(CAPABILITY_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in _FORCIBLE:
        raise UserInputError(
            f"{CAPABILITY_ENV}={value!r} is not understood: use 'avx2' (act as a CPU without AVX-512 "
            "or bf16 hardware) or 'auto' (detect)"
        )
    return value


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


@functools.cache
def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_name() -> str:
    """'AMD EPYC (family 25 model 1 stepping 1)': the marketing name alone does not tell Zen 3 from Zen 5."""
    info = _cpuinfo()
    name = info.get("model name", "unknown CPU")
    if "cpu family" in info:
        name += f" (family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')})"
    return name


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use ('AVX2', 'AVX512', ...), or the forced one."""
    forced = forced_capability()
    return forced.upper() if forced else torch.backends.cpu.get_cpu_capability()


def cpu_has_avx512() -> bool:
    return forced_capability() is None and "avx512f" in cpu_flags()


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run at 2-4x fp32 speed, not emulated (Linux flags)."""
    flags = cpu_flags()
    return forced_capability() is None and ("avx512_bf16" in flags or "amx_bf16" in flags)


def bf16_is_emulated(device: torch.device | str) -> bool:
    """True where bf16 arithmetic runs, but slower than fp32 (a CPU or GPU without bf16 units)."""
    device = torch.device(device)
    if device.type == "cuda":
        return not torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and not cpu_has_native_bf16()


def resolve_device(device: str) -> torch.device:
    """auto: a CUDA GPU when one is visible, else the CPU. Under torchrun, ``auto`` and a bare
    ``cuda`` mean this process's own GPU, ``cuda:$LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        rank, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if rank >= count:
            raise UserInputError(
                f"this is process {rank} of a job on a machine with {count} GPU(s): start one process "
                f"per GPU (torchrun --nproc-per-node {count}), or train on the CPU with --device cpu"
            )
        return torch.device("cuda", rank)
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserInputError(f"--device {device} is not a device; use auto, cpu, cuda or cuda:N") from None
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= count:
        raise UserInputError(
            f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware computes it natively (recent GPUs, AVX-512 BF16 or AMX
    CPUs), else fp32. On the 2-core Zen 5 EPYC this project was first measured on, bf16 autocast
    trains gpt-nano 1.2x and a 6x384 model 1.9x faster than fp32 with a matching loss curve; on
    a Zen 3 EPYC (AVX2) bf16 is emulated and about EMULATED_BF16_SLOWDOWN times slower."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


# --- support: try the op once ------------------------------------------------------------------
def onednn_bf16_works() -> bool:
    """oneDNN's bf16 linear, on a plain and on a packed weight (what generate's packing uses)."""
    return forced_capability() is None and _onednn_bf16_probe()


@functools.cache
def _onednn_bf16_probe() -> bool:
    mkldnn = torch.ops.mkldnn
    if not (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_linear_pointwise")
        and hasattr(mkldnn, "_reorder_linear_weight")
    ):
        return False
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            plain = mkldnn._linear_pointwise(x, weight, None, "none", [], "")
            packed = mkldnn._linear_pointwise(
                x, mkldnn._reorder_linear_weight(weight, 2), None, "none", [], ""
            )
    except (RuntimeError, NotImplementedError):
        return False
    truth = x.float() @ weight.float().t()
    return bool(
        torch.allclose(plain.float(), truth, atol=0.2) and torch.allclose(packed.float(), truth, atol=0.2)
    )


def bf16_recurrent_works(kind: type[torch.nn.RNNBase], device: torch.device | str = "cpu") -> bool:
    """Whether ``kind`` (nn.LSTM, nn.GRU, nn.RNN) runs forward and backward under bf16 autocast."""
    if torch.device(device).type != "cpu":
        return True  # cuDNN has bf16 recurrent kernels
    return forced_capability() is None and _recurrent_probe(kind)


@functools.cache
def _recurrent_probe(kind: type[torch.nn.RNNBase]) -> bool:
    with torch.inference_mode(False), torch.enable_grad():
        layer = kind(8, 8, batch_first=True)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = layer(torch.randn(2, 3, 8))
            out.float().sum().backward()
        except (RuntimeError, NotImplementedError):
            return False
    return True


# --- speed: a short race, cached per machine ----------------------------------------------------
def cache_dir() -> Path:
    """``$LMFORGE_CACHE``, else ``~/.cache/lmforge``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lmforge")


_MEMO: dict[tuple[str, str], bool] = {}


def measured_choice(
    name: str,
    fast: Callable[[], object],
    default: Callable[[], object],
    budget_s: float = 0.4,
    margin: float = 1.0,
) -> bool:
    """True when ``fast`` beat ``default`` in a timed race on this machine (False if ``fast`` fails);
    with ``margin`` < 1, only when it took under ``margin`` times ``default``'s time, so a tie (or
    noise) keeps the default.

    Each side runs once to warm up, then they alternate until ``budget_s`` is spent; the best time
    of each counts (another process can only slow a run down, never speed it up). The answer is
    stored under ``name`` + CPU model + torch version + threads, written atomically.
    """
    key = f"{name} | {cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    memo_key = (os.environ.get(CACHE_ENV, ""), key)  # hot paths ask on every call: no Path.home() here
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    path = cache_dir() / "hardware.json"
    entry = _read(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("fast"), bool):
        result = entry["fast"]
    else:
        fast_s, default_s = _race(fast, default, budget_s)
        result = fast_s < margin * default_s
        entries = _read(path)
        entries[key] = {"fast": result, "fast_s": fast_s, "default_s": default_s, "measured_at": time.time()}
        _write_atomically(path, entries)
    _MEMO[memo_key] = result
    return result


def _race(fast: Callable[[], object], default: Callable[[], object], budget_s: float) -> tuple[float, float]:
    try:
        fast()
    except (RuntimeError, NotImplementedError):
        return float("inf"), 0.0
    default()
    best = [float("inf"), float("inf")]
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 3 or (time.perf_counter() < deadline and rounds < 50):
        for i, kernel in enumerate((fast, default)):
            start = time.perf_counter()
            kernel()
            best[i] = min(best[i], time.perf_counter() - start)
        rounds += 1
    return best[0], best[1]


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_atomically(path: Path, entries: dict) -> None:
    """Temporary file + rename: a reader sees the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = temporary_file(path)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(entries, out, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home: the answer still holds for this process


def bf16_matmul_attention_pays_off() -> bool:
    """Whether two bf16 batched matmuls and a softmax beat PyTorch's SDPA kernel (forward and
    backward, causal, 64 and 256 queries) on this CPU; models/layers.py uses it for bf16 up to
    256 queries. Always False where bf16 is emulated.

    Every bf16 attention call asks (each layer, each decoded token), so a cached answer costs a
    dictionary lookup: the race's inputs are built only when a race runs. Built on every call,
    they cost a bf16 gpt-nano training step 12 ms."""
    if bf16_is_emulated("cpu"):
        return False
    return measured_choice("bf16 matmul attention vs SDPA, T=64,256", _race_matmul_attention, _race_sdpa)


@functools.cache  # built once, when a race first runs (about 1.5 MB with gradients)
def _attention_race_inputs() -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        [torch.randn(shape, generator=generator).to(torch.bfloat16).requires_grad_() for _ in range(3)]
        for shape in [(4, 4, length, 32) for length in (64, 256)]
    ]


def _race_matmul_attention() -> None:
    with torch.inference_mode(False), torch.enable_grad():
        for q, k, v in _attention_race_inputs():
            B, nh, T, hs = q.shape
            bias = torch.full((T, T), float("-inf"), dtype=q.dtype).triu_(1)
            scores = torch.baddbmm(
                bias.expand(B * nh, T, T),
                q.reshape(B * nh, T, hs),
                k.reshape(B * nh, T, hs).transpose(1, 2),
                alpha=1 / math.sqrt(hs),
            )
            (torch.softmax(scores, dim=-1) @ v.reshape(B * nh, T, hs)).float().sum().backward()


def _race_sdpa() -> None:
    import torch.nn.functional as F

    with torch.inference_mode(False), torch.enable_grad():
        for q, k, v in _attention_race_inputs():
            F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()

"""glibc's malloc kept from handing freed pages back between training steps (train/malloc.py)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

from lmforge.train import malloc


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # Windows has no confstr, musl no such name
        return False


# gpt-nano's training step at batch 16 as `pretrain` runs it (forward, backward, its Muon +
# AdamW step); the kernel's count of minor page faults says how often a step's tensors landed on
# fresh pages. (Forward and backward alone, since lmforge's fused kernels, allocate too few large
# tensors for glibc's defaults to fault reliably: 300-22,000 faults from one run to the next.)
FAULTS = textwrap.dedent(
    """
    import resource, torch
    from lmforge.models.registry import build_model, preset_config
    from lmforge.train.malloc import keep_freed_memory
    from lmforge.train.optim import build_optimizer
    print(keep_freed_memory())
    torch.manual_seed(0)
    model = build_model(*preset_config("gpt-nano", vocab_size=65))
    optimizer = build_optimizer(model, name="muon", lr=6e-3, muon_lr=0.03)
    x = torch.randint(0, 65, (16, 64))
    def step():
        model(x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(15):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def faults(**env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2", **env},
        check=True,
    )
    took, count = done.stdout.split()
    return took, int(count)


@pytest.mark.skipif(not is_glibc(), reason="mallopt is glibc's; elsewhere the other test covers it")
def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    took, tuned = faults()
    kept, untouched = faults(LMFORGE_MALLOC="system")
    assert (took, kept) == ("True", "False")
    # measured: 48,104-78,278 faults with glibc's defaults, 267-523 kept (Emerald Rapids VM)
    assert tuned < untouched / 4


def test_the_environment_or_a_libc_without_mallopt_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("LMFORGE_MALLOC", "system")
    malloc.keep_freed_memory.cache_clear()
    assert malloc.keep_freed_memory() is False
    monkeypatch.delenv("LMFORGE_MALLOC")

    def no_libc(*args, **kwargs):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    malloc.keep_freed_memory.cache_clear()
    assert malloc.keep_freed_memory() is False
    malloc.keep_freed_memory.cache_clear()

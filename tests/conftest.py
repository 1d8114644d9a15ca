"""Fixtures shared by the whole suite.

``cpu_capability`` runs a test twice: once with what this machine has ("native") and once as a
CPU without AVX-512 or bf16 hardware ("avx2", through ``LMFORGE_CPU_CAPABILITY``), so a fast
path's test also runs its fallback on any machine. The speed races of ``lmforge.hardware`` write
their cache into a temporary directory, never into the developer's ~/.cache.
"""

from __future__ import annotations

import os

import pytest

from lmforge.hardware import CACHE_ENV, CAPABILITY_ENV


def _threads_per_worker() -> int | None:
    """Under pytest-xdist, the cores shared out among the workers: each worker's torch (and the
    commands a test starts) would otherwise take every core, and N workers x N threads on N cores
    spin against each other (a small recurrent model's training ran 10x slower that way)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


_THREADS = _threads_per_worker()
if _THREADS is not None:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_THREADS))  # subprocesses (torchrun, the CLI) inherit it
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True, scope="session")
def _hardware_cache_in_tmp(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("lmforge-cache")))
        yield


@pytest.fixture(params=["native", "avx2"])
def cpu_capability(request, monkeypatch) -> str:
    if request.param == "avx2":
        monkeypatch.setenv(CAPABILITY_ENV, "avx2")
    else:
        monkeypatch.delenv(CAPABILITY_ENV, raising=False)
    return request.param


@pytest.fixture
def force_matmul_attention(monkeypatch):
    """bf16 attention on a CPU takes the matmul path whatever this machine's race said (where bf16
    is emulated the race picks SDPA), so its tests run everywhere."""
    import lmforge.hardware

    monkeypatch.setattr(lmforge.hardware, "bf16_matmul_attention_pays_off", lambda: True)

"""The capability probes against trying the op itself, the override, and the cached speed races."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from lmforge import hardware
from lmforge.errors import UserInputError


def _runs(fn) -> bool:
    try:
        fn()
    except RuntimeError:
        return False
    return True


def test_override_gives_the_answers_of_a_cpu_without_avx512(monkeypatch):
    monkeypatch.setenv(hardware.CAPABILITY_ENV, "avx2")
    assert hardware.cpu_capability() == "AVX2"
    assert not hardware.cpu_has_avx512() and not hardware.cpu_has_native_bf16()
    assert hardware.bf16_is_emulated("cpu")
    assert not hardware.onednn_bf16_works()
    assert not any(hardware.bf16_recurrent_works(kind) for kind in (nn.LSTM, nn.GRU, nn.RNN))
    assert hardware.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert not hardware.bf16_matmul_attention_pays_off()


def test_a_misspelt_override_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(hardware.CAPABILITY_ENV, "avx-2")
    with pytest.raises(UserInputError, match="LMFORGE_CPU_CAPABILITY='avx-2'"):
        hardware.cpu_has_native_bf16()


def test_unforced_answers_match_trying_the_ops(monkeypatch):
    monkeypatch.delenv(hardware.CAPABILITY_ENV, raising=False)
    assert hardware.cpu_capability() == torch.backends.cpu.get_cpu_capability()
    x, w = torch.randn(3, 16, dtype=torch.bfloat16), torch.randn(8, 16, dtype=torch.bfloat16)
    mkldnn = torch.ops.mkldnn
    linear_runs = _runs(lambda: mkldnn._linear_pointwise(x, w, None, "none", [], "")) and _runs(
        lambda: mkldnn._reorder_linear_weight(w, 3)
    )
    assert hardware.onednn_bf16_works() == linear_runs
    for kind in (nn.LSTM, nn.GRU, nn.RNN):

        def autocast_forward(kind=kind):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                kind(4, 4, batch_first=True)(torch.randn(1, 2, 4))[0].float().sum().backward()

        assert hardware.bf16_recurrent_works(kind) == _runs(autocast_forward), kind.__name__
    if "avx512f" not in hardware.cpu_flags():
        assert (
            not hardware.cpu_has_native_bf16()
            and hardware.resolve_precision("auto", torch.device("cpu")) == "fp32"
        )


def test_cpu_name_says_family_and_model_where_linux_tells_them():
    name = hardware.cpu_name()
    if "cpu family" in hardware._cpuinfo():
        assert f"family {hardware._cpuinfo()['cpu family']} model" in name


def test_measured_choice_picks_the_faster_and_caches_it_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hardware, "_MEMO", {})
    calls = []

    def quick():
        calls.append("quick")

    def slow():
        calls.append("slow")
        time.sleep(0.002)

    assert hardware.measured_choice("quick vs slow", quick, slow, budget_s=0.01)
    assert not hardware.measured_choice("slow vs quick", slow, quick, budget_s=0.01)
    entries = json.loads((tmp_path / "hardware.json").read_text())
    assert len(entries) == 2 and all(key.endswith("threads") for key in entries)
    assert [p.name for p in tmp_path.iterdir()] == ["hardware.json"]  # no temporary file left
    # a new process (empty memo) reads the answer instead of racing again
    monkeypatch.setattr(hardware, "_MEMO", {})
    calls.clear()
    assert hardware.measured_choice("quick vs slow", slow, quick)
    assert calls == []


def test_a_fast_path_that_fails_loses_the_race(tmp_path, monkeypatch):
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))

    def broken():
        raise RuntimeError("could not create a primitive descriptor")

    assert not hardware.measured_choice("broken", broken, lambda: None)


def test_an_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(hardware.CACHE_ENV, str(blocker / "cache"))
    assert hardware.measured_choice("unwritable", lambda: None, lambda: time.sleep(0.002), budget_s=0.01)


def test_bf16_matmul_attention_race_answers_a_bool(cpu_capability):
    answer = hardware.bf16_matmul_attention_pays_off()
    assert isinstance(answer, bool)
    if cpu_capability == "avx2":
        assert answer is False


def test_a_cached_answer_builds_nothing(tmp_path, monkeypatch):
    """Every bf16 attention call asks the race; once answered, asking must not build its inputs
    (building them on each call cost a bf16 gpt-nano training step 12 ms)."""
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hardware, "_MEMO", {})
    monkeypatch.setattr(hardware, "bf16_is_emulated", lambda device: False)
    monkeypatch.setattr(hardware, "_race", lambda fast, default, budget_s: (fast(), default(), 1.0, 2.0)[2:])
    first = hardware.bf16_matmul_attention_pays_off()
    assert first is True  # the stubbed race: 1 s against 2 s

    def no_tensors(*args, **kwargs):
        raise AssertionError("a cached answer built the race's tensors")

    monkeypatch.setattr(torch, "randn", no_tensors)
    assert hardware.bf16_matmul_attention_pays_off() is first


def test_device_auto_and_cuda_under_torchrun_and_a_bad_device(monkeypatch):
    import torch

    from lmforge.errors import UserInputError
    from lmforge.hardware import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 3)  # each rank drives its own GPU
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins
    with pytest.raises(
        UserInputError, match=r"--device cuda:4: this machine has 4 GPU\(s\), cuda:0 to cuda:3"
    ):
        resolve_device("cuda:4")
    # torchrun --nproc-per-node 2 on a machine with one GPU: rank 1 has none of its own (seen on an
    # H200: "invalid device ordinal" as an unexpected error, and rank 0 waiting for it)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(
        UserInputError, match=r"process 1 of a job on a machine with 1 GPU.*--nproc-per-node 1"
    ):
        resolve_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserInputError, match="--device tpu is not a device"):
        resolve_device("tpu")

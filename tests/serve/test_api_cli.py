"""``lmforge serve`` as a user starts it: the address line, loopback by default, Ctrl-C, --check, and a
checkpoint carrying pickled code refused before any of it runs."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from lmforge.cli import main  # noqa: E402
from lmforge.hardware import cpu_has_native_bf16  # noqa: E402
from tests.serve.api_server import tiny_serving_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Ctrl-C: 0 (uvicorn stopped gracefully), 130 (the CLI's status for an interrupt, where uvicorn
# re-raises it), -2 (killed by SIGINT, as the shell reports a Ctrl-C during start-up)
INTERRUPTED = (0, 130, -2)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def start(argv: list[str]) -> tuple[subprocess.Popen, str]:
    """``python -m lmforge serve ARGV`` and the URL it prints once listening."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "serve", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline()  # blocks until the server prints its address (or dies)
    if "http://" not in line:
        process.kill()
        raise AssertionError(f"no address printed: {line!r} {process.stderr.read()}")
    url = line.split("http://", 1)[1].split()[0].rstrip(";,)")
    return process, f"http://{url}"


def wait_until_healthy(url: str) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} never became healthy")


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def test_serve_prints_its_loopback_address_answers_and_stops_on_ctrl_c(tmp_path):
    run = tiny_serving_run(tmp_path / "shakespeare", block_size=32)
    process, url = start(["--checkpoint", str(run), "--port", "0", "--dtype", "fp32"])
    try:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        wait_until_healthy(url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["shakespeare"]  # the run folder's name
        answer = client.completions.create(model="shakespeare", prompt="First", max_tokens=4, temperature=0)
        assert answer.usage.prompt_tokens == 5
    finally:
        code, err = stop(process)
    assert code in INTERRUPTED, err
    assert "Traceback" not in err


def test_a_non_loopback_host_without_a_key_warns(tmp_path):
    run = tiny_serving_run(tmp_path / "run", block_size=16)
    process, url = start(["--checkpoint", str(run), "--port", "0", "--host", "0.0.0.0"])
    port = url.rsplit(":", 1)[1]
    wait_until_healthy(f"http://127.0.0.1:{port}")
    code, err = stop(process)
    assert url.startswith("http://0.0.0.0:")
    assert "warning: listening on 0.0.0.0 without --api-key" in err
    assert code in INTERRUPTED, err


def test_check_loads_and_exits(tmp_path):
    run = tiny_serving_run(tmp_path / "run", block_size=16)
    code, out, err = invoke(["serve", "--checkpoint", str(run), "--check", "--model-name", "mine"])
    assert code == 0, err
    # --dtype auto: bf16 where the CPU computes it natively (AVX-512 BF16, AMX), else fp32
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert out.startswith(f"mine: context 16 tokens, {dtype} on cpu") and "not serving" in out


class CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("where", ["model.safetensors", "best/model.safetensors"])
def test_a_pickled_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path, where):
    run = tiny_serving_run(tmp_path / "run", block_size=16)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"transformer.wte.weight": CreatesAFile(marker)})
    (run / where).parent.mkdir(exist_ok=True)
    (run / where).write_bytes(payload)
    if where.startswith("best/"):
        (run / "model.safetensors").write_bytes(payload)
    (run / "train_state.pt").write_bytes(payload)  # serving never reads the training state
    pickle.loads(pickle.dumps(CreatesAFile(tmp_path / "probe")))  # the payload works when unpickled
    assert (tmp_path / "probe").exists()
    started = time.perf_counter()
    code, out, err = invoke(["serve", "--checkpoint", str(run), "--check"])
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not marker.exists()
    assert time.perf_counter() - started < 60


def test_the_api_key_may_come_from_the_environment(tmp_path, monkeypatch):
    from lmforge.commands import serve as command

    seen = {}
    monkeypatch.setattr(command, "_listen", lambda host, port: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(command, "_run", lambda state, sock, host: seen.update(key=state.api_key))
    monkeypatch.setenv("LMFORGE_API_KEY", "from-env")
    run = tiny_serving_run(tmp_path / "run", block_size=16)
    command.serve(checkpoint=run, device="cpu")
    assert seen["key"] == "from-env"
    seen.clear()
    command.serve(checkpoint=run, device="cpu", api_key="from-flag")  # the flag wins
    assert seen["key"] == "from-flag"
    monkeypatch.setenv("LMFORGE_API_KEY", "  ")
    code, _, err = invoke(["serve", "--checkpoint", str(run)])
    assert code == 2 and "LMFORGE_API_KEY is blank" in err

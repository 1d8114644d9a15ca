"""benchmarks/serve_load.py's pieces: the statistics against hand-computed values, the goals'
arithmetic, server processes that are always stopped, and the load generator against a real
``lmforge serve`` on a tiny model (6 streamed requests, 3 clients) with its usage cross-checked."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield (
            importlib.import_module("serve_load_client"),
            importlib.import_module("serve_load_servers"),
            importlib.import_module("serve_load"),
        )
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_summary_figures_equal_a_count_by_hand(bench):
    client, _, _ = bench
    Result = client.Result
    results = [
        # sent at 0, text at 1.0, 1.5, 2.0 (3 tokens): ttft 1.0, tpot (2.0 - 1.0) / 2 = 0.5
        Result(ok=True, sent=0.0, chunk_times=[1.0, 1.5, 2.0], done=2.1, prompt_tokens=5, completion_tokens=3,
               finish_reason="length"),
        # 4 tokens in 2 chunks (a server may merge tokens): tpot (4.0 - 3.0) / 3
        Result(ok=True, sent=1.0, chunk_times=[3.0, 4.0], done=4.0, prompt_tokens=7, completion_tokens=4,
               finish_reason="stop"),
        Result(ok=False, error="HTTP 500: boom", sent=0.0),
    ]  # fmt: skip
    summary = client.summarize(results, wall=5.0)
    assert summary["requests"] == 3 and summary["failures"] == 1
    assert summary["failure_reasons"] == ["HTTP 500: boom"]
    assert summary["output_tokens"] == 7 and summary["prompt_tokens"] == 12
    assert summary["output_tokens_per_s"] == pytest.approx(7 / 5)
    assert summary["requests_per_s"] == pytest.approx(2 / 5)
    assert summary["ttft_p50_s"] == pytest.approx(1.5)  # the mean of 1.0 and 2.0
    assert summary["ttft_p99_s"] == pytest.approx(1.0 + 0.99 * 1.0)  # linear between the two
    assert summary["tpot_p50_s"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert summary["latency_p50_s"] == pytest.approx((2.1 + 3.0) / 2)
    assert summary["finish_reasons"] == {"length": 1, "stop": 1}


def test_the_goals_compare_the_runs_and_say_by_how_much(bench):
    _, _, script = bench
    row = {"failures": 0}
    runs = {
        "lmforge": {**row, "run": "lmforge", "output_tokens_per_s": 100.0, "ttft_p99_s": 2.0},
        "lmforge-sequential": {
            **row,
            "run": "lmforge-sequential",
            "output_tokens_per_s": 20.0,
            "ttft_p99_s": 0.1,
        },
        "transformers": {**row, "run": "transformers", "output_tokens_per_s": 30.0, "ttft_p99_s": 50.0},
        "transformers-cb": {**row, "run": "transformers-cb", "output_tokens_per_s": 60.0, "ttft_p99_s": 1.0},
    }
    goals = script.verdict(runs)
    assert goals["throughput_vs_sequential"]["ratio"] == pytest.approx(5.0)
    assert goals["throughput_vs_sequential"]["met"]
    vs = goals["throughput_vs_transformers"]
    assert vs["against"] == "transformers-cb" and vs["ratio"] == pytest.approx(100 / 60) and not vs["met"]
    assert not goals["p99_ttft_vs_transformers"]["met"]  # 2.0 s against the better run's 1.0 s
    # a run that failed or could not start is no baseline
    runs["transformers-cb"] = {"run": "transformers-cb", "error": "RuntimeError: no", "concurrency": 32}
    goals = script.verdict(runs)
    assert goals["throughput_vs_transformers"]["against"] == "transformers"
    assert goals["throughput_vs_transformers"]["met"] and goals["p99_ttft_vs_transformers"]["met"]


FAKE_SERVER = textwrap.dedent(
    """
    import http.server, os, sys
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    print(f"pid {os.getpid()} on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_is_found_by_its_printed_address_and_stopped_even_on_error(bench, tmp_path):
    _, servers, _ = bench
    command = [sys.executable, "-c", FAKE_SERVER, "--port", "0"]
    started = servers.started_server("lmforge", command, log_path=tmp_path / "log")
    with pytest.raises(ZeroDivisionError), started as server:
        pid = server.process.pid
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.peak_rss_mb() > 1  # a Python process holds megabytes
        1 / 0  # noqa: B018 - the benchmark failing inside the block
    assert server.process.returncode is not None and not _alive(pid)


def test_a_server_that_exits_at_once_is_reported_with_its_output(bench, tmp_path):
    _, servers, _ = bench
    command = [sys.executable, "-c", "import sys; print('no weights here'); sys.exit(3)", "--port", "0"]
    started = servers.started_server("lmforge", command, log_path=tmp_path / "log")
    with pytest.raises(RuntimeError, match="status 3.*no weights here"), started:
        pass


def test_the_load_generator_against_lmforge_serve(bench, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from tests.serve.api_server import running_server, tiny_serving_run
    from tests.tiny_run import TEXT

    client, _, _ = bench
    run_dir = tiny_serving_run(tmp_path / "run", block_size=64)
    from lmforge.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(run_dir / "tokenizer")
    spec = client.LoadSpec(requests=6, concurrency=3, prompt_tokens=(4, 24), max_tokens=(2, 12), seed=1)
    requests = client.make_requests(spec, tokenizer, [TEXT])
    assert len({r.prompt for r in requests}) == 6  # seeded offsets: distinct prompts
    again = client.make_requests(spec, tokenizer, [TEXT])
    assert again == requests  # and the same ones from the same seed
    assert all(4 <= r.prompt_tokens <= 24 and 2 <= r.max_tokens <= 12 for r in requests)

    with running_server(run_dir, max_batch_size=3) as server:
        results, wall = client.run_load(server.url, "tiny", requests, spec.concurrency, warmup=True)
    assert [r.error for r in results] == [None] * 6
    for request, result in zip(requests, results, strict=True):
        assert result.prompt_tokens == request.prompt_tokens  # the server tokenized what we counted
        assert 1 <= result.completion_tokens <= request.max_tokens
        assert result.finish_reason in ("stop", "length")
        assert result.finish_reason == "stop" or result.completion_tokens == request.max_tokens
        assert result.sent < result.chunk_times[0] <= result.chunk_times[-1] <= result.done
    summary = client.summarize(results, wall)
    assert summary["failures"] == 0 and summary["requests"] == 6
    assert summary["output_tokens"] == sum(r.completion_tokens for r in results)
    assert summary["output_tokens_per_s"] == pytest.approx(summary["output_tokens"] / wall)
    for name in ("ttft", "latency"):
        assert 0 < summary[f"{name}_p50_s"] <= summary[f"{name}_p99_s"]
    assert summary["ttft_p99_s"] <= summary["latency_p99_s"] <= wall
    if summary["tpot_p50_s"] is not None:
        assert 0 < summary["tpot_p50_s"] <= summary["tpot_p99_s"]

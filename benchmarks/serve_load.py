"""Serving under load: ``lmforge serve`` against ``transformers serve`` on the same GPT-2 weights.

A GPT-2-shaped model (124M: 12 layers x 768, vocabulary 50257, context 1024) with random weights
from a fixed seed is saved once as a Hugging Face directory (``GPT2LMHeadModel.save_pretrained``,
a byte-level BPE trained on ``builtin:stdlib-docs`` padded with added tokens so every id decodes)
and converted with ``lmforge convert --from-hf``: both servers serve the same weights, in fp32 on
the CPU (``--dtype bf16``: both in bf16, for CPUs with bf16 hardware; results name it). Each server is started as a subprocess, warmed with one request, loaded, and stopped
(killed on exit, even on error).

The load: --requests streamed ``/v1/completions`` (greedy) with prompt lengths and max_tokens
drawn from a seed, sent by --concurrency clients on loopback (asyncio + httpx), each client taking
the next request when its last one ends. Per server: failures, total time, output tokens/s,
requests/s, p50/p99 time to first token (first chunk with text), p50/p99 time per output token
after the first (TPOT: (last chunk - first chunk) / (tokens - 1), one value per request), and the
server's peak resident memory. Runs:

    lmforge             lmforge serve, --concurrency clients
    lmforge-sequential  the same requests one at a time (goal: lmforge throughput >= 4x this)
    transformers        transformers serve, default mode (one model.generate at a time)
    transformers-cb     transformers serve --continuous-batching (paged attention)

Goal: lmforge's output tokens/s >= 2x the better transformers run, and its p99 TTFT lower.

    python benchmarks/serve_load.py                      # everything (about an hour on 2 busy cores)
    python benchmarks/serve_load.py --quick              # a few small requests per run
    python benchmarks/serve_load.py --only lmforge transformers-cb   # rerun parts, keep the rest
    python benchmarks/serve_load.py --only lmforge lmforge-sequential --dtype bf16   # bf16 hardware
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, table, write_result  # noqa: E402
from lmforge.data.corpora import iter_texts  # noqa: E402
from lmforge.tokenizers import load_tokenizer  # noqa: E402
from serve_load_client import LoadSpec, make_requests, run_load, summarize  # noqa: E402
from serve_load_servers import (  # noqa: E402
    RUNS,
    WeightSpec,
    build_weights,
    server_command,
    started_server,
)

GPT2 = WeightSpec()
TINY = WeightSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=1024, n_positions=256, corpus_documents=40)
FULL_LOAD = LoadSpec(requests=200, concurrency=32, prompt_tokens=(16, 512), max_tokens=(16, 128))
QUICK_LOAD = LoadSpec(requests=16, concurrency=8, prompt_tokens=(16, 128), max_tokens=(8, 32))
GOAL_VS_SEQUENTIAL, GOAL_VS_TRANSFORMERS = 4.0, 2.0
CONDITIONS = (
    "loopback on the one machine named under machine (2 cores here), shared with other jobs: the "
    "load generator, the server and other processes share its cores, so absolute figures are low "
    "and noisy; the runs are compared with each other, measured in the same invocation"
)


def run_one(
    name: str,
    weights: dict,
    spec: LoadSpec,
    requests: list,
    work: Path,
    sequential: int | None,
    dtype: str = "fp32",
) -> dict:
    """Start the server of run ``name``, load it, stop it; the summary or the reason it could not run."""
    concurrency = 1 if name == "lmforge-sequential" else spec.concurrency
    if name == "lmforge-sequential" and sequential is not None:
        requests = requests[:sequential]  # a seeded draw: its first n are a sample of the same mix
    longest = spec.prompt_tokens[1] + spec.max_tokens[1] + 16  # + re-encoding slack
    command = server_command(
        name, weights, max_batch_size=spec.concurrency, max_sequence=longest, dtype=dtype
    )
    print(f"[{name}] starting: {' '.join(command)}", flush=True)
    try:
        with started_server(name, command, log_path=work / f"{name}.log") as server:
            results, wall = run_load(server.base_url, server.model_id, requests, concurrency, warmup=True)
            peak_rss = server.peak_rss_mb()
    except Exception as error:  # noqa: BLE001 - a benchmark row records why a server did not run
        print(f"[{name}] could not run: {error}", flush=True)
        return {"run": name, "error": f"{type(error).__name__}: {error}", "concurrency": concurrency}
    summary = summarize(results, wall)
    summary.update(run=name, concurrency=concurrency, server_peak_rss_mb=peak_rss, command=command)
    print(
        f"[{name}] {summary['failures']} failures, {summary['output_tokens_per_s']:.1f} tokens/s", flush=True
    )
    return summary


def verdict(runs: dict[str, dict]) -> dict:
    """Each goal: met, missed (by how much), or not measurable (a run missing or failed)."""

    def ok(name: str) -> dict | None:
        row = runs.get(name)
        return row if row and "error" not in row and row["failures"] == 0 else None

    goals: dict = {}
    ours, alone = ok("lmforge"), ok("lmforge-sequential")
    if ours and alone:
        ratio = ours["output_tokens_per_s"] / alone["output_tokens_per_s"]
        goals["throughput_vs_sequential"] = {
            "ratio": ratio,
            "goal": GOAL_VS_SEQUENTIAL,
            "met": ratio >= GOAL_VS_SEQUENTIAL,
        }
    baselines = [row for row in (ok("transformers"), ok("transformers-cb")) if row]
    if ours and baselines:
        best = max(baselines, key=lambda row: row["output_tokens_per_s"])
        ratio = ours["output_tokens_per_s"] / best["output_tokens_per_s"]
        goals["throughput_vs_transformers"] = {
            "ratio": ratio,
            "against": best["run"],
            "goal": GOAL_VS_TRANSFORMERS,
            "met": ratio >= GOAL_VS_TRANSFORMERS,
        }
        goals["p99_ttft_vs_transformers"] = {
            "lmforge_s": ours["ttft_p99_s"],
            "transformers_s": best["ttft_p99_s"],
            "against": best["run"],
            "met": ours["ttft_p99_s"] < best["ttft_p99_s"],
        }
    return goals


def fmt(row: dict, key: str, scale: float = 1.0, digits: int = 1) -> str:
    return f"{row[key] * scale:,.{digits}f}" if row.get(key) is not None else "-"


def print_table(runs: dict[str, dict], goals: dict) -> None:
    rows = []
    for name in RUNS:
        row = runs.get(name)
        if row is None:
            continue
        if "error" in row:
            rows.append([name, row["concurrency"], "could not run: " + row["error"][:90], *["-"] * 8])
            continue
        rows.append(
            [
                name,
                row["concurrency"],
                row["failures"],
                fmt(row, "total_s"),
                fmt(row, "output_tokens_per_s"),
                fmt(row, "requests_per_s", digits=2),
                fmt(row, "ttft_p50_s", 1000, 0),
                fmt(row, "ttft_p99_s", 1000, 0),
                fmt(row, "tpot_p50_s", 1000, 0),
                fmt(row, "tpot_p99_s", 1000, 0),
                fmt(row, "server_peak_rss_mb", digits=0),
            ]
        )
    headers = [
        "run",
        "clients",
        "failures",
        "total s",
        "out tok/s",
        "req/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "TPOT p50 ms",
        "TPOT p99 ms",
        "peak RSS MB",
    ]
    print(table(rows, headers))
    for name, goal in goals.items():
        state = "met" if goal["met"] else "MISSED"
        detail = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in goal.items() if k != "met"}
        print(f"goal {name}: {state} {detail}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few, short requests (a smoke run)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer x 64 model instead of GPT-2 (tests)")
    parser.add_argument("--only", nargs="+", choices=RUNS, default=list(RUNS), help="runs to do; others kept")
    parser.add_argument("--requests", type=int, help="override the number of requests")
    parser.add_argument("--concurrency", type=int, help="override the number of concurrent clients")
    parser.add_argument(
        "--prompt-tokens", type=int, nargs=2, metavar=("LO", "HI"), help="prompt length range"
    )
    parser.add_argument("--max-tokens", type=int, nargs=2, metavar=("LO", "HI"), help="max_tokens range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="both servers' weights")
    parser.add_argument(
        "--sequential-requests", type=int, help="lmforge-sequential sends only the first N requests (time)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmforge-serve-load"), help="weights and logs")
    parser.add_argument("--result-name", default="serve_load", help="results/NAME.json")
    args = parser.parse_args(argv)

    spec = QUICK_LOAD if args.quick or args.tiny else FULL_LOAD
    spec = spec.with_overrides(
        requests=args.requests,
        concurrency=args.concurrency,
        seed=args.seed,
        prompt_tokens=tuple(args.prompt_tokens) if args.prompt_tokens else None,
        max_tokens=tuple(args.max_tokens) if args.max_tokens else None,
    )
    weight_spec = TINY if args.tiny else GPT2
    work = args.work / weight_spec.name
    weights = build_weights(weight_spec, work)
    tokenizer = load_tokenizer(Path(weights["run_dir"]) / "tokenizer")  # what lmforge serve encodes with
    texts = list(iter_texts(["builtin:stdlib-docs"]))[: weight_spec.corpus_documents]
    requests = make_requests(spec, tokenizer, texts)

    previous = RESULTS / f"{args.result_name}.json"
    runs: dict[str, dict] = {}
    if previous.is_file() and set(args.only) != set(RUNS):
        old = json.loads(previous.read_text())
        same = old.get("load") == spec.as_dict() and old.get("model") == weight_spec.as_dict()
        if same and old.get("dtype", "fp32") == args.dtype:
            runs = old.get("runs", {})  # the other runs, measured on the same load and weights
    for name in args.only:
        runs[name] = run_one(name, weights, spec, requests, work, args.sequential_requests, args.dtype)
    runs = {name: runs[name] for name in RUNS if name in runs}
    goals = verdict(runs)
    print_table(runs, goals)
    payload = {
        "model": weight_spec.as_dict(),
        "load": spec.as_dict(),
        "dtype": args.dtype,
        "sequential_requests": args.sequential_requests or spec.requests,
        "conditions": CONDITIONS,
        "sampling": "greedy (temperature 0); the servers stop early only at end-of-text",
        "metrics": {
            "ttft": "seconds from sending the request to the first streamed chunk with text",
            "tpot": "per request, (last text chunk - first text chunk) / (completion tokens - 1)",
            "output_tokens": "completion_tokens of the usage the server reports",
        },
        "runs": runs,
        "goals": goals,
    }
    path = write_result(args.result_name, payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

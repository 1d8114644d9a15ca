"""The load generator of ``serve_load.py``: requests from a seed, concurrent streaming clients, statistics.

Kept apart from the servers so a test can drive it against any OpenAI-compatible server. The
client is httpx (what the ``openai`` SDK itself runs on) reading the server-sent events by hand:
on two shared cores a lighter client leaves more of the machine to the server being measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class LoadSpec:
    requests: int
    concurrency: int
    prompt_tokens: tuple[int, int]  # inclusive range the prompt lengths are drawn from
    max_tokens: tuple[int, int]  # inclusive range of max_tokens
    seed: int = 0

    def with_overrides(self, **changes) -> LoadSpec:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Request:
    prompt: str
    prompt_tokens: int  # its length under the served tokenizer
    max_tokens: int


@dataclass
class Result:
    ok: bool
    error: str | None = None
    sent: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk carrying text
    done: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.sent if self.chunk_times else None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: robust to servers that merge tokens into one chunk."""
        tokens = self.completion_tokens or len(self.chunk_times)
        if len(self.chunk_times) < 2 or tokens < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (tokens - 1)


def make_requests(spec: LoadSpec, tokenizer, texts: list[str]) -> list[Request]:
    """``spec.requests`` prompts cut from ``texts`` at seeded offsets and lengths.

    ``tokenizer`` is the served one (lmforge's contract: ``encode``, ``decode``). A window of n
    token ids decoded to text re-encodes to about n tokens (a cut may split a word); the exact
    count is kept with each request, and the servers' reported usage is checked against it.
    """
    stream = [i for ids in tokenizer.encode_batch(texts) for i in ids]
    rng = random.Random(spec.seed)
    requests = []
    for _ in range(spec.requests):
        length = rng.randint(*spec.prompt_tokens)
        start = rng.randrange(0, len(stream) - length)
        text = tokenizer.decode(stream[start : start + length])
        requests.append(Request(text, len(tokenizer.encode(text)), rng.randint(*spec.max_tokens)))
    return requests


async def stream_one(client, base_url: str, model: str, request: Request, headers: dict) -> Result:
    """One streamed completion; never raises: a failure is a Result with ok False and the reason."""
    body = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = Result(ok=False, sent=time.perf_counter())
    try:
        async with client.stream(
            "POST", f"{base_url}/v1/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"error event: {chunk['error']}"
                    return result
                for choice in chunk.get("choices") or []:
                    if choice.get("text"):
                        result.chunk_times.append(now)
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    result.completion_tokens = chunk["usage"].get("completion_tokens")
    except Exception as error:  # noqa: BLE001 - a failed request is counted, not fatal
        result.error = f"{type(error).__name__}: {error}"
        return result
    result.done = time.perf_counter()
    if result.finish_reason is None:
        result.error = "the stream ended without a finish_reason"
    elif not result.chunk_times:
        result.error = "no text was streamed"
    else:
        result.ok = True
    return result


async def _load(
    base_url: str, model: str, requests: list[Request], concurrency: int, headers: dict, warmup: bool
):
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    timeout = httpx.Timeout(connect=30.0, read=1800.0, write=60.0, pool=3600.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if warmup:  # the first request pays for lazy imports and allocations: not part of the load
            first = await stream_one(client, base_url, model, Request("Hello", 1, 4), headers)
            if not first.ok:
                raise RuntimeError(f"the warm-up request failed: {first.error}")
        queue: asyncio.Queue[tuple[int, Request]] = asyncio.Queue()
        for item in enumerate(requests):
            queue.put_nowait(item)
        results: list[Result | None] = [None] * len(requests)

        async def worker() -> None:
            while True:
                try:
                    index, request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results[index] = await stream_one(client, base_url, model, request, headers)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def run_load(
    base_url: str,
    model: str,
    requests: list[Request],
    concurrency: int,
    *,
    api_key: str | None = None,
    warmup: bool = False,
) -> tuple[list[Result], float]:
    """Every request, ``concurrency`` at a time (each client takes the next when its last ends);
    the results in request order and the wall time from the first send to the last end."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return asyncio.run(_load(base_url, model, requests, concurrency, headers, warmup))


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(results: list[Result], wall: float) -> dict:
    """The figures of one run: failures (with the first reasons), throughput and latency percentiles."""
    good = [r for r in results if r.ok]
    output_tokens = sum(r.completion_tokens or len(r.chunk_times) for r in good)
    ttfts = [r.ttft for r in good if r.ttft is not None]
    tpots = [r.tpot for r in good if r.tpot is not None]
    latencies = [r.done - r.sent for r in good]
    return {
        "requests": len(results),
        "failures": len(results) - len(good),
        "failure_reasons": sorted({r.error for r in results if not r.ok})[:5],
        "total_s": wall,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in good),
        "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / wall if wall > 0 else 0.0,
        "requests_per_s": len(good) / wall if wall > 0 else 0.0,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "tpot_p50_s": percentile(tpots, 50),
        "tpot_p99_s": percentile(tpots, 99),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "finish_reasons": {
            reason: sum(r.finish_reason == reason for r in good)
            for reason in sorted({r.finish_reason for r in good})
        },
    }

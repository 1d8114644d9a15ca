"""Prometheus text for ``GET /metrics``, written by hand (the format is a few lines of text; the
client library would be a dependency for three counters and a histogram).

    lmforge_requests_total{endpoint="/v1/completions",status="200"} 12
    lmforge_prompt_tokens_total 340
    lmforge_completion_tokens_total 1200
    lmforge_queue_length 0                  # requests waiting for a batch row (Engine.stats().waiting)
    lmforge_batch_size 3                    # rows decoding together now (Engine.stats().running)
    lmforge_request_duration_seconds_bucket{endpoint="/v1/completions",le="0.5"} 9
    lmforge_time_to_first_token_seconds_bucket{le="0.1"} 11

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4): a ``# HELP`` and
``# TYPE`` line per family, cumulative ``_bucket`` counts ending at ``le="+Inf"``, then ``_sum`` and
``_count``. Everything is updated on the server's event loop, so no locks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        lines += [f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.count}"]
        return lines


class Metrics:
    """The server's counters; ``render(stats)`` adds the engine's gauges of the moment."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.first_token = Histogram()

    def request_done(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests[(endpoint, status)] += 1
        if seconds is not None:
            self.latency[endpoint].observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def render(self, stats: object | None) -> str:
        """The exposition text; ``stats``: ``Engine.stats()`` (running, waiting, steps, tokens)."""
        out = [
            "# HELP lmforge_requests_total HTTP requests answered, by endpoint and status code.",
            "# TYPE lmforge_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            out.append(f'lmforge_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        out += _single("lmforge_prompt_tokens_total", "counter", "Prompt tokens read.", self.prompt_tokens)
        out += _single(
            "lmforge_completion_tokens_total", "counter", "Tokens generated.", self.completion_tokens
        )
        if stats is not None:
            gauges = (
                ("lmforge_queue_length", "gauge", "Requests waiting for a batch row.", "waiting"),
                (
                    "lmforge_batch_size",
                    "gauge",
                    "Requests decoding together in the running batch.",
                    "running",
                ),
                ("lmforge_engine_steps_total", "counter", "Decoding steps the engine ran.", "steps"),
                ("lmforge_engine_tokens_total", "counter", "Tokens the engine produced.", "tokens"),
            )
            for name, kind, text, field in gauges:
                if hasattr(stats, field):
                    out += _single(name, kind, text, getattr(stats, field))
        out += [
            "# HELP lmforge_request_duration_seconds Time from a request's arrival to its last byte.",
            "# TYPE lmforge_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            out += histogram.lines("lmforge_request_duration_seconds", f'endpoint="{endpoint}"')
        out += [
            "# HELP lmforge_time_to_first_token_seconds Time from a request's arrival to its first token.",
            "# TYPE lmforge_time_to_first_token_seconds histogram",
            *self.first_token.lines("lmforge_time_to_first_token_seconds"),
        ]
        return "\n".join(out) + "\n"


def _single(name: str, kind: str, text: str, value: float) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]

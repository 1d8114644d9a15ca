"""The Prometheus text of ``GET /metrics``, against counts worked out by hand."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.serve.metrics import Histogram, Metrics


@dataclass
class Stats:
    running: int = 3
    waiting: int = 2
    steps: int = 40
    tokens: int = 90


def test_histogram_buckets_are_cumulative_and_inclusive():
    histogram = Histogram(buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.lines("latency", 'endpoint="/x"') == [
        'latency_bucket{endpoint="/x",le="0.1"} 2',  # 0.05 and 0.1: le means <=
        'latency_bucket{endpoint="/x",le="1"} 4',
        'latency_bucket{endpoint="/x",le="+Inf"} 5',
        'latency_sum{endpoint="/x"} 8.650000',
        'latency_count{endpoint="/x"} 5',
    ]


def test_render_has_every_family_once_with_its_type():
    metrics = Metrics()
    metrics.request_done("/v1/completions", 200, 0.2)
    metrics.request_done("/v1/completions", 200, 0.3)
    metrics.request_done("/v1/completions", 400, 0.001)
    metrics.tokens(prompt=12, completion=30)
    text = metrics.render(Stats())
    lines = text.splitlines()
    assert 'lmforge_requests_total{endpoint="/v1/completions",status="200"} 2' in lines
    assert 'lmforge_requests_total{endpoint="/v1/completions",status="400"} 1' in lines
    assert "lmforge_prompt_tokens_total 12" in lines and "lmforge_completion_tokens_total 30" in lines
    assert "lmforge_queue_length 2" in lines and "lmforge_batch_size 3" in lines
    assert 'lmforge_request_duration_seconds_count{endpoint="/v1/completions"} 3' in lines
    assert 'lmforge_request_duration_seconds_bucket{endpoint="/v1/completions",le="0.25"} 2' in lines
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(types) == len(set(types))  # one TYPE line per family
    for line in lines:
        if not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            assert any(name.startswith(family) for family in types), line
    assert text.endswith("\n")

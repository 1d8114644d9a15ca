"""``prepare`` in constant memory: the held-out documents are picked as they stream past (Algorithm S),
so nothing is kept per document; measured here with tracemalloc, and at scale by
``benchmarks/prepare_memory.py`` (peak RSS in a subprocess)."""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from collections import Counter

import pytest

from lmforge.data import prepare
from lmforge.data.prepare import _SelectionSampler, prepare_dataset
from lmforge.tokenizers import train_tokenizer

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
]


@pytest.mark.parametrize(("n", "k", "seed"), [(10, 3, 0), (1, 0, 5), (7, 7, 1), (1000, 250, 9)])
def test_selection_picks_exactly_k_of_n(n, k, seed):
    pick = _SelectionSampler(n, k, seed)
    assert sum(pick() for _ in range(n)) == k


def test_selection_makes_every_subset_equally_likely():
    """All C(5,2) = 10 subsets over 20,000 seeds: each count is Binomial(20000, 1/10), so within
    5 standard deviations (5 x 42) of 2,000."""
    trials = 20_000
    counts = Counter()
    for seed in range(trials):
        pick = _SelectionSampler(5, 2, seed)
        counts[tuple(i for i in range(5) if pick())] += 1
    assert set(counts) == set(itertools.combinations(range(5), 2))
    sd = math.sqrt(trials * 0.1 * 0.9)
    assert all(abs(count - trials / 10) <= 5 * sd for count in counts.values()), counts


def write_corpus(path, documents: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(documents):
            text = f"doc {i}: " + " ".join(WORDS[(i + j * j) % len(WORDS)] for j in range(3 + i % 5))
            handle.write(json.dumps({"text": text}) + "\n")


def peak_python_memory(tmp_path, name: str, documents: int) -> int:
    write_corpus(tmp_path / f"{name}.jsonl", documents)
    tracemalloc.start()
    try:
        meta = prepare_dataset(
            [str(tmp_path / f"{name}.jsonl")], tmp_path / "tok", tmp_path / name, progress=False
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meta["documents"] == documents and meta["split"]["rule"] == "documents"
    return peak


@pytest.mark.slow  # prepares two corpora big enough for the memory to show
def test_peak_memory_does_not_grow_with_the_number_of_documents(tmp_path, monkeypatch):
    """10,000 and 80,000 short documents (the pipeline's batches of 16 K characters hold about 400):
    the peak of Python's allocations stays within 1 MB, the noise of how many batches the encoding
    threads hold at the peak. Anything kept per document (the index list and set of held-out ids
    prepare kept before: 36+ bytes each) would add about 2.5 MB at 8x."""
    monkeypatch.setattr(prepare, "BATCH_CHARS", 1 << 14)  # steady state after a few documents
    train_tokenizer("char", " ".join(WORDS) + " doc:0123456789", None).save(tmp_path / "tok")
    peak_python_memory(tmp_path, "warm", 100)  # imports done on first use are not the corpus's
    small = peak_python_memory(tmp_path, "small", 10_000)
    large = peak_python_memory(tmp_path, "large", 80_000)
    assert large - small < 1 << 20, f"peak {small / 1e6:.2f} MB -> {large / 1e6:.2f} MB"

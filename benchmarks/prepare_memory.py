"""Peak memory of ``lmforge prepare`` against corpus size: it should stay flat (constant memory).

A generated .jsonl corpus of many short documents (the case where anything kept per document
grows with the corpus) at 1x, 2x and 8x a base size is prepared with a saved char tokenizer
(training a tokenizer is excluded: its counts grow with the vocabulary seen, not with the
corpus) in a fresh subprocess each, and that process's peak resident set size is read from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the imports and after ``prepare_dataset``.

    python benchmarks/prepare_memory.py [--base-mb 8] [--factors 1 2 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write_result  # noqa: E402

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

CHILD = """
import resource, sys
from lmforge.data.prepare import prepare_dataset
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
meta = prepare_dataset([sys.argv[1]], sys.argv[2], sys.argv[3], progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, meta["documents"], meta["train_tokens"] + meta["val_tokens"])
"""


def write_corpus(path: Path, megabytes: float) -> None:
    """Documents of 8 to 40 words, one JSON line each, until ``megabytes`` of text; deterministic."""
    target, size, index = int(megabytes * 1e6), 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while size < target:
            count = 8 + index * 7 % 33
            text = f"document {index}: " + " ".join(WORDS[(index + j * j) % len(WORDS)] for j in range(count))
            line = json.dumps({"text": text}) + "\n"
            handle.write(line)
            size, index = size + len(line), index + 1


def peak_rss_mb(corpus: Path, tokenizer: Path, out: Path) -> dict:
    """Prepare ``corpus`` in a fresh Python; its peak RSS (MB) after imports and after preparing."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(corpus), str(tokenizer), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after, documents, tokens = map(int, done.stdout.split())
    return {"imports_mb": before / 1024, "peak_mb": after / 1024, "documents": documents, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-mb", type=float, default=8.0)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 8])
    args = parser.parse_args()
    from lmforge.tokenizers import train_tokenizer

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_tokenizer("char", " ".join(WORDS) + " document:0123456789", None).save(work / "tok")
        for factor in args.factors:
            corpus = work / f"corpus{factor}.jsonl"
            write_corpus(corpus, args.base_mb * factor)
            figures = peak_rss_mb(corpus, work / "tok", work / f"out{factor}")
            figures["corpus_mb"] = round(corpus.stat().st_size / 1e6, 1)
            corpus.unlink()
            results.append({"factor": factor, **{k: round(v, 1) for k, v in figures.items()}})
            rows.append(
                [
                    f"{factor}x",
                    figures["corpus_mb"],
                    f"{figures['documents']:,}",
                    f"{figures['tokens']:,}",
                    f"{figures['imports_mb']:.0f}",
                    f"{figures['peak_mb']:.0f}",
                ]
            )
    print(table(rows, ["size", "corpus MB", "documents", "tokens", "RSS after imports MB", "peak RSS MB"]))
    growth = results[-1]["peak_mb"] - results[0]["peak_mb"]
    print(f"peak RSS grows {growth:+.1f} MB from {args.factors[0]}x to {args.factors[-1]}x the corpus")
    write_result("prepare_memory", {"machine": machine(), "base_mb": args.base_mb, "runs": results})


if __name__ == "__main__":
    main()

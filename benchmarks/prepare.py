"""Text throughput of ``lmforge prepare`` (MB of UTF-8 text per second), tokenizer training excluded.

For each corpus (the built-in stdlib docstrings; tiny Shakespeare when ../shared/data has it) a
tokenizer is trained and saved first, then ``prepare_dataset`` is timed with that directory,
best of --repeats runs (the machine is shared, so the best run is the least disturbed one).
"encode only" is the tokenizer's own ``encode_batch`` over the same pieces: the ceiling that
prepare's reading, splitting and writing eat into.

    python benchmarks/prepare.py [--vocab-size 8192] [--repeats 5] [--kinds bpe char]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, machine, table, write_result  # noqa: E402
from lmforge.data.corpora import iter_texts  # noqa: E402
from lmforge.data.prepare import CUT_RULES, chunk_text, prepare_dataset  # noqa: E402
from lmforge.tokenizers import load_tokenizer, train_tokenizer  # noqa: E402

TARGET_MB_PER_S = 5.0


def corpora() -> dict[str, str]:
    found = {"builtin:stdlib-docs": "builtin:stdlib-docs"}
    shakespeare = SHARED_DATA / "tinyshakespeare.txt"
    if shakespeare.is_file():
        found["tinyshakespeare.txt"] = str(shakespeare)
    else:
        print(f"(skipping tiny Shakespeare: {shakespeare} not found)")
    return found


def measure(spec: str, kind: str, vocab_size: int | None, repeats: int, work: Path) -> dict:
    texts = list(iter_texts([spec]))  # also fills the builtin cache, outside the timing
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    start = time.perf_counter()
    tokenizer = train_tokenizer(kind, texts, vocab_size)
    train_seconds = time.perf_counter() - start
    tokenizer.save(work / "tokenizer")

    pieces = [piece for text in texts for piece in chunk_text(text, CUT_RULES[kind])]
    encode_times = []
    for _ in range(repeats):
        fresh = load_tokenizer(work / "tokenizer")  # a cold cache, as prepare has
        start = time.perf_counter()
        fresh.encode_batch(pieces)
        encode_times.append(time.perf_counter() - start)

    times, meta = [], {}
    for _ in range(repeats):
        shutil.rmtree(work / "out", ignore_errors=True)
        start = time.perf_counter()
        meta = prepare_dataset([spec], work / "tokenizer", work / "out", progress=False)
        times.append(time.perf_counter() - start)
    return {
        "corpus": spec if spec.startswith("builtin:") else Path(spec).name,
        "tokenizer": kind,
        "vocab_size": tokenizer.vocab_size,
        "megabytes": round(megabytes, 3),
        "documents": meta["documents"],
        "tokens": meta["train_tokens"] + meta["val_tokens"],
        "tokenizer_train_seconds": round(train_seconds, 2),
        "prepare_seconds_best": round(min(times), 3),
        "prepare_seconds_median": round(statistics.median(times), 3),
        "prepare_mb_per_s": round(megabytes / min(times), 2),
        "prepare_mb_per_s_median": round(megabytes / statistics.median(times), 2),
        "tokenizer_encode_batch_mb_per_s": round(megabytes / min(encode_times), 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=["bpe", "char"], choices=sorted(CUT_RULES))
    args = parser.parse_args()

    rows = []
    for spec in corpora().values():
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as work:
                vocab = args.vocab_size if kind in ("bpe", "wordpiece", "unigram") else None
                rows.append(measure(spec, kind, vocab, args.repeats, Path(work)))
                print(f"measured {rows[-1]['corpus']} / {kind}", file=sys.stderr)

    headers = [
        "corpus",
        "tokenizer",
        "MB",
        "tokens",
        "prepare MB/s (best)",
        "median",
        "tokenizer.encode_batch MB/s",
        "load",
    ]
    print(
        table(
            [
                [
                    r["corpus"],
                    f"{r['tokenizer']} {r['vocab_size']}",
                    r["megabytes"],
                    f"{r['tokens']:,}",
                    r["prepare_mb_per_s"],
                    r["prepare_mb_per_s_median"],
                    r["tokenizer_encode_batch_mb_per_s"],
                    r["load_average_1min"],
                ]
                for r in rows
            ],
            headers,
        )
    )
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; tokenizers {info.get('tokenizers')}, python {info['python']}"
    )
    bpe = [r["prepare_mb_per_s"] for r in rows if r["tokenizer"] == "bpe"]
    if bpe:
        verdict = "meets" if min(bpe) >= TARGET_MB_PER_S else "is below"
        print(
            f"byte-level BPE: {min(bpe):.2f} MB/s at worst, which {verdict} the {TARGET_MB_PER_S} MB/s goal"
        )
    path = write_result(
        "prepare", {"target_mb_per_s": TARGET_MB_PER_S, "repeats": args.repeats, "rows": rows}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

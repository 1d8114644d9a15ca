"""From one process to several on one CPU machine: throughput of DDP, and memory per rank of DDP,
FSDP and tensor parallelism (gloo, torchrun), beside what ``lmforge estimate``'s model predicts.

1. tokens/s of 1 vs 2 processes (DDP) at the same per-rank batch of a small GPT: the single
   process both with one thread (what each torchrun rank gets) and with every core.
2. peak memory per rank while training a model that is large for this machine, under none /
   ddp / fsdp / tp=2: each rank's peak resident memory during its training steps (VmHWM, reset
   once the model is built and has taken a step) less its own baseline after imports, next to ``resources.sharded_training_estimate``'s weights + gradients +
   AdamW state (+ FSDP's gathered layers). The vocabulary is small (512) because lmforge's tensor
   parallelism splits the blocks, not the embedding.

    python benchmarks/scaling.py                   # both parts, results/scaling.json
    python benchmarks/scaling.py --parts memory --layers 8 --width 1024
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

VOCAB = 512


def _peak_kib() -> int:
    """This process's peak resident memory (VmHWM) in KiB since start or the last ``_reset_peak``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current resident size."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def worker(args: argparse.Namespace) -> None:
    """One rank (or the only process): train ``--steps`` steps, write its figures to --out."""
    import torch

    from lmforge.models.gpt import GPT, GPTConfig
    from lmforge.parallel.launch import parallel_transforms, parse_parallel, resolve_parallel, setup, teardown
    from lmforge.train import distributed
    from lmforge.train.objectives import language_model_loss
    from lmforge.train.optim import build_optimizer
    from lmforge.train.transforms import apply_transforms

    baseline = _peak_kib()  # KiB, after torch's own imports
    parallel = resolve_parallel(parse_parallel(args.parallel))
    mesh = setup(parallel, torch.device("cpu"), timeout_s=600)
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=VOCAB, block_size=args.block, n_layer=args.layers, n_head=args.heads, n_embd=args.width
    )
    model = apply_transforms(GPT(config), parallel_transforms(parallel, mesh, precision="fp32"))
    optimizer = build_optimizer(model, lr=1e-4)
    generator = torch.Generator().manual_seed(distributed.rank())
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:  # from here on, the peak of training itself (not of building the model)
            _reset_peak()
        ids = torch.randint(0, VOCAB, (args.batch, args.block + 1), generator=generator)
        start = time.perf_counter()
        loss, count = language_model_loss(model, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
        (loss / count).backward()
        distributed.clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = _peak_kib()
    result = {
        "rank": distributed.rank(),
        "world": distributed.world_size(),
        "step_s": sorted(times)[len(times) // 2] if times else None,
        "tokens_per_s": distributed.data_parallel_size()
        * args.batch
        * args.block
        / sorted(times)[len(times) // 2]
        if times
        else None,
        "peak_rise_mb": (peak - baseline) / 1024,
    }
    Path(args.out, f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    if mesh is not None:
        teardown()


def launch(nproc: int, threads: int, **flags) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        options = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()] + [f"--out={out}", "--worker"]
        # large blocks from mmap, returned when freed: resident memory follows the live tensors
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
        if nproc == 1:
            command = [sys.executable, __file__, *options]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                       __file__, *options]  # fmt: skip
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]


def speed_rows(args) -> list[list]:
    shape = dict(layers=4, width=256, heads=4, block=128, batch=8, steps=args.steps, warmup=2)
    rows = []
    for label, nproc, threads, batch in (
        ("1 process, 1 thread", 1, 1, 8),
        (f"1 process, {os.cpu_count()} threads", 1, os.cpu_count(), 8),
        ("2 processes DDP, 1 thread each", 2, 1, 8),
    ):
        ranks = launch(nproc, threads, **{**shape, "batch": batch}, parallel="ddp" if nproc > 1 else "none")
        rows.append([label, batch, f"{ranks[0]['tokens_per_s']:,.0f}", f"{ranks[0]['step_s'] * 1000:.0f}"])
    return rows


def memory_rows(args) -> tuple[list[list], list[dict]]:
    import torch

    from lmforge.models.gpt import GPT, GPTConfig
    from lmforge.resources import ADAMW_BYTES, sharded_training_estimate

    shape = dict(layers=args.layers, width=args.width, heads=args.heads, block=64, batch=2, steps=1, warmup=1)
    with torch.device("meta"):
        parameters = GPT(
            GPTConfig(
                vocab_size=VOCAB, block_size=64, n_layer=args.layers, n_head=args.heads, n_embd=args.width
            )
        ).num_parameters()
    rows, raw = [], []
    for label, nproc, parallel, tensor, shards in (
        ("one process", 1, "none", 1, 1),
        ("ddp x2", 2, "ddp", 1, 1),
        ("fsdp x2", 2, "fsdp", 1, 2),
        ("tp=2", 2, "tp=2", 2, 1),
    ):
        ranks = launch(nproc, 1, **shape, parallel=parallel)
        estimate = sharded_training_estimate(
            parameters=parameters, layers=args.layers, width=args.width, vocab_size=VOCAB,
            sequence_tokens=2 * 64, tensor=tensor, shards=shards, activation_bytes=4,
        )  # fmt: skip
        state = sum(v for k, v in estimate.parts.items() if k in ADAMW_BYTES or k.startswith("FSDP"))
        worst = max(r["peak_rise_mb"] for r in ranks)
        rows.append([label, f"{worst:,.0f}", f"{state / 2**20:,.0f}"])
        raw.append({"setup": label, "peak_rise_mb_per_rank": [r["peak_rise_mb"] for r in ranks],
                    "estimated_state_mb": state / 2**20})  # fmt: skip
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "memory"], choices=["speed", "memory"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per speed row")
    parser.add_argument("--layers", type=int, default=12, help="memory rows: layers of the large model")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    # the worker's own flags (set by launch)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("block", "batch", "warmup"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parallel", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from common import table, write_result

    previous = Path(__file__).parent / "results" / "scaling.json"  # a part not rerun keeps its figures
    payload: dict = (
        {k: v for k, v in json.loads(previous.read_text()).items() if k in ("speed", "memory")}
        if previous.exists()
        else {}
    )
    if "speed" in args.parts:
        rows = speed_rows(args)
        print("training tokens/s, gpt 4 x 256, context 128, 8 windows per rank (gloo, CPU)")
        print(table(rows, ["setup", "batch per rank", "tokens/s", "ms per step"]))
        payload["speed"] = rows
    if "memory" in args.parts:
        rows, raw = memory_rows(args)
        print(f"\npeak memory per rank, gpt {args.layers} x {args.width}, vocabulary {VOCAB}, fp32 AdamW")
        print(table(rows, ["setup", "measured rise, MB (worst rank)", "estimate: weights+grads+AdamW, MB"]))
        payload["memory"] = raw
    print(f"\nwritten to {write_result('scaling', payload)}")


if __name__ == "__main__":
    main()

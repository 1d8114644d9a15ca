"""What ``--activation-checkpointing`` trades on a CPU: the peak memory a training step adds, and
its time, with and without, for GPT shapes lmforge trains here.

Each measurement runs in a fresh process (``VmHWM``, its peak resident memory; ``ru_maxrss`` would carry over the parent's from before exec): build the
model, run one warm-up step on one sequence, note the resident memory, run the timed steps
(forward, backward, AdamW) on the full batch, and report the peak's growth over that and the
median step time. fp32, 2 threads, a
65-token vocabulary (character level), so the figures are about the blocks, not the output layer.

    python benchmarks/activation_checkpointing.py
    python benchmarks/activation_checkpointing.py --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_result  # noqa: E402

SHAPES = {  # name: (preset, overrides, batch size)
    "gpt-mini, batch 16 x 256": ("gpt-mini", {}, 16),
    "12 layers x 384, batch 8 x 256": ("gpt-mini", {"n_layer": 12, "n_embd": 384}, 8),
}

_STEP = textwrap.dedent(
    """
    import json, resource, statistics, sys, time
    import torch
    from lmforge.models.registry import build_model, preset_config
    from lmforge.train.optim import build_optimizer
    from lmforge.train.transforms import activation_checkpointing
    preset, overrides, batch, steps, on = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "on"
    torch.set_num_threads(2)
    torch.manual_seed(0)
    family, config = preset_config(preset, vocab_size=65, **overrides)
    model = build_model(family, config)
    if on:
        activation_checkpointing(model)
    optimizer = build_optimizer(model, lr=1e-3)
    ids = torch.randint(0, 65, (batch, config["block_size"] + 1))
    def step(rows):
        model(rows[:, :-1], labels=rows[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    step(ids[:1])  # the allocator, autograd and AdamW's state warmed up on one sequence
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(ids)
        times.append(time.perf_counter() - start)
    peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print(json.dumps({"growth": peak - before, "step_s": statistics.median(times)}))
    """
)


def measure(preset: str, overrides: dict, batch: int, steps: int, on: bool) -> dict:
    argv = [
        sys.executable,
        "-c",
        _STEP,
        preset,
        json.dumps(overrides),
        str(batch),
        str(steps),
        "on" if on else "off",
    ]
    # glibc hands every block over 64 KiB back to the system when freed (rather than keeping it in
    # its heap), so the resident peak follows the tensors alive
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per measurement")
    args = parser.parse_args(argv)
    rows, results = [], []
    for name, (preset, overrides, batch) in SHAPES.items():
        plain = measure(preset, overrides, batch, args.steps, on=False)
        kept = measure(preset, overrides, batch, args.steps, on=True)
        results.append(
            {"shape": name, "preset": preset, "overrides": overrides, "plain": plain, "checkpointed": kept}
        )
        rows.append(
            [
                name,
                f"{plain['growth'] / 2**20:,.0f} MiB",
                f"{kept['growth'] / 2**20:,.0f} MiB",
                f"{plain['growth'] / max(kept['growth'], 1):.1f}x less",
                f"{plain['step_s']:.2f} s",
                f"{kept['step_s']:.2f} s",
                f"{kept['step_s'] / plain['step_s']:.2f}x",
            ]
        )
    headers = ["shape", "peak growth", "with checkpointing", "memory", "step", "with checkpointing", "time"]
    print(table(rows, headers))
    print(f"wrote {write_result('activation_checkpointing', {'steps': args.steps, 'rows': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

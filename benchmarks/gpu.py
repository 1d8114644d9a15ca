"""Training tokens/s and MFU on one GPU: gpt2 (124M) at block 1024, bf16 autocast, torch.compile,
fused AdamW, as ``lmforge pretrain --model gpt2 --precision bf16 --compile`` trains it.

A few warm-up steps (compilation, the allocator, cuDNN/cuBLAS heuristics), then timed steps on
random token batches; the optimizer steps too, so the figure is a training step's, not a forward's.

MFU (model FLOPs utilisation, PaLM appendix B) = model FLOPs per token x tokens/s / peak FLOP/s:

    model FLOPs per token = 6 N + 3 x attention scores' forward FLOPs per token

with N every parameter (the tied token table counted once) and the attention term of
``models/flops.py`` (2 x context x width per causal layer, forward), the accounting of
``lmforge estimate``. Recomputation under ``--activation-checkpointing`` is not counted: MFU
measures useful work (the hardware does 4/3 of it). The peak is the GPU's dense bf16 figure from
``lmforge/gpus.py`` when CUDA's device name is in that table, else a large bf16 matmul timed here
(the row says "peak measured"); never an assumed figure.

    python benchmarks/gpu.py                                  # 10 warm-up + 20 timed steps, batch 16
    python benchmarks/gpu.py --steps 50 --batch-size 32
    python benchmarks/gpu.py --no-compile --activation-checkpointing

Without CUDA it prints one line saying so and exits 0. Results: ``results/gpu[-eager][-ckpt].json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak, table, write_result  # noqa: E402
from lmforge.gpus import GPU, gpu_for_device_name  # noqa: E402
from lmforge.models.flops import TRAINING_MULTIPLIER, attention_flops_per_token  # noqa: E402

PRESET = "gpt2"  # lmforge's name for GPT-2 small, 124M (models/registry.py)
BLOCK = 1024
WARMUP = 10
SKIP_LINE = (
    "skipped: benchmarks/gpu.py needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False)"
)


def training_flops_per_token(model: torch.nn.Module, context: int) -> float:
    """6 N + 3 x the attention scores' forward FLOPs per token, N = every parameter counted once."""
    parameters = sum(p.numel() for p in model.parameters())
    return 6 * parameters + TRAINING_MULTIPLIER * attention_flops_per_token(model, context)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
    return flops_per_token * tokens_per_s / peak


def peak_flops(device_name: str, measure=None) -> tuple[float, str]:
    """(bf16 FLOP/s, where it comes from): the datasheet's dense figure for a GPU ``gpus.py``
    knows by ``device_name``, else ``measure()`` (a large bf16 matmul timed on the device)."""
    known: GPU | None = gpu_for_device_name(device_name)
    if known is not None and "bf16" in known.tflops:
        return known.peak("bf16"), f"{known.label} datasheet"
    measure = measure or (lambda: matmul_peak(torch.bfloat16, sizes=(4096, 8192), seconds=2.0, device="cuda"))
    return measure(), "peak measured"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help=f"timed steps (after {WARMUP} warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences of 1024 tokens per step")
    parser.add_argument("--no-compile", action="store_true", help="eager mode instead of torch.compile")
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in backward",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """(the plain model, the module to train, fused AdamW), made ready as pretraining does."""
    from lmforge.models.registry import build_model, preset_config
    from lmforge.train.optim import build_optimizer
    from lmforge.train.transforms import activation_checkpointing, apply_transforms, compiled

    torch.manual_seed(0)
    family, config = preset_config(PRESET, block_size=BLOCK)
    net = build_model(family, config).to("cuda")
    transforms = ([activation_checkpointing] if args.activation_checkpointing else []) + (
        [] if args.no_compile else [compiled]
    )
    model = apply_transforms(net, transforms)
    optimizer = build_optimizer(model, lr=6e-4, weight_decay=0.1, device_type="cuda")
    return net, model, optimizer


def measure(args: argparse.Namespace) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = True
    net, model, optimizer = build(args)
    vocab = net.config.vocab_size
    batches = torch.randint(0, vocab, (4, args.batch_size, BLOCK + 1), device="cuda")

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(batch[:, :-1], labels=batch[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for i in range(WARMUP):
        step(i)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = args.steps * args.batch_size * BLOCK / elapsed
    name = torch.cuda.get_device_name()
    peak, source = peak_flops(name)
    per_token = training_flops_per_token(net, BLOCK)
    return {
        "gpu": name,
        "model": PRESET,
        "parameters": sum(p.numel() for p in net.parameters()),
        "block_size": BLOCK,
        "batch_size": args.batch_size,
        "compile": not args.no_compile,
        "activation_checkpointing": args.activation_checkpointing,
        "warmup_steps": WARMUP,
        "warmup_s": round(warmup_s, 1),
        "timed_steps": args.steps,
        "step_ms": round(1000 * elapsed / args.steps, 1),
        "tokens_per_s": round(tokens_per_s),
        "flops_per_token": per_token,
        "model_tflops": round(per_token * tokens_per_s / 1e12, 1),
        "peak_tflops": round(peak / 1e12, 1),
        "peak_source": source,
        "mfu": round(mfu(per_token, tokens_per_s, peak), 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    row = measure(args)
    headers = ["model", "GPU", "batch x block", "compile", "act. ckpt", "tokens/s", "model TFLOP/s"]
    headers += ["peak TFLOP/s", "MFU", "peak memory"]
    cells = [
        f"{row['model']} ({row['parameters'] / 1e6:.0f}M)",
        row["gpu"],
        f"{row['batch_size']} x {row['block_size']}",
        "yes" if row["compile"] else "no",
        "yes" if row["activation_checkpointing"] else "no",
        f"{row['tokens_per_s']:,}",
        row["model_tflops"],
        f"{row['peak_tflops']} ({row['peak_source']})",
        f"{row['mfu']:.1%}",
        f"{row['peak_memory_gib']} GiB",
    ]
    print(table([cells], headers))
    suffix = ("-eager" if args.no_compile else "") + ("-ckpt" if args.activation_checkpointing else "")
    print(f"wrote {write_result('gpu' + suffix, {'rows': [row]})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

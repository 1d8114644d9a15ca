"""Where a training step's time goes, in lmforge and in Hugging Face transformers, and the best
lmforge / transformers ratio that the kernels both share leave.

Issues 9, 12 and 15 ask for lmforge >= 1.3x transformers' fp32 training tokens/s. On a CPU both
libraries hand the same matrix products to the same MKL kernels and the same attention to
PyTorch's flash-attention kernel: lmforge cannot make those run faster, only run fewer of them
or spend less time around them. This benchmark times each comparison's steps (the batches,
models and optimizers of ``train_throughput.py``, ``train_throughput_bert.py`` and
``seq2seq_speed.py``; rounds interleaved in alternating order, median), runs torch.profiler over
the same steps of each, sorts every op's own time into matrix products, attention kernels and the
rest, and prints

    ceiling = transformers' step / (lmforge's matrix products + attention kernels)

the ratio lmforge would reach if everything else in its step (norms, activations, the optimizer,
autograd's copies) took no time at all. A ceiling under the goal means the goal needs fewer FLOPs
than transformers does; a ceiling over it says how much of lmforge's own time must go.

    python benchmarks/speed_ceiling.py                          # every comparison
    python benchmarks/speed_ceiling.py --only gpt-large seq2seq-small --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import in_turn, table, write_result  # noqa: E402
from lmforge.train.malloc import keep_freed_memory  # noqa: E402

GOAL = 1.3
MATMUL_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::addbmm",
        "aten::_addmm_activation",
        "mkldnn::_linear_pointwise",
        "aten::mkldnn_linear",
    }
)
ATTENTION_MARKERS = ("scaled_dot_product", "flash_attention", "efficient_attention")

Steps = list[Callable[[], object]]  # one training step per batch


def kind_of(op: str) -> str:
    """'matmul', 'attention' or 'rest': which of the three an op's own time counts in."""
    if op in MATMUL_OPS:
        return "matmul"
    if any(marker in op for marker in ATTENTION_MARKERS):
        return "attention"
    return "rest"


def shares(self_times: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Fractions of the total own time per kind, from (op name, own time) pairs."""
    totals = {"matmul": 0.0, "attention": 0.0, "rest": 0.0}
    for op, seconds in self_times:
        totals[kind_of(op)] += seconds
    whole = sum(totals.values())
    if whole <= 0:
        raise ValueError("the profiler recorded no time")
    return {kind: seconds / whole for kind, seconds in totals.items()}


def ceiling(reference_ms: float, ours_ms: float, ours_shares: dict[str, float]) -> float:
    """The reference's step over ours with everything but matrix products and attention removed."""
    return reference_ms / (ours_ms * (ours_shares["matmul"] + ours_shares["attention"]))


def profiled_shares(steps: Steps) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in steps:
            step()
    return shares((event.key, event.self_cpu_time_total) for event in prof.key_averages())


def gpt(shape_name: str, steps: int) -> tuple[Steps, Steps]:
    from train_throughput import SHAPES, VOCAB, Variant

    shape = SHAPES[shape_name]
    gen = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, VOCAB, (shape["batch_size"], shape["block_size"] + 1), generator=gen)
        for _ in range(steps)
    ]
    sides = [Variant(name, shape, "fp32") for name in ("lmforge", "hf")]
    return tuple([(lambda v=v, b=b: v.step(b[:, :-1], b[:, 1:])) for b in batches] for v in sides)


def bert_classify(steps: int) -> tuple[Steps, Steps]:
    from train_throughput_bert import BertVariant, bert_batches

    batches = bert_batches(steps)
    sides = [BertVariant(library, "classify", "fp32") for library in ("lmforge", "hf")]
    return tuple([(lambda v=v, b=b: v.step(b)) for b in batches] for v in sides)


def seq2seq(shape_name: str, steps: int) -> tuple[Steps, Steps]:
    from lmforge.train.onednn_linear import onednn_linears_pay_off, use_onednn_linears
    from seq2seq_speed import SHAPES, Variant, bart_model, lmforge_model, random_batches

    shape = SHAPES[shape_name]
    torch.manual_seed(0)
    ours = lmforge_model(shape)
    if onednn_linears_pay_off("cpu", ours):
        use_onednn_linears(ours)  # as `lmforge pretrain` and seq2seq_speed.py do where it pays
    torch.manual_seed(0)
    sides = [Variant("lmforge", ours), Variant("hf bart", bart_model(shape))]
    batches = random_batches(shape, steps)
    return tuple([(lambda v=v, b=b: v.step(b)) for b in batches] for v in sides)


COMPARISONS: dict[str, Callable[[int], tuple[Steps, Steps]]] = {
    "gpt-small": lambda steps: gpt("small", steps),
    "gpt-large": lambda steps: gpt("large", steps),
    "bert-classify": bert_classify,
    "seq2seq-nano": lambda steps: seq2seq("nano", steps),
    "seq2seq-small": lambda steps: seq2seq("small", steps),
}
DEFAULT_STEPS = {"gpt-small": 20, "gpt-large": 4, "bert-classify": 3, "seq2seq-nano": 6, "seq2seq-small": 4}


def median_step_ms(sides: dict[str, Steps], rounds: int) -> dict[str, float]:
    for steps in sides.values():  # warm-up
        for step in steps[:2]:
            step()
    per_step: dict[str, list[float]] = {name: [] for name in sides}
    for round_index in range(rounds):
        for name in in_turn(list(sides), round_index):
            start = time.perf_counter()
            for step in sides[name]:
                step()
            per_step[name].append((time.perf_counter() - start) / len(sides[name]) * 1e3)
    return {name: statistics.median(values) for name, values in per_step.items()}


def measure(name: str, rounds: int, steps: int) -> dict:
    ours, theirs = COMPARISONS[name](steps or DEFAULT_STEPS[name])
    sides = {"lmforge": ours, "hf": theirs}
    step_ms = median_step_ms(sides, rounds)
    split = {side: profiled_shares(steps) for side, steps in sides.items()}
    return {
        "step_ms": step_ms,
        "ratio": step_ms["hf"] / step_ms["lmforge"],
        "shares": split,
        "ceiling": ceiling(step_ms["hf"], step_ms["lmforge"], split["lmforge"]),
    }


def percent(shares_of: dict[str, float]) -> str:
    return " / ".join(f"{100 * shares_of[kind]:.0f}%" for kind in ("matmul", "attention", "rest"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", default=list(COMPARISONS), choices=list(COMPARISONS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: each comparison's own)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as `lmforge pretrain` runs; transformers gets it too (one process)
    results, rows = {}, []
    for name in args.only:
        result = measure(name, args.rounds, args.steps)
        results[name] = result
        rows.append(
            [
                name,
                f"{result['step_ms']['lmforge']:,.1f}",
                f"{result['step_ms']['hf']:,.1f}",
                f"{result['ratio']:.2f}x",
                percent(result["shares"]["lmforge"]),
                percent(result["shares"]["hf"]),
                f"{result['ceiling']:.2f}x",
            ]
        )
        print(f"{name}: {result['ratio']:.2f}x, ceiling {result['ceiling']:.2f}x", flush=True)
    print(
        table(
            rows,
            [
                "comparison",
                "lmforge ms/step",
                "HF ms/step",
                "lmforge / HF",
                "lmforge matmul / attention / rest",
                "HF matmul / attention / rest",
                "ceiling (rest = 0)",
            ],
        )
    )
    print(f"goal: >= {GOAL}x; ceiling = HF's step / lmforge's matrix products and attention alone")
    payload = {
        "goal": GOAL,
        "rounds": args.rounds,
        "malloc_keeps_freed_memory": kept,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    print(f"wrote {write_result('speed_ceiling', payload)}")
    return payload


if __name__ == "__main__":
    main()

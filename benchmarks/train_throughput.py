"""Training tokens/s: lmforge's GPT against Hugging Face's GPT2LMHeadModel, same shape, same batch;
and lmforge's BERT against BertForMaskedLM (masked-LM tokens/s) and BertForSequenceClassification
(fine-tuning steps/s) at a bert-mini shape (``train_throughput_bert.py``).

Both get the same optimizer (AdamW, fused where torch has it, decay on matrices only), the same
random token batches and gradient clipping, and the process keeps freed memory for the next
step as ``lmforge pretrain`` has it (``train/malloc.py``; with glibc's defaults a large step
page-faults 25,000-42,000 times); rounds are interleaved so that machine noise hits every variant
alike, and the median round is reported. Vocabulary 65 (character-level tiny
Shakespeare), so the figures are about the Transformer, not a giant output layer.

MFU = achieved model FLOP/s / measured matmul peak (a large square matmul timed in this run),
with model FLOPs per token = 6 * non-embedding parameters + 12 * layers * width * context
(Kaplan et al.; PaLM appendix B).

    python benchmarks/train_throughput.py                 # both shapes, fp32 and bf16
    python benchmarks/train_throughput.py --rounds 3 --shapes small
    python benchmarks/train_throughput.py --models bert  # the BERT rows only
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import bf16_runs_natively, in_turn, matmul_peak, table, write_result  # noqa: E402
from lmforge.models.gpt import GPT, GPTConfig  # noqa: E402
from lmforge.train.malloc import keep_freed_memory  # noqa: E402
from lmforge.train.onednn_linear import onednn_linears_pay_off, use_onednn_linears  # noqa: E402
from lmforge.train.optim import build_optimizer  # noqa: E402
from train_throughput_bert import BERT_GOALS, bert_rows  # noqa: E402

SHAPES = {
    "small": {"n_layer": 4, "n_embd": 128, "n_head": 4, "block_size": 64, "batch_size": 12},
    "large": {"n_layer": 6, "n_embd": 384, "n_head": 6, "block_size": 256, "batch_size": 8},
}
VOCAB = 65


class Variant:
    """One model + optimizer + precision; ``step()`` runs one training step on a batch."""

    def __init__(self, name: str, shape: dict, precision: str, compile_model: bool = False) -> None:
        self.name, self.precision = name, precision
        torch.manual_seed(0)
        if name.startswith("hf"):
            import transformers

            config = transformers.GPT2Config(
                vocab_size=VOCAB,
                n_positions=shape["block_size"],
                n_embd=shape["n_embd"],
                n_layer=shape["n_layer"],
                n_head=shape["n_head"],
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                bos_token_id=0,
                eos_token_id=0,
            )
            self.model = transformers.GPT2LMHeadModel(config)
            self.hf = True
            self.onednn = False
        else:
            config = GPTConfig(
                vocab_size=VOCAB,
                block_size=shape["block_size"],
                n_layer=shape["n_layer"],
                n_head=shape["n_head"],
                n_embd=shape["n_embd"],
                dropout=0.0,
                bias=True,
            )
            self.model = GPT(config)
            self.hf = False
            self.onednn = (
                precision == "fp32" and not compile_model and onednn_linears_pay_off("cpu", self.model)
            )
            if self.onednn:
                use_onednn_linears(self.model)  # what `lmforge pretrain` does for fp32 on a CPU
        self.model.train()
        self.optimizer = build_optimizer(self.model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
        self.forward = torch.compile(self.model) if compile_model else self.model

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        cast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with cast:
            if self.hf:
                # HF shifts labels itself; give it x with y's last token so both predict T tokens
                full = torch.cat([x, y[:, -1:]], dim=1)
                logits = self.forward(input_ids=full[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.float().view(-1, VOCAB), y.reshape(-1))
            else:
                loss = self.forward(x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def flops_per_token(shape: dict) -> float:
    L, C, T = shape["n_layer"], shape["n_embd"], shape["block_size"]
    non_embedding = L * 12 * C * C  # attention 4C^2 + MLP 8C^2 per layer
    return 6 * non_embedding + 12 * L * C * T


def measure(shape_name: str, variants: list[Variant], rounds: int, steps: int) -> dict[str, list[float]]:
    shape = SHAPES[shape_name]
    B, T = shape["batch_size"], shape["block_size"]
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, VOCAB, (B, T + 1), generator=gen) for _ in range(steps)]
    for variant in variants:  # warm-up (and compile)
        for batch in batches[:3]:
            variant.step(batch[:, :-1], batch[:, 1:])
    rates: dict[str, list[float]] = {v.label: [] for v in variants}
    for round_index in range(rounds):
        for variant in in_turn(variants, round_index):
            start = time.perf_counter()
            for batch in batches:
                variant.step(batch[:, :-1], batch[:, 1:])
            rates[variant.label].append(B * T * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["gpt", "bert"], choices=["gpt", "bert"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: 20 small, 4 large)")
    parser.add_argument("--bert-steps", type=int, default=3, help="BERT steps per round")
    parser.add_argument("--compile", action="store_true", help="also time lmforge with torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `lmforge pretrain` does; transformers shares it (one process)

    precisions = ["fp32", "bf16"] if bf16_runs_natively() else ["fp32"]
    if "bf16" not in precisions:
        print("bf16 rows skipped: this CPU has no bf16 hardware (emulated, about 8x slower than fp32)")
    peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    print("matmul peak: " + ", ".join(f"{p} {peak / 1e9:.0f} GFLOP/s" for p, peak in peaks.items()))
    results, rows = {}, []
    for shape_name in args.shapes if "gpt" in args.models else []:
        shape = SHAPES[shape_name]
        specs = [(name, p, False) for p in precisions for name in ("lmforge", "hf")]
        if args.compile:
            specs += [("lmforge", p, True) for p in precisions]
        variants = []
        for name, precision, compiled in specs:
            variant = Variant(name, shape, precision, compiled)
            variant.label = f"{name}{'+compile' if compiled else ''} {precision}"
            variants.append(variant)
        steps = args.steps or (20 if shape_name == "small" else 4)
        rates = measure(shape_name, variants, args.rounds, steps)
        baseline = statistics.median(rates["hf fp32"])
        for label, values in rates.items():
            rate = statistics.median(values)
            precision = label.split()[-1]
            mfu = rate * flops_per_token(shape) / peaks[precision]
            rows.append([shape_name, label, f"{rate:,.0f}", f"{rate / baseline:.2f}x", f"{100 * mfu:.1f}%"])
            results.setdefault(shape_name, {})[label] = {
                "tokens_per_s": rate,
                "all_rounds": values,
                "vs_hf_fp32": rate / baseline,
                "mfu": mfu,
            }
        results[shape_name]["shape"] = shape
        results[shape_name]["lmforge onednn linears"] = variants[0].onednn
    if rows:
        print(table(rows, ["shape", "variant", "tokens/s", "vs HF fp32", "MFU"]))
    if "bert" in args.models:
        bert_results, bert_table = bert_rows(precisions, peaks, args.rounds, args.bert_steps)
        results["bert"] = bert_results
        print(bert_table)
        print("goals: " + "; ".join(BERT_GOALS.values()))
    path = write_result(
        "train_throughput" if args.models == ["gpt", "bert"] else "train_throughput-" + "-".join(args.models),
        {
            "matmul_peak_flops": peaks,
            "vocab_size": VOCAB,
            "rounds": args.rounds,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

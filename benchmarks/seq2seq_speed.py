"""Training tokens/s of lmforge's Seq2SeqTransformer against Hugging Face's
BartForConditionalGeneration of the same shape (part of ``seq2seq.py``'s benchmark).

The lmforge model is configured as BART is (post-norm blocks, learned positions read at offset 2,
a LayerNorm after the embeddings, exact GELU, tied embeddings, a final-logits bias), dropout 0,
fp32, with the same layers, width, heads, feed-forward width and vocabulary as the BART one. Both
get the same AdamW (fused where torch has it, decay on matrices only, ``train/optim.py``), the
same random right-padded batches and gradient clipping; each step is one forward with labels
(mean cross-entropy over the real target tokens), backward, clip, optimizer step; freed memory
is kept for the next step, as ``lmforge pretrain`` keeps it (``train/malloc.py``). Rounds are
interleaved, in alternating order, so that noise from other processes hits every variant alike;
the median is reported.

Tokens counted: the real (non-padding) source tokens plus the real target tokens of a batch.
lmforge runs as ``lmforge pretrain`` would: its oneDNN linears are switched on where
``onednn_linears_pay_off`` measures that they train faster on this CPU (the JSON says whether).

    python benchmarks/seq2seq_speed.py              # both shapes, 5 rounds
    python benchmarks/seq2seq_speed.py --shapes nano --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import in_turn, table, write_result  # noqa: E402
from lmforge.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer  # noqa: E402
from lmforge.train.malloc import keep_freed_memory  # noqa: E402
from lmforge.train.onednn_linear import onednn_linears_pay_off, use_onednn_linears  # noqa: E402
from lmforge.train.optim import build_optimizer  # noqa: E402

SHAPES = {
    "nano": {"layers": 2, "width": 128, "heads": 4, "ffn": 512, "batch": 32, "source": 64, "target": 64},
    "small": {"layers": 4, "width": 256, "heads": 8, "ffn": 1024, "batch": 16, "source": 128, "target": 128},
}
VOCAB = 100  # character-level: the figures are about the encoder-decoder, not a giant output layer
GOAL = 1.3  # lmforge's tokens/s over BART's that issue 15 asks for


def lmforge_model(shape: dict) -> Seq2SeqTransformer:
    config = Seq2SeqConfig(
        vocab_size=VOCAB,
        block_size=max(shape["source"], shape["target"]),
        n_encoder_layer=shape["layers"],
        n_decoder_layer=shape["layers"],
        n_head=shape["heads"],
        n_embd=shape["width"],
        mlp_hidden=shape["ffn"],
        dropout=0.0,
        mlp="gelu_exact",
        norm_first=False,
        pos_encoding="learned",
        position_offset=2,
        layernorm_embedding=True,
        final_logits_bias=True,
        decoder_start_token_id=2,
    )
    return Seq2SeqTransformer(config)


def bart_model(shape: dict) -> torch.nn.Module:
    import transformers

    config = transformers.BartConfig(
        vocab_size=VOCAB,
        max_position_embeddings=max(shape["source"], shape["target"]),
        encoder_layers=shape["layers"],
        decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        d_model=shape["width"],
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    return transformers.BartForConditionalGeneration(config)


class Variant:
    """A model and its AdamW; ``step(batch)`` is one training step."""

    def __init__(self, label: str, model: torch.nn.Module) -> None:
        self.label, self.model = label, model
        self.model.train()
        self.optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def random_batches(shape: dict, count: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches: sources of S/2..S real tokens, targets of T/2..T (pad id 1)."""
    gen = torch.Generator().manual_seed(seed)
    B, S, T = shape["batch"], shape["source"], shape["target"]
    batches = []
    for _ in range(count):
        source_len = torch.randint(S // 2, S + 1, (B, 1), generator=gen)
        target_len = torch.randint(T // 2, T + 1, (B, 1), generator=gen)
        mask = (torch.arange(S)[None] < source_len).long()
        input_ids = torch.randint(3, VOCAB, (B, S), generator=gen).masked_fill(mask == 0, 1)
        labels = torch.randint(3, VOCAB, (B, T), generator=gen)
        real = torch.arange(T)[None] < target_len
        decoder_input_ids = torch.cat([torch.full((B, 1), 2), labels[:, :-1]], dim=1).masked_fill(~real, 1)
        batches.append(
            {
                "input_ids": input_ids,
                "attention_mask": mask,
                "decoder_input_ids": decoder_input_ids,
                "labels": labels.masked_fill(~real, -100),
            }
        )
    return batches


def measure(shape: dict, variants: list[Variant], rounds: int, steps: int) -> dict[str, list[float]]:
    batches = random_batches(shape, steps)
    tokens = sum(int(b["attention_mask"].sum() + (b["labels"] != -100).sum()) for b in batches)
    for variant in variants:  # warm-up
        for batch in batches[:2]:
            variant.step(batch)
    rates: dict[str, list[float]] = {v.label: [] for v in variants}
    for round_index in range(rounds):
        for variant in in_turn(variants, round_index):
            start = time.perf_counter()
            for batch in batches:
                variant.step(batch)
            rates[variant.label].append(tokens / (time.perf_counter() - start))
    return rates


def speed_race(shapes: list[str] | None = None, rounds: int = 5, steps: int = 0, quick: bool = False) -> dict:
    """{shape: {variant: {tokens_per_s, all_rounds}, "lmforge_vs_bart": ratio, ...}}, printed as a table."""
    results, rows = {}, []
    for name in shapes or (["nano"] if quick else list(SHAPES)):
        shape = SHAPES[name]
        torch.manual_seed(0)
        ours = lmforge_model(shape)
        onednn = not quick and onednn_linears_pay_off("cpu", ours)
        if onednn:
            use_onednn_linears(ours)  # what `lmforge pretrain` does for fp32 on a CPU where it pays
        torch.manual_seed(0)
        variants = [Variant("lmforge", ours), Variant("hf bart", bart_model(shape))]
        rates = measure(shape, variants, rounds, steps or (2 if quick else 6))
        medians = {label: statistics.median(values) for label, values in rates.items()}
        ratio = medians["lmforge"] / medians["hf bart"]
        results[name] = {
            **{label: {"tokens_per_s": medians[label], "all_rounds": rates[label]} for label in rates},
            "lmforge_vs_bart": ratio,
            "shape": shape,
            "lmforge_onednn_linears": onednn,
        }
        for label in rates:
            rows.append(
                [name, label, f"{medians[label]:,.0f}", f"{medians[label] / medians['hf bart']:.2f}x"]
            )
        print(f"{name}: lmforge {ratio:.2f}x BART's tokens/s", flush=True)
    print(table(rows, ["shape", "variant", "train tokens/s (source + target)", "vs BART"]))
    print(f"goal: lmforge >= {GOAL}x BART's tokens/s")
    return {"vocab_size": VOCAB, "rounds": rounds, "goal": GOAL, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: 6)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `lmforge pretrain` does; transformers shares it (one process)
    payload = speed_race(args.shapes, args.rounds, args.steps)
    print(f"wrote {write_result('seq2seq_speed', payload)}")


if __name__ == "__main__":
    main()

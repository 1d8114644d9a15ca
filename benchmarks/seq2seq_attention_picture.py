"""Draw the README's alignment picture (docs/seq2seq_attention.png) from a real small run of the
reverse task.

    python benchmarks/seq2seq_attention_picture.py                       # prepares, trains (~1 min), draws
    python benchmarks/seq2seq_attention_picture.py --checkpoint runs/reverse-rnn --source hdbaefcjig

Without --checkpoint it prepares `builtin:reverse?length=8-16` at character level with `lmforge
prepare --task seq2seq`, trains the rnn-attn preset on its pairs for --steps steps of 64 pairs (the
data layer's bucketed batches, AdamW with a linear decay), saves the run (under --workdir, kept),
then asks the trained model for the source's target with `lmforge generate --source` and draws the
alignment of that output with `lmforge attention --source --target`: the commands a user runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = "builtin:reverse?length=8-16"


def lmforge(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], check=True, capture_output=True, text=True
    ).stdout


def train(workdir: Path, steps: int) -> Path:
    """The rnn-attn preset trained ``steps`` steps on the reverse task; returns the run directory."""
    import torch

    from lmforge.data.seq2seq_batches import Seq2SeqBatches, TargetIds
    from lmforge.data.seq2seq_shards import load_seq2seq
    from lmforge.models.registry import build_model, preset_config
    from lmforge.run import Run

    data_dir = workdir / "data"
    if not (data_dir / "meta.json").exists():
        lmforge("prepare", "--task", "seq2seq", "--data", TASK, "--tokenizer", "char", "--out", str(data_dir))
    data = load_seq2seq(data_dir)
    ids = TargetIds(**data.target_ids)
    family, config = preset_config("rnn-attn")
    torch.manual_seed(0)
    model = build_model(
        family,
        {**config, "vocab_size": data.target_tokenizer.vocab_size, "decoder_start_token_id": ids.start},
    )
    batches = Seq2SeqBatches(data.pairs("train"), 64, ids, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    start = time.perf_counter()
    for step in range(steps):
        loss = model(**batches.next_batch()).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    run = Run.create(workdir / "reverse-rnn", overwrite=True)
    run.save_tokenizer(data.target_tokenizer)
    run.write_config({"family": family, "model": model.config.to_dict()})
    run.save_weights(model.eval())
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained seq2seq run (default: train one)")
    parser.add_argument(
        "--workdir", type=Path, help="where the data and the run go (default: a temporary folder)"
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--source", default="hdbaefcjig", help="a source of the task's letters (a-j)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "seq2seq_attention.png")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seq2seq-picture-"))
    checkpoint = args.checkpoint or train(workdir, args.steps)
    result = json.loads(lmforge("generate", "--checkpoint", str(checkpoint), "--source", args.source,
                                "--strategy", "greedy", "--json"))  # fmt: skip
    target = result["samples"][0]["text"]
    print(f"{args.source} -> {target} ({'right' if target == args.source[::-1] else 'wrong'})")
    print(lmforge("attention", "--checkpoint", str(checkpoint), "--source", args.source, "--target", target,
                  "--out", str(args.out), "--overwrite"), end="")  # fmt: skip


if __name__ == "__main__":
    main()

"""``lmforge demo``: the whole pipeline on the built-in corpus, in a few minutes on a CPU."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

from lmforge.bounds import OUT_DIR, SEED, Bounds
from lmforge.commands._json import print_json

PROMPTS = ["Return the", "This module provides", ""]
MARKER = ".lmforge-demo"
DEMO_ENTRIES = frozenset({MARKER, "data", "run"})


def demo(
    *,
    minutes: Annotated[float, Bounds(positive=True, at_most=10_080)] = 3.0,
    out: Annotated[Path, OUT_DIR] = Path("runs/demo"),
    vocab_size: Annotated[int, Bounds(positive=True, at_most=1_000_000)] = 4096,
    seed: Annotated[int, SEED] = 1337,
    as_json: bool = False,
) -> dict:
    """Tokenize, pretrain, evaluate and sample a small GPT on the Python stdlib's docstrings.

    1. prepare: extract builtin:stdlib-docs (~1.6 MB), train a byte-level BPE tokenizer and
       tokenize the corpus into OUT/data;
    2. pretrain: a small GPT for about --minutes on the CPU into OUT/run (loss.png shows the curves);
    3. evaluate: validation loss and perplexity over the whole held-out split;
    4. generate: three samples.
    Re-running replaces OUT when it holds a previous demo (and nothing else); any other
    non-empty directory is refused, so the demo never deletes files it did not write.

    Args:
        minutes: wall-clock budget for training.
        out: where the dataset and the run go.
        vocab_size: BPE vocabulary size.
        seed: seed for the split, the model and the samples.
    """
    from lmforge.commands.evaluate import evaluate
    from lmforge.commands.generate import generate
    from lmforge.commands.prepare import prepare
    from lmforge.commands.pretrain import pretrain_with
    from lmforge.fileio import replace_previous_output

    start = time.perf_counter()
    out = replace_previous_output(out, overwrite=True, marker=MARKER, known=DEMO_ENTRIES, kind="demo output")
    (out / MARKER).write_text("written by `lmforge demo`; re-running the demo replaces this directory\n")
    data_dir, run_dir = out / "data", out / "run"

    def say(text: str) -> None:
        if not as_json:
            print(text, flush=True)

    say(f"== 1/4 prepare: builtin:stdlib-docs -> byte-level BPE ({vocab_size} ids) -> {data_dir}")
    prepare(
        data=["builtin:stdlib-docs"],
        tokenizer="bpe",
        vocab_size=vocab_size,
        out=data_dir,
        seed=seed,
        as_json=as_json,
    )
    say(f"\n== 2/4 pretrain: a small GPT for {minutes:g} minutes -> {run_dir}")
    trained = pretrain_with(
        data=data_dir,
        out=run_dir,
        model="gpt-nano",
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=192,
        max_time=minutes * 60,
        batch_size=16,
        lr=2e-3,
        warmup_steps=50,
        eval_every=100,
        eval_batches=10,
        seed=seed,
        as_json=as_json,
    )
    if trained["interrupted"]:
        raise KeyboardInterrupt  # Ctrl-C: the run is saved; stop here rather than go on to evaluate
    say("\n== 3/4 evaluate: the whole validation split")
    evaluation = evaluate(checkpoint=run_dir, data=[str(data_dir)], as_json=as_json)
    say("\n== 4/4 generate: three samples (temperature 0.8, top-k 50)")
    samples = []
    for i, prompt in enumerate(PROMPTS):
        say(f"--- prompt {prompt!r}" if prompt else "--- no prompt (start of a document)")
        result = generate(
            checkpoint=run_dir,
            prompt=prompt,
            max_new_tokens=60,
            temperature=0.8,
            top_k=50,
            seed=seed + i,
            as_json=as_json,
        )
        samples.append(prompt + result["samples"][0]["text"])
    first = trained["first_val_loss"]
    summary = {
        "run": str(run_dir),
        "plot": trained["plot"],
        "initial_val_perplexity": math.exp(first),
        "val_perplexity": evaluation["perplexity"],
        "val_loss": evaluation["loss"],
        "perplexity_drop": math.exp(first) / evaluation["perplexity"],
        "steps": trained["steps"],
        "tokens_per_s": trained["tokens_per_s"],
        "samples": samples,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    if as_json:
        print_json(summary)
    else:
        drop = summary["perplexity_drop"]
        change = f"{drop:.0f}x lower" if drop >= 1 else f"rose {1 / drop:.1f}x"
        print(
            f"\n== done in {summary['elapsed_s']:.0f} s: validation perplexity {summary['initial_val_perplexity']:.0f} "
            f"-> {summary['val_perplexity']:.1f} ({change}) after {trained['steps']} steps.\n"
            f"   run directory: {run_dir}   loss curves: {trained['plot']}\n"
            f'   next: lmforge generate --checkpoint {run_dir} --prompt "Return a"\n'
            f"         lmforge evaluate --checkpoint {run_dir} --data {data_dir}"
        )
    return summary

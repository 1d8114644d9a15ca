"""``lmforge pretrain --model ngram``: count n-grams of a prepared dataset into a run directory.

    lmforge pretrain --model ngram --order 3 --smoothing kn --data data/shakespeare-char --out runs/kn3

An n-gram model is not trained by gradient descent: "training" is one pass of counting over the
train split (``models/ngram.py``), then one perplexity over the validation split. The run
directory is the same as every other family's (config.json, tokenizer/, metrics.jsonl), with the
counts in ``ngram.safetensors`` instead of ``model.safetensors``, so ``evaluate``, ``generate``
and ``score`` read it unchanged.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.commands._json import print_json
from lmforge.errors import UserInputError
from lmforge.models.loss import perplexity as language_model_perplexity
from lmforge.train.config import flag_name


def pretrain_ngram(
    *,
    preset: str,
    data: Path | None,
    out: Path | None,
    resume: Path | None,
    settings: dict[str, Any],
    train: dict[str, Any],
    overwrite: bool,
    as_json: bool,
) -> dict:
    """Count an n-gram model; ``settings`` are the model flags given, ``train`` the training flags
    given (none applies: counting has no steps, learning rate or batches)."""
    from lmforge.models.registry import check_settings

    if resume is not None or data is None or out is None:
        raise UserInputError("an n-gram model is counted in one pass: give --data DIR and --out RUN")
    if train:
        raise UserInputError(
            f"{', '.join(map(flag_name, train))} does not apply to --model {preset}: it is counted, not trained; its flags "
            "are --order, --smoothing, --add-k, --discount"
        )
    check_settings(preset, settings)
    order, smoothing = settings.get("order", 3), settings.get("smoothing", "modified-kn")
    add_k, discount = settings.get("add_k", 1.0), settings.get("discount")
    from lmforge.data.shards import load_prepared
    from lmforge.models.ngram import NGramConfig, NGramLM
    from lmforge.run import Run, directory_fingerprint

    dataset = load_prepared(data)
    tokenizer = dataset.tokenizer
    eos_id = tokenizer.document_separator_id
    config = NGramConfig(
        order=order,
        smoothing=smoothing,
        vocab_size=tokenizer.vocab_size,
        eos_id=eos_id,
        k=add_k,
        discount=discount,
    )
    train_tokens, val_tokens = dataset.split("train"), dataset.split("val")
    if len(train_tokens) == 0 or len(val_tokens) == 0:
        raise UserInputError(f"{data} has an empty train or val split; prepare more text")
    start = time.perf_counter()
    lm = NGramLM.fit(np.asarray(train_tokens), config)
    count_seconds = time.perf_counter() - start
    val_logprobs = lm.logprobs(np.asarray(val_tokens))
    val_loss = float(-val_logprobs.mean())
    elapsed = time.perf_counter() - start

    run = Run.create(out, overwrite=overwrite)
    run.save_tokenizer(tokenizer)
    run.write_config(
        {
            "family": NGramLM.family,
            "model": config.to_dict(),
            "data": {
                "path": str(Path(data).resolve()),
                "tokenizer_fingerprint": directory_fingerprint(dataset.tokenizer_dir),
                "tokenizer_kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size,
            },
        }
    )
    run.save_ngram(lm)
    perplexity = language_model_perplexity(val_loss)
    record = {"step": 0, "val_loss": round(val_loss, 6), "val_perplexity": round(perplexity, 4)}
    run.metrics_path.write_text(json.dumps(record) + "\n", encoding="utf-8")

    summary = {
        "run": str(run.path),
        "family": NGramLM.family,
        "order": order,
        "smoothing": smoothing,
        "train_tokens": int(len(train_tokens)),
        "distinct_ngrams": [int(n) for n in lm.num_grams],
        "parameters": int(sum(lm.num_grams)),  # stored n-grams: what the model "learned"
        "count_s": round(count_seconds, 3),
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(len(train_tokens) / max(count_seconds, 1e-9), 1),
        "val_loss": val_loss,
        "val_perplexity": perplexity,
    }
    if as_json:
        print_json(summary)
    else:
        grams = ", ".join(f"{n:,}" for n in lm.num_grams)
        print(
            f"counted a {order}-gram model ({smoothing}) on {len(train_tokens):,} tokens in "
            f"{count_seconds:.2f} s ({summary['tokens_per_s']:,.0f} tokens/s); distinct 1..{order}-grams: {grams}"
        )
        print(f"validation loss {val_loss:.4f} (perplexity {perplexity:.2f}) over {len(val_tokens):,} tokens")
        if not math.isfinite(val_loss):
            print("  an unsmoothed (mle) model gives probability 0 to unseen n-grams: use --smoothing kn")
        print(f"run directory: {run.path}")
    return summary

"""A run loaded for inference, and what the inference commands (generate, evaluate, score,
attention) do with it, whatever the model's family: they parse flags and print around these.

    loaded = load_for_inference("runs/shakespeare", dtype="bf16", pack_rows=4)
    loaded.model, loaded.tokenizer, loaded.device, loaded.eos_id    # eos_id: end-of-text, or None
    ids, dropped = encode_prompt("ROMEO:", loaded.tokenizer, loaded.model.context_limit)
        # "" -> [end-of-text]: a continuation from nothing starts a document;
        # a prompt longer than the context keeps its last context_limit tokens (dropped says how many went)
    scores = score_text(loaded.model, ids, start_id=loaded.tokenizer.document_start_id)
    loss, count = stream_loss(loaded.model, tokens, block_size=check_window(loaded.model, None, None))

A neural model (an ``nn.Module``) goes to the device in the dtype asked for, its linear layers
packed for oneDNN when ``pack_rows`` is given (generate/packing.py: decoding on a CPU reads the
weights 2-3x faster); a counted model (n-gram) stays in numpy on the CPU and scores whole streams
(``model.scores_whole_stream``, models/protocol.py). Nothing here asks which family it holds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from lmforge.errors import CheckpointError, UserInputError
from lmforge.models.protocol import LanguageModel, require_causal
from lmforge.run import Run, directory_fingerprint
from lmforge.train.scoring import TokenScores


@dataclass
class LoadedModel:
    """A run's model in eval mode on ``device``, with the tokenizer it was trained with."""

    run: Run
    model: LanguageModel
    tokenizer: object  # lmforge.tokenizers.Tokenizer
    device: torch.device

    @property
    def eos_id(self) -> int | None:
        """End-of-text: what ``prepare`` put between documents, so where a continuation ends."""
        return self.tokenizer.document_separator_id


def load_for_inference(
    checkpoint: str | Path,
    *,
    weights: Literal["auto", "best", "last"] = "auto",
    device: str = "auto",
    dtype: Literal["fp32", "bf16"] = "fp32",
    pack_rows: int | None = None,
    causal_for: str | None = "this command",
) -> LoadedModel:
    """Open a run and make its model ready to read text.

    weights: best (lowest validation loss), last, or auto (best when it exists).
    device: auto (a CUDA GPU when one is visible), cpu, cuda; a counted model always runs on the CPU.
    dtype: fp32, or bf16 (half the memory; fast where the hardware computes it natively).
    pack_rows: pack the linear layers for oneDNN, for decoding this many rows at a time, where a
        one-time race on this CPU says packing beats plain layers (None: don't).
    causal_for: the command, which reads text left to right: a masked LM (BERT) is refused with
        one line naming it; None accepts any model.
    """
    from lmforge.hardware import bf16_is_emulated, resolve_device

    run = Run.open(checkpoint)
    model = run.load_model(weights)
    if causal_for is not None:
        require_causal(model, causal_for)
    tokenizer = run.load_tokenizer()
    if not isinstance(model, nn.Module):  # counts in numpy
        return LoadedModel(run, model, tokenizer, torch.device("cpu"))
    resolved = resolve_device(device)
    model.to(device=resolved, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    if pack_rows is not None:
        from lmforge.generate.packing import pack_linear_layers, packing_pays_off

        if packing_pays_off(model, pack_rows):
            pack_linear_layers(model, rows_hint=pack_rows)
    if dtype == "bf16" and bf16_is_emulated(resolved):
        print(
            f"note: this {resolved.type} has no bf16 hardware: bf16 is emulated, slower than --dtype fp32",
            file=sys.stderr,
        )
    return LoadedModel(run, model, tokenizer, resolved)


def encode_prompt(text: str, tokenizer, context_limit: int | None) -> tuple[list[int], int]:
    """(the prompt's ids, how many were dropped from its front to fit ``context_limit``).

    An empty prompt is the document start (end-of-text, else bos): generation from nothing begins
    a document, as after every end-of-text in training."""
    ids = tokenizer.encode(text) if text else []
    if not ids:
        start = tokenizer.document_start_id
        if start is None:
            raise UserInputError("this tokenizer has no end-of-text or beginning token; give a --prompt")
        ids = [start]
    dropped = 0
    if context_limit is not None and len(ids) > context_limit:
        dropped = len(ids) - context_limit
        ids = ids[-context_limit:]
    return ids, dropped


def score_text(
    model: LanguageModel,
    ids: Sequence[int],
    *,
    start_id: int | None,
    stride: int = 1,
    batch_size: int = 16,
) -> TokenScores:
    """ln p of each token of ``ids`` given the ones before it (train/scoring.py).

    A neural model reads the text after ``start_id`` in windows of its context sliding by
    ``stride`` (all at once when it reads any length); a counted model scores the whole stream,
    its first tokens seeing the padded contexts of a document start."""
    if model.scores_whole_stream:
        return TokenScores(list(ids), [float(value) for value in model.logprobs(np.asarray(ids))])
    from lmforge.train.scoring import score_tokens

    context = model.context_limit
    window = context if context is not None else len(ids) + 1  # no limit: the whole text at once
    return score_tokens(
        model, ids, block_size=window, start_id=start_id, stride=min(stride, window), batch_size=batch_size
    )


def check_window(model: LanguageModel, block_size: int | None, stride: int | None) -> int | None:
    """The evaluation window for ``model``: ``block_size`` or its training window, within its context;
    None for a counted model, which scores a stream whole. Refuses a --stride outside 1..window."""
    if model.scores_whole_stream:
        return None
    context = model.context_limit
    block_size = block_size or model.config.block_size
    if context is not None and block_size > context:
        raise UserInputError(
            f"--block-size {block_size} is larger than the model's context of {context} tokens"
        )
    if stride is not None and not 0 < stride <= block_size:
        raise UserInputError(f"--stride must be between 1 and the block size {block_size}; got {stride}")
    return block_size


def stream_loss(
    model: LanguageModel,
    tokens: np.ndarray,
    *,
    block_size: int | None,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """(mean loss per scored token, tokens scored) over a token stream; every token but the first
    is scored, as its windows (``check_window``) or, for a counted model, the whole stream."""
    if model.scores_whole_stream:
        logprobs = model.logprobs(np.asarray(tokens))[1:]  # the tokens a windowed model scores
        return float(-logprobs.mean()), len(logprobs)
    from lmforge.data.batching import sequential_windows
    from lmforge.train.evaluation import mean_loss

    block_size = min(block_size, len(tokens) - 1)
    _check_evaluation_memory(model, len(tokens), block_size, stride, batch_size, device)
    windows = sequential_windows(tokens, block_size, batch_size=batch_size, stride=stride)
    return mean_loss(model, windows, device)


def _check_evaluation_memory(
    model: nn.Module, length: int, block_size: int, stride: int | None, batch_size: int, device
) -> None:
    """Refuse windows that clearly cannot fit in memory (``resources.py``); a batch holds at most
    as many windows as the text has."""
    from lmforge.resources import check_fits, evaluation_estimate

    windows = -(-(length - 1) // (stride or block_size)) + 1
    estimate = evaluation_estimate(model, batch_size=min(batch_size, windows), block_size=block_size)
    check_fits(
        estimate,
        flags=f"--block-size {block_size} with --batch-size {batch_size}",
        what="the model and one batch of windows",
        device=device if device is not None else "cpu",
        hint="lower --batch-size or --block-size",
    )


def evaluation_tokens(
    data: list[str], run: Run, tokenizer, split: str, text_field: str, errors: str = "strict"
) -> tuple[np.ndarray, str]:
    """(token ids to score, what they are): a prepared split (tokenized like the run), or raw text
    sources tokenized with the run's tokenizer, documents joined by end-of-text; ``errors``: what
    bytes that are not UTF-8 become (``data/corpora.py``)."""
    if len(data) == 1 and Path(data[0]).is_dir() and (Path(data[0]) / "meta.json").exists():
        from lmforge.data.shards import load_prepared

        dataset = load_prepared(data[0])
        if directory_fingerprint(dataset.tokenizer_dir) != directory_fingerprint(run.tokenizer_dir):
            raise CheckpointError(
                f"{data[0]} was prepared with a different tokenizer than {run.path}; re-run `lmforge prepare` "
                f"with --tokenizer {run.tokenizer_dir}, or pass raw text instead"
            )
        if split not in ("train", "val"):
            raise UserInputError(f"--split must be train or val; got {split!r}")
        return dataset.split(split), f"{data[0]} ({split} split)"
    from lmforge.data.corpora import iter_texts

    separator = tokenizer.document_separator_id
    ids: list[int] = []
    for text in iter_texts(data, text_field=text_field, errors=errors):
        ids.extend(tokenizer.encode(text))
        if separator is not None:
            ids.append(separator)
    if separator is not None and ids:
        ids.pop()  # nothing follows the last document
    return np.asarray(ids, dtype=np.int64), " ".join(data)

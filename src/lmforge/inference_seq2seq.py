"""What the inference commands (generate, score, attention) do with an encoder-decoder run, whatever
its family (the Transformer of models/seq2seq.py, the RNN of models/rnn_seq2seq.py).

    loaded = load_seq2seq("runs/reverse", command="lmforge generate", instead="--prompt")
    ids, dropped = encode_source("abc", loaded)           # the source's ids, cut to the model's source limit
    rows = generate_targets(loaded, [ids], GenerationConfig(strategy="beam", num_beams=4))
    scores = score_target(loaded, ids, loaded.tokenizer.encode("cba"))   # ln p of each target token, then end
    weights = cross_attention(loaded, ids, loaded.tokenizer.encode("cba"))  # (layers, heads, T + 1, S)

The ids follow the training batches (data/seq2seq_batches.py): a source is its tokenizer's ids
with no start or end token, right-padded in a batch; the decoder starts from the model's
``decoder_start_token_id`` and a target ends at the target tokenizer's end token (eos, else sep).
A source longer than the model's source limit keeps its first tokens, as training kept them, and
the caller says how many were dropped; a target is never cut where it is scored: one that does not
fit the target limit is refused, naming the limit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lmforge.errors import UserInputError
from lmforge.run import Run
from lmforge.train.scoring import TokenScores


@dataclass
class LoadedSeq2Seq:
    """A seq2seq run's model in eval mode on ``device``, with its source and target tokenizers."""

    run: Run
    model: nn.Module
    source_tokenizer: object  # lmforge.tokenizers.Tokenizer; the target's own object when shared
    tokenizer: object  # the target tokenizer: what generated ids decode with
    device: torch.device

    @property
    def start_id(self) -> int:
        """The decoder's first input, as training fed it."""
        return int(self.model.config.decoder_start_token_id)

    @property
    def end_id(self) -> int | None:
        """Where a target ends: the target tokenizer's eos, else its sep (data/seq2seq_batches.py)."""
        tokenizer = self.tokenizer
        return tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id

    @property
    def source_pad_id(self) -> int:
        """Fills a batch's shorter sources; masked out, so any id would do."""
        tokenizer = self.source_tokenizer
        return next((i for i in (tokenizer.pad_id, tokenizer.eos_id, tokenizer.sep_id) if i is not None), 0)


def require_seq2seq(model, command: str, instead: str) -> None:
    """Refuse a model that does not write a target for a source, naming the flag it takes instead."""
    if model.lm_kind != "seq2seq":  # every family says what its logits predict (models/protocol.py)
        raise UserInputError(
            f"{command} --source needs a seq2seq (encoder-decoder) model, and this run holds a {model.lm_kind} "
            f"language model ({model.family}: {model.describe()}); give {instead} instead"
        )


def load_seq2seq(
    checkpoint: str | Path,
    *,
    command: str,
    instead: str,
    weights: Literal["auto", "best", "last"] = "auto",
    device: str = "auto",
    dtype: Literal["fp32", "bf16"] = "fp32",
) -> LoadedSeq2Seq:
    """Open a seq2seq run for a command given ``--source``; any other model is refused in one line
    that names ``instead`` (the flag that model takes: --prompt, --text)."""
    from lmforge.hardware import bf16_is_emulated, resolve_device

    run = Run.open(checkpoint)
    model = run.load_model(weights)
    require_seq2seq(model, command, instead)
    resolved = resolve_device(device)
    model.to(device=resolved, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    model.eval()
    if dtype == "bf16" and bf16_is_emulated(resolved):  # as inference.load_for_inference says it
        print(
            f"note: this {resolved.type} has no bf16 hardware: bf16 is emulated, slower than --dtype fp32",
            file=sys.stderr,
        )
    return LoadedSeq2Seq(run, model, run.load_source_tokenizer(), run.load_tokenizer(), resolved)


def encode_source(text: str, loaded: LoadedSeq2Seq, what: str = "the source") -> tuple[list[int], int]:
    """(the source's ids, how many were dropped from its end to fit the model's source limit)."""
    ids = loaded.source_tokenizer.encode(text) if text else []
    if not ids:
        raise UserInputError(f"{what} is empty (no tokens); give a text to read")
    limit = loaded.model.context_limit
    if limit is not None and len(ids) > limit:
        return ids[:limit], len(ids) - limit
    return ids, 0


def clamp_new_tokens(model: nn.Module, max_new_tokens: int) -> tuple[int, str | None]:
    """(new tokens that fit after the start token within the model's target limit, a note when cut)."""
    limit = getattr(model, "target_limit", None)
    if limit is None or max_new_tokens + 1 <= limit:
        return max_new_tokens, None
    return limit - 1, (
        f"note: --max-new-tokens {max_new_tokens} is past the model's target limit of {limit} tokens "
        f"(the start token included); generating at most {limit - 1}"
    )


@torch.no_grad()
def generate_targets(
    loaded: LoadedSeq2Seq,
    sources: Sequence[Sequence[int]],
    config,
    *,
    generator: torch.Generator | None = None,
    on_token=None,
):
    """``config.num_return_sequences`` continuations (generate.Continuation) per source, decoded
    together: sources right-padded, one decoder row per source (per beam, per sample)."""
    import dataclasses

    from lmforge.generate import generate
    from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources

    if config.eos_id is None:
        config = dataclasses.replace(config, eos_id=loaded.end_id)
    source_ids, source_mask = pad_sources(sources, loaded.source_pad_id, loaded.device)
    step_model = EncoderDecoderStepModel(loaded.model, source_ids, source_mask)
    prompts = [[loaded.start_id]] * len(sources)
    return generate(
        step_model, prompts, config, generator=generator, tokenizer=loaded.tokenizer, on_token=on_token
    )


def _teacher_forced(loaded: LoadedSeq2Seq, source_ids: Sequence[int], target_ids: Sequence[int], **kwargs):
    """One forward of the pair: decoder input [start] + target."""
    limit = getattr(loaded.model, "target_limit", None)
    if limit is not None and len(target_ids) + 1 > limit:
        raise UserInputError(
            f"the target has {len(target_ids)} tokens; with the start token (and the end token it is scored "
            f"with) that is past the model's target limit of {limit} tokens: give at most {limit - 1}"
        )
    device = loaded.device
    source = torch.tensor([list(source_ids)], dtype=torch.long, device=device)
    decoder = torch.tensor([[loaded.start_id, *target_ids]], dtype=torch.long, device=device)
    return loaded.model(source, torch.ones_like(source), decoder, **kwargs)


@torch.no_grad()
def score_target(loaded: LoadedSeq2Seq, source_ids: Sequence[int], target_ids: Sequence[int]) -> TokenScores:
    """ln p of each target token given the source and the target before it, then of the end token:
    the tokens teacher forcing scores, so -sum / count is the model's training loss on the pair."""
    end = loaded.end_id
    if end is None:
        raise UserInputError("the target tokenizer has no end token (eos or sep), so a target cannot end")
    labels = [*target_ids, end]
    logits = _teacher_forced(loaded, source_ids, target_ids).logits[0].double()  # (T + 1, V)
    logprobs = torch.log_softmax(logits, dim=-1).gather(
        1, torch.tensor(labels, device=logits.device)[:, None]
    )
    return TokenScores(labels, logprobs[:, 0].tolist())


@torch.no_grad()
def cross_attention(
    loaded: LoadedSeq2Seq, source_ids: Sequence[int], target_ids: Sequence[int]
) -> torch.Tensor:
    """(layers, heads, T + 1, S) float32 on the CPU: row t is how the decoder step that predicts
    target token t (the end token for the last row) spreads its attention over the source tokens;
    each row sums to 1. A model whose decoder does not attend to the source is refused."""
    model = loaded.model
    output = _teacher_forced(loaded, source_ids, target_ids, output_attentions=True)
    if not output.cross_attentions:
        raise UserInputError(
            f"this run holds a seq2seq model without attention ({model.family}: {model.describe()}): its decoder "
            "sees the source only through the encoder's final state, so there is no alignment to draw"
        )
    return torch.stack([layer[0] for layer in output.cross_attentions]).float().cpu()

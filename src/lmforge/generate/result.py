"""What a decoding strategy returns, and how it becomes one continuation per returned sequence.

    Decoded(ids=[[12, 7, 0, 0]], token_logprobs=[[-0.3, -1.2, -0.1, 0.0]], lengths=[3], finish=[EOS])
    -> Continuation(ids=[12, 7], logprob=-1.6, finish="eos", text=" to be")

``Decoded`` holds fixed-width tensors, one row per returned sequence (prompt-major: the rows of
prompt b are b * n ... b * n + n - 1); a row is valid up to its length, end-of-text included.
``Continuation`` is the user's view: the new ids without end-of-text and cut before any stop
string, their text when a tokenizer is at hand, and ``logprob``, the model's own log-probability
of those ids (plus the end-of-text token when one ended the row), before any processor: it does
not depend on the temperature or top-k used to pick them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lmforge.generate.stopping import StopStrings

RUNNING, EOS, STOP = 0, 1, 2  # Decoded.finish codes; a row still running at the end hit max_new_tokens


@dataclass
class Decoded:
    ids: torch.Tensor  # (N, n) new tokens; filler after each row's length
    token_logprobs: torch.Tensor  # (N, n) model log-probability of each new token
    lengths: torch.Tensor  # (N,) new tokens per row, end-of-text included
    finish: torch.Tensor  # (N,) RUNNING, EOS or STOP
    scores: torch.Tensor | None = None  # (N,) beam search: the length-penalized score


@dataclass
class Continuation:
    ids: list[int]
    logprob: float
    finish: Literal["eos", "stop", "length"]
    text: str | None = None
    score: float | None = None  # beam search only


def continuations(decoded: Decoded, tokenizer=None, stop: StopStrings | None = None) -> list[Continuation]:
    """One Continuation per row of ``decoded``."""
    result = []
    scores = decoded.scores.tolist() if decoded.scores is not None else [None] * len(decoded.lengths)
    rows = zip(
        decoded.ids.tolist(),
        decoded.token_logprobs.tolist(),
        decoded.lengths.tolist(),
        decoded.finish.tolist(),
        scores,
    )
    for ids, logprobs, length, finish, score in rows:
        ids, logprobs = ids[:length], logprobs[:length]
        kept = length - 1 if finish == EOS else length
        text = None
        if stop:
            ids_kept, text, found = stop.cut(ids[:kept])
            kept = len(ids_kept)
            finish = STOP if found else finish
        elif tokenizer is not None:
            text = tokenizer.decode(ids[:kept])
        logprob = sum(logprobs[: kept + (finish == EOS)])
        name = {EOS: "eos", STOP: "stop"}.get(finish, "length")
        result.append(Continuation(ids[:kept], logprob, name, text, score))
    return result

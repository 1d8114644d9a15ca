"""How likely a model finds a text, token by token.

    "ROMEO:" scored by a character model, after <|endoftext|> (the start of a document):
        token   R      O      M      E      O      :
        prob    0.031  0.412  0.254  0.902  0.981  0.975
    log p(text) = ln 0.031 + ln 0.412 + ... + ln 0.975 = -5.88 nats   (the chain rule)
    perplexity  = exp(-log p(text) / 6 tokens) = 2.66

Conditioning the first token on the start token scores every token of the text. A text longer
than the model's context is read in windows of the context's length that slide by ``stride``
tokens, each scoring only the tokens no earlier window scored (``data.batching.sequential_windows``,
as ``evaluate`` does); with stride 1 every token is predicted from as many preceding tokens as fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmforge.data.batching import sequential_windows
from lmforge.models.loss import IGNORE_INDEX, perplexity


@dataclass
class TokenScores:
    """The tokens of a text and the natural log of each one's probability given those before it."""

    token_ids: list[int]
    logprobs: list[float]

    @property
    def logprob(self) -> float:
        """log p(text) in nats: the sum of the per-token log-probabilities."""
        return math.fsum(self.logprobs)

    @property
    def probs(self) -> list[float]:
        return [math.exp(value) for value in self.logprobs]

    @property
    def perplexity(self) -> float:
        """exp(-log p(text) / tokens): the number of equally likely choices the model hesitated between."""
        if not self.logprobs:
            return math.nan
        return perplexity(-self.logprob / len(self.logprobs))


@torch.no_grad()
def score_tokens(
    model: nn.Module,
    token_ids: Sequence[int],
    *,
    block_size: int,
    start_id: int | None = None,
    stride: int = 1,
    batch_size: int = 16,
    device: torch.device | str | None = None,
) -> TokenScores:
    """log p(token | preceding tokens) for each of ``token_ids``.

    Args:
        model: returns ``.logits`` (B, T, vocab) for ``model(input_ids)``.
        token_ids: the text's tokens.
        block_size: the longest context the model accepts.
        start_id: a token put before the text (end-of-text: the start of a document) so that the
            first token is scored too; None leaves the first token as context only.
        stride: how far each window slides past the first; 1 gives every token the most context.
        batch_size: windows per forward pass.
    """
    sequence = ([start_id] if start_id is not None else []) + [int(i) for i in token_ids]
    if len(sequence) < 2:
        return TokenScores(token_ids=[], logprobs=[])
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    logprobs: list[torch.Tensor] = []
    windows = sequential_windows(np.asarray(sequence, dtype=np.int64), block_size, batch_size, stride, device)
    for batch in windows:
        logits = model(batch["input_ids"]).logits.float()  # (B, T, vocab)
        labels = batch["labels"]  # (B, T), -100 where an earlier window scored the token
        scored = labels != IGNORE_INDEX
        picked = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T)
        logprobs.append(picked[scored].double().cpu())  # row-major: the text's order
    model.train(was_training)
    return TokenScores(token_ids=sequence[1:], logprobs=torch.cat(logprobs).tolist())

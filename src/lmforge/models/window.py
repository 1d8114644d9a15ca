"""Fixed-window neural language model (Bengio, Ducharme, Vincent & Jauvin 2003).

Each token is predicted from the ``context`` (n) tokens before it, and from nothing else:

    "the cat sat on the", n = 3  ->  predict what follows from ("sat", "on", "the") only
    x = [C(sat); C(on); C(the)]              concatenated embeddings, oldest first   (n * m,)
    y = b + W x + U tanh(d + H x)            Bengio et al. 2003, eq. 1              (vocab,)
    p(next | sat on the) = softmax(y)

W x are the optional "direct connections" from the embeddings to the output (``direct``).

For a sequence (B, T) the model predicts every position at once, so it keeps the contract of
every lmforge language model: ``logits[:, t]`` scores the token after ``input_ids[:, t]`` and
``labels`` align with the logits (-100 ignored). Position t sees tokens t-n+1 .. t; where those
reach before the start of the input (or onto padding, ``attention_mask`` 0) the slot holds a
**zero vector** instead of an embedding, so no token id is reserved as a start symbol and a
prefix shorter than n means the same thing whether it begins a row or follows left padding.

``block_size`` is only the length of the training windows; the model reads inputs of any length
and never looks further back than n tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.loss import language_model_loss
from lmforge.models.protocol import LMOutput, NeuralLM


@dataclass
class WindowConfig:
    vocab_size: int = 50257
    context: int = 8  # n: how many previous tokens each prediction sees
    n_embd: int = 32  # m: width of one token's embedding
    hidden_size: int = 256  # h: tanh units
    direct: bool = True  # direct connections W x from the embeddings to the output
    dropout: float = 0.0  # on the hidden layer
    block_size: int = 64  # length of the training windows (not a limit on the input)

    def __post_init__(self) -> None:
        if self.context < 1:
            raise ValueError(f"context must be at least 1 token; got {self.context}")
        if min(self.n_embd, self.hidden_size, self.block_size) < 1:
            raise ValueError("n_embd, hidden_size and block_size must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


class FixedWindowLM(NeuralLM):
    family = "window"
    config_class = WindowConfig
    decoding = "window"  # a decoder keeps the last ``window_size`` tokens (generate/classic_step.py)
    context_limit = None  # reads any length; only the last ``config.context`` tokens matter

    def __init__(self, config: WindowConfig) -> None:
        super().__init__()
        self.config = config
        features = config.context * config.n_embd
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)  # C
        self.hidden = nn.Linear(features, config.hidden_size)  # H, d
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)  # U, b
        self.direct = nn.Linear(features, config.vocab_size, bias=False) if config.direct else None  # W
        nn.init.normal_(self.embedding.weight, std=0.1)
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)  # start as a plain MLP; the shortcut is learned

    @property
    def window_size(self) -> int:
        """n: the tokens one prediction reads."""
        return self.config.context

    def describe(self) -> str:
        config = self.config
        direct = " + direct connections" if config.direct else ""
        return (
            f"(the previous {config.context} tokens x {config.n_embd}-dim embeddings -> "
            f"{config.hidden_size} tanh units{direct}; trained on windows of {config.block_size})"
        )

    def embedding_parameters(self) -> list[nn.Parameter]:
        """C, the token table (the output layers read hidden units and windows, not single tokens)."""
        return [self.embedding.weight]

    def windows(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """x for every position: the concatenated embeddings of its n-token window, (B, T, n * m)."""
        n = self.config.context
        e = self.embedding(input_ids)  # (B, T, m)
        if attention_mask is not None:
            e = e * attention_mask[..., None].to(e.dtype)  # padding -> zero vectors
        if last_only:
            e = F.pad(e[:, -n:], (0, 0, n - min(n, e.shape[1]), 0))  # (B, n, m)
            return e.flatten(1)[:, None]  # (B, 1, n * m)
        e = F.pad(e, (0, 0, n - 1, 0))  # (B, n - 1 + T, m): zero vectors before the start
        x = e.unfold(1, n, 1)  # (B, T, m, n): window t is e[t .. t + n - 1], oldest first
        return x.transpose(-1, -2).flatten(-2)  # (B, T, n * m)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        last_logits_only: bool = False,
    ) -> LMOutput:
        """Logits for every position (or the last), and the loss when ``labels`` are given.

        attention_mask: (B, T), 1 real token, 0 padding: a padded slot counts as a zero vector.
        last_logits_only: logits (B, 1, vocab) for the last position only (decoding).
        """
        x = self.windows(input_ids, attention_mask, last_only=last_logits_only)  # (B, T, n * m)
        a = self.drop(torch.tanh(self.hidden(x)))  # tanh(d + H x), (B, T, h)
        logits = self.output(a)  # b + U tanh(d + H x)
        if self.direct is not None:
            logits = logits + self.direct(x)  # + W x
        loss = None
        if labels is not None:
            loss = language_model_loss(logits, labels, reduction)
        return LMOutput(logits=logits, loss=loss)

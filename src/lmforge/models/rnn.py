"""Recurrent language models: the Elman RNN, the LSTM and the GRU.

    tokens (B, T) -> embedding (B, T, E) -> dropout -> n_layer recurrent layers -> h (B, T, H)
    -> dropout -> linear head (tied to the embedding when E == H) -> logits (B, T, vocab)

    "ROMEO:" -> h_1 = f(h_0, R) -> h_2 = f(h_1, O) -> ... -> h_6 = f(h_5, :) -> softmax(W_yh h_6 + b_y)
    every h_t summarises the whole prefix, so the context has no length limit (only a memory).

The Elman network (Elman 1990) is the lecture's Algorithm 1, per layer, with sigma = tanh by default:

    a_t = W_ah h_{t-1} + W_ax x_t + b_a,    h_t = sigma(a_t),    y_t = softmax(W_yh h_t + b_y)

``recurrence="loop"`` runs exactly that, one time step at a time in Python (``elman_loop``); the
default ``"fused"`` hands the same weights to ``nn.RNN`` (one C++/cuDNN call), which computes the
same function for tanh and relu (sigmoid has no fused kernel and always loops). PyTorch keeps b_a
as two vectors, ``bias_ih + bias_hh`` (cuDNN's convention); the loop adds them. The LSTM
(Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014) are ``nn.LSTM`` and ``nn.GRU``.
Dropout sits on the non-recurrent connections only (Zaremba et al. 2014): after the embedding,
between layers and before the head.

State. The hidden state is a tuple of (n_layer, B, H) tensors: (h,) for Elman and GRU, (h, c) for
the LSTM. ``forward`` starts from ``state`` (default zeros) and returns the state it ends with, so a
decoder feeds one token at a time (generate/classic_step.py). Padding (``attention_mask`` 0) leaves
the state unchanged, h_t = h_{t-1}: a left-padded prompt ends in the state it has alone. (The
fused kernels take no mask, so a padded batch runs one time step per call; only prompts are padded.)

Truncated backpropagation through time. A training batch from ``data/streams.py`` holds the next
window of each of B parallel streams of text; the training objective (``train/objectives.py``,
``CarriedStateLoss``) passes each window the state the previous window of its stream ended with,
detached (the gradient stops at the window's start: that is the truncation). The model itself
keeps no state between calls: ``forward`` is a function of its inputs and ``state``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.hardware import bf16_recurrent_works
from lmforge.models.loss import language_model_loss
from lmforge.models.protocol import LMOutput, NeuralLM

State = tuple[torch.Tensor, ...]  # each (n_layer, B, H)


@dataclass
class RNNConfig:
    vocab_size: int = 50257
    n_embd: int = 64  # E: token embedding width
    hidden_size: int = 256  # H: recurrent state width
    n_layer: int = 1
    dropout: float = 0.0
    tie_embeddings: bool | None = None  # None: tie the head to the embedding when E == H
    block_size: int = 64  # training window (truncated-BPTT length); not a limit on the input

    def __post_init__(self) -> None:
        if min(self.n_embd, self.hidden_size, self.n_layer, self.block_size) < 1:
            raise ValueError("n_embd, hidden_size, n_layer and block_size must be positive")
        if self.tie_embeddings is None:
            self.tie_embeddings = self.n_embd == self.hidden_size
        elif self.tie_embeddings and self.n_embd != self.hidden_size:
            raise ValueError(
                f"tie_embeddings needs n_embd == hidden_size (the head reads h, the embedding writes x); "
                f"got {self.n_embd} and {self.hidden_size}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ElmanConfig(RNNConfig):
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"  # sigma
    recurrence: Literal["fused", "loop"] = "fused"  # nn.RNN, or the lecture's loop in Python


def elman_loop(
    x: torch.Tensor,
    h0: torch.Tensor,
    rnn: nn.RNN,
    activation: str,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's Elman forward pass with ``rnn``'s weights: (top layer's h (B, T, H), h_T (L, B, H)).

    x: (B, T, E) inputs; h0: (L, B, H); mask: (B, T), 0 where the state must not change.
    """
    sigma = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[activation]
    finals = []
    for layer in range(rnn.num_layers):
        W_ax, W_ah = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_a = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
        ax = F.linear(x, W_ax, b_a)  # W_ax x_t + b_a for every t at once, (B, T, H)
        h, outputs = h0[layer], []
        for t in range(x.shape[1]):
            h_new = sigma(ax[:, t] + F.linear(h, W_ah))  # h_t = sigma(W_ah h_{t-1} + W_ax x_t + b_a)
            h = h_new if mask is None else torch.where(mask[:, t, None].bool(), h_new, h)
            outputs.append(h)
        x = torch.stack(outputs, dim=1)  # (B, T, H)
        finals.append(h)
        if layer < rnn.num_layers - 1:
            x = F.dropout(x, dropout, training)  # as nn.RNN does between layers
    return x, torch.stack(finals)


class RecurrentLM(NeuralLM):
    """Embedding -> ``self.recurrence`` (an nn.RNN, nn.LSTM or nn.GRU) -> head; subclasses pick it."""

    family = "recurrent"
    config_class = RNNConfig
    decoding = "recurrent_state"  # a decoder feeds one token at a time from the state (classic_step.py)
    context_limit = None  # reads any length
    carries_state = True  # trains on consecutive windows (data/streams.py), state carried across
    state_tensors = 1  # (h,); the LSTM has (h, c)

    def __init__(self, config: RNNConfig, recurrence: nn.RNNBase) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.recurrence = recurrence
        self.head = nn.Linear(config.hidden_size, config.vocab_size)  # W_yh, b_y
        # the initialisation of PyTorch's word_language_model example (after Zaremba et al. 2014)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight  # Press & Wolf 2017
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def describe(self) -> str:
        config = self.config
        layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
        tied = ", tied" if config.tie_embeddings else ""
        return (
            f"({self.kind}, {layers} x {config.hidden_size}, {config.n_embd}-dim embeddings{tied}; "
            f"truncated BPTT over windows of {config.block_size})"
        )

    @property
    def kind(self) -> str:
        """The network's name in a summary: LSTM, GRU (the Elman RNN adds its activation)."""
        return self.family.upper()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token table and the output head (the same tensor when tied)."""
        return [self.embedding.weight, self.head.weight]

    def initial_state(self, batch_size: int, like: torch.Tensor) -> State:
        """Zeros: h_0 = 0 (and c_0 = 0), as in the lecture's algorithm."""
        shape = (self.config.n_layer, batch_size, self.config.hidden_size)
        return tuple(like.new_zeros(shape) for _ in range(self.state_tensors))

    def _fused(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        device = x.device.type
        if torch.is_autocast_enabled(device) and not bf16_recurrent_works(type(self.recurrence), x.device):
            # no bf16 kernel for this layer here (oneDNN's LSTM on AVX2 CPUs): the recurrence runs in
            # fp32 inside autocast, the embedding and head stay in autocast's dtype
            with torch.autocast(device, enabled=False):
                out, final = self.recurrence(
                    x.float(), tuple(s.float() for s in state) if self.state_tensors > 1 else state[0].float()
                )
        else:
            out, final = self.recurrence(x, state if self.state_tensors > 1 else state[0])
        return out, final if isinstance(final, tuple) else (final,)

    def _masked(self, x: torch.Tensor, state: State, mask: torch.Tensor) -> tuple[torch.Tensor, State]:
        """One step at a time; where mask is 0 the state stays as it was (h_t = h_{t-1})."""
        outputs = []
        for t in range(x.shape[1]):
            _, new = self._fused(x[:, t : t + 1], state)
            keep = mask[:, t].bool()[None, :, None]  # (1, B, 1)
            state = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
            outputs.append(state[0][-1])  # the top layer's h after position t
        return torch.stack(outputs, dim=1), state

    def recur(self, x: torch.Tensor, state: State, mask: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """(top layer's h for every position (B, T, H), final state)."""
        if mask is None:
            return self._fused(x, state)
        return self._masked(x, state, mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        state: State | None = None,
        last_logits_only: bool = False,
    ) -> LMOutput:
        """Logits for every position, the final state, and the loss when ``labels`` are given.

        attention_mask: (B, T), 1 real token, 0 padding (the state does not change there).
        state: the state to start from (a previous call's ``.state``); default zeros.
        last_logits_only: logits (B, 1, vocab) for the last position only (decoding).
        """
        B = input_ids.shape[0]
        x = self.drop(self.embedding(input_ids))  # (B, T, E)
        state = self.initial_state(B, x) if state is None else tuple(s.to(x.dtype) for s in state)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing padded: the fused path
        h, state = self.recur(x, state, attention_mask)  # (B, T, H)
        if last_logits_only:
            h = h[:, -1:]
        logits = self.head(self.drop(h))  # W_yh h_t + b_y, (B, T, vocab)
        loss = None
        if labels is not None:
            loss = language_model_loss(logits, labels, reduction)
        return LMOutput(logits=logits, loss=loss, state=state)


def recurrent_layers(kind: type[nn.RNNBase], config: RNNConfig, **extra) -> nn.RNNBase:
    """``config.n_layer`` stacked layers of ``kind`` (nn.RNN, nn.LSTM, nn.GRU), batch first;
    dropout between layers only (PyTorch warns for a single layer)."""
    dropout = config.dropout if config.n_layer > 1 else 0.0
    return kind(
        config.n_embd,
        config.hidden_size,
        num_layers=config.n_layer,
        dropout=dropout,
        batch_first=True,
        **extra,
    )


class ElmanRNN(RecurrentLM):
    """The Elman network; ``nn.RNN`` holds its weights and runs it when that is the same function."""

    family = "rnn"
    config_class = ElmanConfig

    @property
    def kind(self) -> str:
        return f"Elman RNN, {self.config.activation}"

    def __init__(self, config: ElmanConfig) -> None:
        nonlinearity = config.activation if config.activation != "sigmoid" else "tanh"  # sigmoid: loop
        rnn = recurrent_layers(nn.RNN, config, nonlinearity=nonlinearity)
        super().__init__(config, rnn)

    def recur(self, x: torch.Tensor, state: State, mask: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        config = self.config
        if mask is None and config.recurrence == "fused" and config.activation != "sigmoid":
            return self._fused(x, state)
        dropout = config.dropout if config.n_layer > 1 else 0.0
        out, h = elman_loop(x, state[0], self.recurrence, config.activation, mask, dropout, self.training)
        return out, (h,)


class LSTMLM(RecurrentLM):
    """The LSTM language model: ``nn.LSTM``, forget-gate biases started at 1 (Jozefowicz et al. 2015)."""

    family = "lstm"
    state_tensors = 2

    def __init__(self, config: RNNConfig) -> None:
        lstm = recurrent_layers(nn.LSTM, config)
        H = config.hidden_size
        with torch.no_grad():
            for layer in range(config.n_layer):
                getattr(lstm, f"bias_ih_l{layer}")[H : 2 * H].fill_(1.0)  # gates i, f, g, o: f is 2nd
                getattr(lstm, f"bias_hh_l{layer}")[H : 2 * H].zero_()
        super().__init__(config, lstm)


class GRULM(RecurrentLM):
    """The GRU language model: ``nn.GRU``."""

    family = "gru"

    def __init__(self, config: RNNConfig) -> None:
        gru = recurrent_layers(nn.GRU, config)
        super().__init__(config, gru)

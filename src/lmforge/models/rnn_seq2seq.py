"""The RNN encoder-decoder, with or without attention: the lectures' model (Sutskever et al. 2014;
Bahdanau et al. 2015; Luong et al. 2015).

    source "a b c" -> embedding -> GRU/LSTM encoder (bidirectional: both directions, concatenated,
        projected to the decoder's width) -> h_1 .. h_N (B, S, H), and the final state
    target "<s> x y" -> embedding -> GRU/LSTM decoder started from the encoder's final state
        -> s_1 .. s_T (B, T, H)
    attention "dot" (Luong):          e_t = [s_t . h_1, ..., s_t . h_N]
              "additive" (Bahdanau):  e_t,i = v . tanh(W s_t + U h_i)
    alpha_t = softmax(e_t) (padded source positions: -inf, so exactly 0), a_t = sum_i alpha_t,i h_i
    output:   tanh(W_c [a_t; s_t]) -> head -> logits for the token after target position t
    "none":   s_t -> head: the plain bottleneck model, where the decoder sees the source only
              through the encoder's final state (the lecture's point is measured against it)

The decoder's state s_t depends only on the target tokens before it and the encoder's final state;
the attention reads s_t but does not feed back into the recurrence (Luong's "input feeding" is left
out), so teacher forcing runs the whole target through one fused ``nn.GRU``/``nn.LSTM`` call and a
decoding step is the same computation one token at a time: their logits agree to float rounding.

Padding. Sources are right-padded (``attention_mask`` 0 after the last real token); the encoder
packs them (``pack_padded_sequence``), so a source's states and final state are the ones it has
alone: the backward direction starts at its last real token, and more padding columns change
nothing. Target padding needs no mask: the decoder runs left to right, a padded position affects
only later padded positions, whose labels are -100.

Bridge. A bidirectional encoder's final states (forward and backward, per layer) are concatenated
and mapped to the decoder's width: h -> tanh(W_h [h_fwd; h_bwd]) (Bahdanau's initialisation), and
an LSTM's cell c -> W_c [c_fwd; c_bwd] (a cell is not bounded). A unidirectional encoder hands its
final state over as it is.

Vocabularies. ``shared_vocab`` (the default): one token table for source and target, tied. Otherwise
the source has its own table of ``source_vocab_size`` rows (default ``vocab_size``); the head
scores the target vocabulary and is tied to the target table when ``n_embd == hidden_size``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.hardware import bf16_recurrent_works
from lmforge.models.loss import IGNORE_INDEX, language_model_loss
from lmforge.models.protocol import LMOutput, NeuralLM

State = tuple[torch.Tensor, ...]  # each (n_layer, B, H): (h,) for the GRU, (h, c) for the LSTM


@dataclass
class RNNSeq2SeqConfig:
    vocab_size: int = 50257  # the target vocabulary (also the source's when shared)
    source_vocab_size: int | None = None  # separate vocabularies: the source's size (None: vocab_size)
    shared_vocab: bool = True  # one token table for source and target
    cell: Literal["gru", "lstm"] = "gru"
    attention: Literal["dot", "additive", "none"] = "dot"
    bidirectional: bool = True  # the encoder reads the source both ways
    n_layer: int = 1  # stacked recurrent layers, in the encoder and in the decoder
    n_embd: int = 64  # token embedding width
    hidden_size: int = 128  # H: the decoder's state and the attention's width (each encoder direction's too)
    dropout: float = 0.0
    tie_embeddings: bool | None = None  # the head shares the target table; None: tie when n_embd == H
    block_size: int = 64  # training length of sources and targets; not a limit on either
    decoder_start_token_id: int = 0  # the decoder's first input (the tokenizer's bos, else eos)

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.n_embd, self.hidden_size, self.n_layer, self.block_size) < 1:
            raise ValueError("vocab_size, n_embd, hidden_size, n_layer and block_size must be positive")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, not {self.cell!r}")
        if self.attention not in ("dot", "additive", "none"):
            raise ValueError(f"attention must be dot, additive or none, not {self.attention!r}")
        if self.shared_vocab and self.source_vocab_size not in (None, self.vocab_size):
            raise ValueError(
                f"a shared vocabulary has one size; got vocab_size {self.vocab_size} and "
                f"source_vocab_size {self.source_vocab_size} (set shared_vocab false for two)"
            )
        if self.tie_embeddings is None:
            self.tie_embeddings = self.n_embd == self.hidden_size
        elif self.tie_embeddings and self.n_embd != self.hidden_size:
            raise ValueError(
                f"tie_embeddings needs n_embd == hidden_size (the head reads the H-wide output, the "
                f"table writes n_embd-wide inputs); got {self.n_embd} and {self.hidden_size}"
            )

    @property
    def source_vocab(self) -> int:
        return self.source_vocab_size or self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderMemory:
    """What ``encode`` reads from a batch of sources, once per decode."""

    states: torch.Tensor  # (B, S, H): h_1 .. h_N at the decoder's width, 0 on padding
    final: State  # the decoder's initial state, each (n_layer, B, H)


@dataclass
class DecoderState:
    """The decoder's state between steps: the recurrent state and the source it attends to."""

    hidden: State  # each (n_layer, N, H)
    states: torch.Tensor  # (N, S, H): the encoder states, the attention's values
    keys: torch.Tensor  # (N, S, H): dot: the states themselves; additive: U h_i, computed once
    mask: torch.Tensor  # (N, S) bool, True on real source tokens


class SourceAttention(nn.Module):
    """Scores a decoder state against every source state; softmax over the real ones."""

    def __init__(self, kind: Literal["dot", "additive"], width: int) -> None:
        super().__init__()
        self.kind = kind
        self.width = width
        if kind == "additive":
            self.query = nn.Linear(width, width, bias=False)  # W
            self.key = nn.Linear(width, width)  # U (its bias is the b inside the tanh)
            self.score = nn.Linear(width, 1, bias=False)  # v

    def keys(self, states: torch.Tensor) -> torch.Tensor:
        """What a score needs from each source state, computed once per source."""
        return self.key(states) if self.kind == "additive" else states

    def forward(
        self, s: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a (N, T, H), alpha (N, T, S)) for decoder states s (N, T, H)."""
        if self.kind == "dot":
            scores = s @ keys.transpose(1, 2)  # e_t,i = s_t . h_i, (N, T, S)
        else:
            hidden = torch.tanh(self.query(s)[:, :, None, :] + keys[:, None, :, :])  # (N, T, S, H)
            scores = self.score(hidden).squeeze(-1)  # v . tanh(W s_t + U h_i), (N, T, S)
        if scores.element_size() < 4:
            scores = scores.float()  # softmax in fp32 under autocast
        alpha = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)  # 0 on padding
        return alpha.to(values.dtype) @ values, alpha  # a_t = sum_i alpha_t,i h_i

    def score_flops_per_token(self, context: int) -> int:
        """Per target token over ``context`` source states: a score (s . h_i, or v . tanh(..): 2H
        each; W s and U h are Linear modules, counted as such) and the weighted sum (2H each)."""
        return 4 * self.width * context


def _recurrent(cell: str, input_size: int, config: RNNSeq2SeqConfig, bidirectional: bool) -> nn.RNNBase:
    kind = nn.LSTM if cell == "lstm" else nn.GRU
    layers = kind(
        input_size,
        config.hidden_size,
        num_layers=config.n_layer,
        dropout=config.dropout if config.n_layer > 1 else 0.0,
        batch_first=True,
        bidirectional=bidirectional,
    )
    if cell == "lstm":  # forget-gate biases at 1 (Jozefowicz et al. 2015), as models/rnn.py does
        H = config.hidden_size
        with torch.no_grad():
            for name, param in layers.named_parameters():
                if name.startswith("bias_ih"):
                    param[H : 2 * H].fill_(1.0)
                elif name.startswith("bias_hh"):
                    param[H : 2 * H].zero_()
    return layers


def _fp32_if_needed(layers: nn.RNNBase, like: torch.Tensor):
    """Autocast off where this machine has no bf16 kernel for the layer (oneDNN's LSTM on AVX2)."""
    device = like.device.type
    if torch.is_autocast_enabled(device) and not bf16_recurrent_works(type(layers), like.device):
        return torch.autocast(device, enabled=False), True
    return contextlib.nullcontext(), False


class RNNSeq2Seq(NeuralLM):
    family = "rnn_seq2seq"
    config_class = RNNSeq2SeqConfig
    decoding = "encoder_decoder"
    lm_kind = "seq2seq"
    context_limit = None  # reads sources of any length
    target_limit = None  # and writes targets of any length

    def __init__(self, config: RNNSeq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        E, H = config.n_embd, config.hidden_size
        self.target_embedding = nn.Embedding(config.vocab_size, E)
        self.source_embedding = nn.Embedding(config.source_vocab, E)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = _recurrent(config.cell, E, config, config.bidirectional)
        if config.bidirectional:
            self.project = nn.Linear(2 * H, H, bias=False)  # h_i = P [h_fwd,i; h_bwd,i]
            self.bridge = nn.ModuleList(nn.Linear(2 * H, H) for _ in range(self.state_tensors))
        self.decoder = _recurrent(config.cell, E, config, False)
        if config.attention != "none":
            self.attention = SourceAttention(config.attention, H)
            self.combine = nn.Linear(2 * H, H, bias=False)  # W_c [a_t; s_t] (Luong eq. 5)
        self.head = nn.Linear(H, config.vocab_size)
        # the initialisation of models/rnn.py (PyTorch's word_language_model example)
        nn.init.uniform_(self.target_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.source_embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if config.shared_vocab:
            self.source_embedding.weight = self.target_embedding.weight
        if config.tie_embeddings:
            self.head.weight = self.target_embedding.weight
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    @property
    def state_tensors(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    def describe(self) -> str:
        config = self.config
        layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
        encoder = "bidirectional encoder" if config.bidirectional else "encoder"
        attention = "no attention" if config.attention == "none" else f"{config.attention} attention"
        vocab = "" if config.shared_vocab else ", separate vocabularies"
        tied = ", tied" if config.tie_embeddings else ""
        return (
            f"({config.cell.upper()} {encoder}-decoder, {attention}, {layers} x {config.hidden_size}, "
            f"{config.n_embd}-dim embeddings{tied}{vocab})"
        )

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token tables and the output head (one tensor where tied)."""
        return [self.source_embedding.weight, self.target_embedding.weight, self.head.weight]

    # --- the encoder ---------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderMemory:
        """Read right-padded sources (B, S) once: their states h_i and the decoder's initial state."""
        B, S = input_ids.shape
        lengths = _source_lengths(input_ids, attention_mask)
        x = self.drop(self.source_embedding(input_ids))  # (B, S, E)
        precision, fp32 = _fp32_if_needed(self.encoder, x)
        with precision:
            packed = nn.utils.rnn.pack_padded_sequence(
                x.float() if fp32 else x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, final = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, D*H)
        final = final if isinstance(final, tuple) else (final,)  # each (L * D, B, H)
        if self.config.bidirectional:
            states = self.project(states)  # (B, S, H); no bias: padding stays 0
            L, H = self.config.n_layer, self.config.hidden_size
            joined = [f.view(L, 2, B, H).transpose(1, 2).reshape(L, B, 2 * H) for f in final]  # [fwd; bwd]
            final = tuple(bridge(f) for bridge, f in zip(self.bridge, joined))
            final = (torch.tanh(final[0]), *final[1:])  # h bounded as a GRU/LSTM's own h is; c is not
        return EncoderMemory(states=states, final=final)

    # --- the decoder ---------------------------------------------------------------------------
    def start_decoding(
        self, memory: EncoderMemory, attention_mask: torch.Tensor | None = None, *, max_length: int = 0
    ) -> DecoderState:
        """The state before the first target token (``max_length`` is not needed: nothing is preallocated)."""
        states = memory.states
        mask = (
            torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
            if attention_mask is None
            else attention_mask.bool()
        )
        keys = self.attention.keys(states) if self.config.attention != "none" else states
        return DecoderState(hidden=memory.final, states=states, keys=keys, mask=mask)

    def _decode(
        self, decoder_input_ids: torch.Tensor, state: DecoderState, output_attentions: bool = False
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """(logits (N, T, V), the state after the T tokens, alpha (N, T, S) or None)."""
        y = self.drop(self.target_embedding(decoder_input_ids))  # (N, T, E)
        precision, fp32 = _fp32_if_needed(self.decoder, y)
        with precision:
            hidden = tuple(h.float() for h in state.hidden) if fp32 else state.hidden
            s, new = self.decoder(y.float() if fp32 else y, hidden if self.state_tensors > 1 else hidden[0])
        new = new if isinstance(new, tuple) else (new,)
        alpha = None
        if self.config.attention == "none":
            out = s  # the bottleneck model: s_t straight to the head
        else:
            a, alpha = self.attention(s, state.keys, state.states, state.mask)
            out = torch.tanh(self.combine(torch.cat([a.to(s.dtype), s], dim=-1)))  # tanh(W_c [a_t; s_t])
        logits = self.head(self.drop(out))  # (N, T, V)
        next_state = DecoderState(hidden=new, states=state.states, keys=state.keys, mask=state.mask)
        return logits, next_state, alpha if output_attentions else None

    def decode(
        self, decoder_input_ids: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState]:
        """Feed T >= 1 more target tokens (N, T): (logits (N, T, V), the state after them)."""
        logits, state, _ = self._decode(decoder_input_ids, state)
        return logits, state

    def reorder_decoding(self, state: DecoderState, index: torch.Tensor) -> DecoderState:
        """Row i continues old row ``index[i]`` (beam search; one source expanded to several rows)."""
        states = state.states.index_select(0, index)
        return DecoderState(
            hidden=tuple(h.index_select(1, index) for h in state.hidden),
            states=states,
            keys=states if state.keys is state.states else state.keys.index_select(0, index),
            mask=state.mask.index_select(0, index),
        )

    # --- teacher forcing -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        output_attentions: bool = False,
    ) -> LMOutput:
        """Logits for every target position given the source, and the loss when ``labels`` are given.

        decoder_input_ids: (B, T) the start token, then the target; None: ``labels`` shifted right
            (as Hugging Face does). decoder_attention_mask: not needed (module docstring), accepted.
        output_attentions: ``cross_attentions`` = [alpha (B, 1, T, S)]; None without attention.
        """
        del decoder_attention_mask  # right padding of a left-to-right decoder changes no real position
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("give decoder_input_ids (start token, then the target) or labels")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id)
        memory = self.encode(input_ids, attention_mask)
        state = self.start_decoding(memory, attention_mask, max_length=decoder_input_ids.shape[1])
        logits, _, alpha = self._decode(decoder_input_ids, state, output_attentions)
        loss = language_model_loss(logits, labels, reduction) if labels is not None else None
        cross = [alpha[:, None]] if alpha is not None else None
        return LMOutput(logits=logits, loss=loss, cross_attentions=cross)


def shift_right(labels: torch.Tensor, start_id: int) -> torch.Tensor:
    """[start] + labels[:, :-1], with -100 (padding) read as token 0: the decoder's inputs."""
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, 0)
    return shifted


def _source_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) real tokens per source; refuses an empty source or padding that is not on the right."""
    B, S = input_ids.shape
    if attention_mask is None:
        return torch.full((B,), S, dtype=torch.long, device=input_ids.device)
    lengths = attention_mask.long().sum(dim=1)
    right_padded = torch.arange(S, device=lengths.device)[None, :] < lengths[:, None]
    if not bool((right_padded == attention_mask.bool()).all()):
        raise ValueError("sources must be padded on the right (attention_mask 1s, then 0s)")
    if bool((lengths == 0).any()):
        raise ValueError("every source needs at least one token")
    return lengths

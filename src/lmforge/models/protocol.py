"""The model protocol: what every language model family offers, so nothing above ``models/`` asks
which family it holds (the registry is the one place that maps a family's name to its class).

    model = Run(path).load_model()        # a GPT, a window model, an RNN/LSTM/GRU or an n-gram model
    isinstance(model, LanguageModel)      # True for every family
    model.describe()                      # "4 layers x 128 wide, context 64"
    model.context_limit                   # 64: the longest input it reads; None: any length
    model.num_parameters(exclude_embeddings=True)
    model.carries_state                   # True: trains on consecutive windows of streams, state carried
    model.decoding                        # "kv_cache": which step interface generate/step.py drives it with
    model.has_attention_maps              # forward(output_attentions=True) gives per-layer attention weights
    model.scores_whole_stream             # True: logprobs(tokens) scores a whole token stream at once
    model.lm_kind                         # "causal": predicts the next token; "masked": the token in place (BERT)

Two kinds of model meet that contract:
- neural models (``NeuralLanguageModel``): ``nn.Module``s whose
  ``forward(input_ids, attention_mask=None, labels=None, reduction="mean", last_logits_only=False, ...)``
  returns an ``LMOutput``: ``.logits`` (B, T, vocab) where ``logits[:, t]`` scores the token after
  ``input_ids[:, t]``, and ``.loss``, the cross-entropy against ``labels`` (-100 ignored) when given.
  Their ``config.block_size`` is the length of the training windows (for a Transformer also its
  context). They subclass ``NeuralLM``, which counts parameters once for every family from the
  embedding tables each one names in ``embedding_parameters()``;
- counted models (``StreamScorer``, the n-gram model): numpy counts, no forward pass; they score a
  whole stream with ``logprobs(tokens)`` (a document's first tokens see padded contexts, as after
  end-of-text), so windowed evaluation does not apply to them.

``decoding`` names what the step layer (generate/step.py) needs from a model, in that model's own
terms, so the step layer never looks at a family:
- ``"kv_cache"``: ``forward(..., position_ids=, kv_cache=)`` fills a key-value cache laid out as
  ``cache_layout()`` says; ``context_limit`` bounds it;
- ``"recurrent_state"``: ``forward(..., state=)`` starts from a state and returns the one it ends in
  (``LMOutput.state``, a tuple of (n_layer, B, H) tensors whose dimension 1 is the batch);
- ``"window"``: each prediction reads only the last ``window_size`` tokens (``attention_mask`` 0:
  an empty slot);
- ``"counts"``: ``prompt_contexts``, ``advance`` and ``next_distributions`` (models/ngram.py);
- ``"none"``: not decoded left to right (an encoder, ``lm_kind`` "masked").

``lm_kind`` says what the logits predict. "causal": ``logits[:, t]`` scores the token after
``input_ids[:, t]``, so the model generates, scores and evaluates text left to right. "masked"
(BERT, models/bert.py): ``logits[:, t]`` scores the token *at* t, seen on both sides, and labels
are not shifted; commands that need a causal model refuse it (``require_causal``). A masked
model's ``forward`` also takes ``labelled_logits_only=True``: logits (N, vocab) for the N positions
whose label is not -100, in row-major order, and the loss over them. Masked-LM training asks for it
(``masked_language_model_loss``): only ~15% of positions are masked, and the vocabulary-wide head
is the largest matmul of a small encoder's step.

Encoder-decoder models (``lm_kind`` "seq2seq", ``decoding`` "encoder_decoder": the Transformer of
models/seq2seq.py, the RNN with attention of models/rnn_seq2seq.py) read a source and predict a
target. Their ``forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None,
labels=None, reduction="mean", output_attentions=False)`` takes the source ``input_ids`` (B, S),
right-padded, ``attention_mask`` (B, S) 1 on real source tokens, and the decoder's input
(B, T): ``decoder_start_token_id`` (a config field) then the target shifted right; ``labels``
(B, T) are the target then end-of-text, -100 on padding. ``logits[:, t]`` scores the target token
after ``decoder_input_ids[:, t]``; with ``output_attentions`` the output's ``cross_attentions`` hold
each decoder layer's weights over the source (B, heads, T, S), zero on padded source positions and
summing to 1 over the rest (an RNN: one layer, one head). Decoding goes through four methods, which
generate/seq2seq_step.py drives (the state is the family's own):
- ``encode(input_ids, attention_mask) -> memory``: the source read once per decode;
- ``start_decoding(memory, attention_mask, *, max_length) -> state``: an empty decoder state that
  will hold up to ``max_length`` target tokens (a Transformer preallocates its self-attention
  cache and computes the cross-attention keys and values here, once per source);
- ``decode(decoder_input_ids, state) -> (logits (N, T, V), state)``: feed T >= 1 more target tokens;
- ``reorder_decoding(state, index) -> state``: row i continues old row ``index[i]`` (beam search; also
  expands each source into several rows).
``context_limit`` bounds the source (None: any length) and ``target_limit`` the target (None: any).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

Decoding = Literal["kv_cache", "recurrent_state", "window", "counts", "encoder_decoder", "none"]
LMKind = Literal["causal", "masked", "seq2seq"]


@dataclass
class LMOutput:
    """What every neural family's forward returns."""

    logits: (
        torch.Tensor
    )  # (B, T, vocab); (B, 1, vocab) with last_logits_only; (N, vocab) with labelled_logits_only
    loss: torch.Tensor | None = None  # mean (or summed) cross-entropy over labels != -100
    state: tuple[torch.Tensor, ...] | None = None  # recurrent models: the state after the last position
    attentions: list[torch.Tensor] | None = None  # output_attentions: per layer (B, nh, T, S)
    hidden_states: torch.Tensor | None = None  # Transformers: the last layer's output (B, T, C)
    cross_attentions: list[torch.Tensor] | None = None  # seq2seq, output_attentions: per layer (B, nh, T, S)


class CacheLayout(NamedTuple):
    """The shape of a key-value cache for a ``"kv_cache"`` model: (layers, heads, head_size) and dtype."""

    layers: int
    heads: int
    head_size: int
    dtype: torch.dtype


@runtime_checkable
class LanguageModel(Protocol):
    """What every family offers, neural or counted."""

    family: str  # the registry's name for the family (config.json's "family")
    config: Any  # a dataclass with ``to_dict()``; the model is rebuilt from it
    context_limit: int | None  # the longest input it accepts; None: any length
    carries_state: bool  # recurrent: trains on consecutive windows of streams, state carried across
    decoding: Decoding  # how a sampler drives it (module docstring)
    has_attention_maps: bool  # forward(output_attentions=True) returns ``.attentions``
    scores_whole_stream: bool  # logprobs(tokens) scores a whole stream (no windows, no forward)
    lm_kind: LMKind  # "causal" (next token) or "masked" (the token in place; module docstring)

    def describe(self) -> str:
        """The shape in a few words, for a summary line."""
        ...

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Numbers learned from data, tied weights counted once; optionally without embedding tables."""
        ...


@runtime_checkable
class NeuralLanguageModel(LanguageModel, Protocol):
    """A neural family: an ``nn.Module`` with the forward contract of the module docstring."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        last_logits_only: bool = False,
    ) -> LMOutput: ...

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token (and position) tables and any untied output table: what ``exclude_embeddings`` drops."""
        ...


@runtime_checkable
class StreamScorer(LanguageModel, Protocol):
    """A counted model: scores token streams without a forward pass."""

    def logprobs(self, tokens: Any) -> Any:
        """(N,) natural-log p of each token of a 1-D id stream given the tokens before it."""
        ...


class NeuralLM(nn.Module):
    """The defaults every neural family shares; a family sets ``family``, ``config_class``,
    ``decoding`` and writes ``describe``, ``embedding_parameters`` and ``forward``."""

    family: str
    config_class: type
    decoding: Decoding
    context_limit: int | None = None  # reads any length unless the family says otherwise
    carries_state = False
    has_attention_maps = False
    scores_whole_stream = False
    lm_kind: LMKind = "causal"

    def describe(self) -> str:
        raise NotImplementedError

    def embedding_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (``parameters()`` yields a tied tensor once); optionally without
        the embedding tables, each of those also counted once."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            tables = {id(p): p for p in self.embedding_parameters()}
            total -= sum(p.numel() for p in tables.values())
        return total


def require_causal(model: LanguageModel, what: str) -> None:
    """Refuse a model that does not predict the next token, for a command (``what``) that needs one."""
    if model.lm_kind == "seq2seq":
        from lmforge.errors import UserInputError

        raise UserInputError(
            f"{what} needs a left-to-right (causal) language model, and this run holds a seq2seq model "
            f"({model.family}: {model.describe()}), which writes a target for a source: give --source "
            "(and --target where the command scores one) instead of --prompt or --text"
        )
    if model.lm_kind != "causal":
        from lmforge.errors import UserInputError

        raise UserInputError(
            f"{what} needs a left-to-right (causal) language model, and this run holds a {model.lm_kind} "
            f"language model ({model.family}: {model.describe()}), which predicts tokens in place, not the next one"
        )

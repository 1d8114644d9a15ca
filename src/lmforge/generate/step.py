"""The step interface: how any causal model family plugs into greedy, sampling and beam search.

    model = as_step_model(gpt)                                  # decoding "kv_cache": a preallocated cache
    logits, state = model.start(prompt_ids, attention_mask, max_new_tokens=20, copies=4)
    # logits (B * 4, V): the next-token scores after each prompt, every prompt row repeated 4 times
    logits, state = model.step(next_ids, state)                 # next_ids (B * 4,) -> logits (B * 4, V)
    state = model.reorder(state, beam_index)                    # row i continues old row beam_index[i]

A strategy sees only this protocol, so a family plugs in by implementing three methods:
- ``start`` reads the left-padded prompts (``attention_mask`` 1 for real tokens, None when no row
  is padded) and returns float32 logits for the token after each prompt and an opaque state,
  with each row repeated ``copies`` times (samples or beams share one prompt computation);
- ``step`` feeds one token per row and returns the logits after it;
- ``reorder`` keeps rows ``index`` (beam search), in place where it can.
The state is whatever the model needs: a Transformer's keys and values (``KVCacheStepModel``
below), an RNN's hidden state (reorder = index_select on the batch dimension) or a window model's
last n tokens (``classic_step.py``), an n-gram model's last n - 1 tokens (``ngram_step.py``).
``max_new_tokens`` lets a model preallocate; a model with a finite context says so in
``block_size`` (None: unbounded) and handles running past it itself.

Which interface drives a model. Every model states how it is decoded in its ``decoding``
attribute (models/protocol.py): "kv_cache", "recurrent_state", "window" or "counts", and
``as_step_model`` picks the step interface for that kind from ``STEP_MODELS``. The step interfaces
ask the model only for what its kind of decoding promises (``cache_layout()`` and
``context_limit`` for a key-value cache, ``forward(state=)`` for a recurrent state,
``window_size`` for a window), never for its family or its modules, and ``models/`` never imports
this package: a new family plugs in by naming one of these kinds, or a new kind with its interface.

A Transformer past its context: learned positions stop at ``block_size``, so when the cache is
full the state drops the oldest half and recomputes the keys and values of the newest ``block_size // 2``
tokens (llama.cpp's "context shift"); positions restart at 0, as cropping the context does. It
costs one prompt-sized forward pass every ``block_size // 2`` tokens and never happens when
prompt + max_new_tokens fits. The rows of a batch shift together, when the padded width fills the
context, so past the context a short row of a batch may differ from its run alone (within it,
they agree). Left-padded rows get positions cumsum(mask) - 1, so every row sees the positions it
would see alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lmforge.generate.cache import KVCache
from lmforge.generate.classic_step import RecurrentStepModel, WindowStepModel
from lmforge.generate.ngram_step import NGramStepModel


@runtime_checkable
class StepModel(Protocol):
    block_size: int | None

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, Any]: ...

    def step(self, next_ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...

    def reorder(self, state: Any, index: torch.Tensor) -> Any: ...


@dataclass
class GPTState:
    cache: KVCache  # keys and values of the last ``cache.length`` of the ``fed`` tokens
    tokens: torch.Tensor  # (N, P + max_new) every token fed so far, to recompute after a context shift
    mask: torch.Tensor | None  # (N, P + max_new) 1 real, 0 padding; None when no row is padded
    positions: torch.Tensor | None  # (N,) position of each row's next token (padded batches only)
    fed: int  # columns of ``tokens`` fed to the model


class KVCacheStepModel:
    """A ``decoding = "kv_cache"`` model (GPT, models/gpt.py) decoding through a preallocated KV cache."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.block_size: int | None = model.context_limit

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, GPTState]:
        B, P = input_ids.shape
        device, context = input_ids.device, self.block_size
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: the plain causal path is faster
        total = P + max_new_tokens
        layout = self.model.cache_layout()
        cache = KVCache(
            layout.layers,
            B * copies,
            layout.heads,
            min(total, context),
            layout.head_size,
            dtype=layout.dtype,
            device=device,
        )
        tokens = torch.zeros(B, total, dtype=torch.long, device=device)
        tokens[:, :P] = input_ids
        mask = None
        if attention_mask is not None:
            mask = torch.ones(B, total, dtype=torch.long, device=device)
            mask[:, :P] = attention_mask
        state = GPTState(cache, tokens, mask, None, fed=P)
        logits = self._prefill(state, window=min(P, context))
        if copies > 1:
            state = self.reorder(state, torch.arange(B, device=device).repeat_interleave(copies))
            logits = logits.repeat_interleave(copies, dim=0)
        return logits, state

    def step(self, next_ids: torch.Tensor, state: GPTState) -> tuple[torch.Tensor, GPTState]:
        state.tokens[:, state.fed] = next_ids
        state.fed += 1
        cache = state.cache
        if cache.length == cache.max_length:  # context full: shift (see the module docstring)
            return self._prefill(state, window=max(1, cache.max_length // 2)), state
        mask = None
        position_ids = None
        if state.mask is not None:
            mask = state.mask[:, state.fed - cache.length - 1 : state.fed]  # (N, S): the cached window + 1
            position_ids = state.positions[:, None]  # (N, 1)
        out = self.model(next_ids[:, None], attention_mask=mask, position_ids=position_ids, kv_cache=cache)
        if state.positions is not None:
            state.positions += 1
        return out.logits[:, -1].float(), state

    def reorder(self, state: GPTState, index: torch.Tensor) -> GPTState:
        state.cache.reorder(index)
        state.tokens = state.tokens.index_select(0, index)
        if state.mask is not None:
            state.mask = state.mask.index_select(0, index)
            state.positions = state.positions.index_select(0, index)
        return state

    def _prefill(self, state: GPTState, window: int) -> torch.Tensor:
        """Recompute the cache from the last ``window`` fed tokens; the logits after them (N, V)."""
        start = state.fed - window
        ids = state.tokens[:, start : state.fed]  # (N, window)
        state.cache.reset()
        mask = position_ids = None
        if state.mask is not None:
            mask = state.mask[:, start : state.fed]
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from 0
            state.positions = mask.sum(-1)
        out = self.model(
            ids, attention_mask=mask, position_ids=position_ids, kv_cache=state.cache, last_logits_only=True
        )
        return out.logits[:, -1].float()


GPTStepModel = KVCacheStepModel  # the name earlier callers import

# a model's ``decoding`` (models/protocol.py) -> the step interface that drives it
STEP_MODELS: dict[str, Callable[[Any], StepModel]] = {
    "kv_cache": KVCacheStepModel,
    "recurrent_state": RecurrentStepModel,
    "window": WindowStepModel,
    "counts": NGramStepModel,
}


def as_step_model(model: Any) -> StepModel:
    """The step interface for a model: itself when it has one, else the one its ``decoding`` names:
    a key-value cache, a recurrent hidden state, a window of tokens, an n-gram context."""
    if isinstance(model, StepModel):
        return model
    if getattr(model, "decoding", None) == "encoder_decoder":
        raise TypeError(
            "an encoder-decoder model decodes for a batch of sources: wrap it in "
            "lmforge.generate.seq2seq_step.EncoderDecoderStepModel(model, source_ids, source_mask)"
        )
    wrapper = STEP_MODELS.get(getattr(model, "decoding", None))
    if wrapper is not None:
        return wrapper(model)
    raise TypeError(
        f"{type(model).__name__} has no decoding step interface; give it a ``decoding`` of "
        f"{', '.join(STEP_MODELS)} (models/protocol.py) or implement lmforge.generate.step.StepModel "
        "(start, step, reorder)"
    )

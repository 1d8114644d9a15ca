"""The step interface (step.py) for the classic neural families: the decoding cache is their state.

    recurrent (rnn, lstm, gru): state = the hidden state (h,) or (h, c), each (n_layer, N, H)
        start: run the prompt through the network once -> logits after it, state after it
        step:  h_t = f(h_{t-1}, x_t) for one new token per row -> logits, new state
        reorder (beam search): state.index_select(1, index), one row per surviving beam

    window (Bengio et al.): state = the last n token ids (N, n) and which of them are real (N, n)
        step:  drop the oldest id, append the new one, recompute one position's logits

Neither has a context limit: a recurrent state summarises the whole prefix and a window model
looks at n tokens whatever came before, so nothing is cropped (``block_size`` is None).

Left padding. The prompts of a batch are left-padded (decode.pad_prompts) and the mask goes to
the model: a recurrent model leaves its state unchanged over padding (h_t = h_{t-1}, starting from
h_0 = 0), and a window model reads a padded slot as the zero vector it uses before the start of a
text. Either way a padded row ends its prompt in exactly the state it reaches alone, so batched
decoding equals decoding each prompt by itself (tests/generate/test_classic_step.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

State = tuple[torch.Tensor, ...]


class RecurrentStepModel:
    """A ``decoding = "recurrent_state"`` model (the Elman RNN, LSTM and GRU of models/rnn.py)
    decoding from its hidden state."""

    block_size = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, State]:
        out = self.model(input_ids, attention_mask=attention_mask, last_logits_only=True)
        logits, state = out.logits[:, -1].float(), out.state  # (B, V), each (L, B, H)
        if copies > 1:
            logits = logits.repeat_interleave(copies, dim=0)
            state = tuple(s.repeat_interleave(copies, dim=1) for s in state)
        return logits, state

    def step(self, next_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out = self.model(next_ids[:, None], state=state)  # (N, 1) -> logits (N, 1, V)
        return out.logits[:, -1].float(), out.state

    def reorder(self, state: State, index: torch.Tensor) -> State:
        return tuple(s.index_select(1, index) for s in state)


@dataclass
class WindowState:
    ids: torch.Tensor  # (N, n) the last n tokens, oldest first
    mask: torch.Tensor  # (N, n) 1 for a real token, 0 before the start of the text or on padding


class WindowStepModel:
    """A ``decoding = "window"`` model (models/window.py): the state is the window of its last
    ``window_size`` tokens."""

    block_size = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.n = model.window_size

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, WindowState]:
        B, P = input_ids.shape
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        short = max(self.n - P, 0)  # a prompt shorter than the window: empty slots on the left
        state = WindowState(F.pad(input_ids[:, -self.n :], (short, 0)), F.pad(mask[:, -self.n :], (short, 0)))
        if copies > 1:
            state = self.reorder(state, torch.arange(B, device=input_ids.device).repeat_interleave(copies))
        return self._logits(state), state

    def step(self, next_ids: torch.Tensor, state: WindowState) -> tuple[torch.Tensor, WindowState]:
        state.ids = torch.cat([state.ids[:, 1:], next_ids[:, None]], dim=1)  # (N, n)
        state.mask = torch.cat([state.mask[:, 1:], torch.ones_like(next_ids)[:, None]], dim=1)
        return self._logits(state), state

    def reorder(self, state: WindowState, index: torch.Tensor) -> WindowState:
        return WindowState(state.ids.index_select(0, index), state.mask.index_select(0, index))

    def _logits(self, state: WindowState) -> torch.Tensor:
        out = self.model(state.ids, attention_mask=state.mask, last_logits_only=True)
        return out.logits[:, -1].float()  # (N, V)

"""The step interface (step.py) for encoder-decoder models: the source is read once, then the
decoder runs one target token per step, whatever the family (models/protocol.py names the four
methods a family implements).

    sources, source_mask = pad_sources([tok.encode("abc"), tok.encode("de")], pad_id=tok.pad_id)
    step_model = EncoderDecoderStepModel(model, sources, source_mask)
    start = model.config.decoder_start_token_id
    results = generate(step_model, [[start], [start]], GenerationConfig(strategy="beam", num_beams=4))

Sources are padded on the right (``attention_mask`` 0 after the last real token), as Hugging Face
pads them; the decoder's prompts are the start token, one per source, all the same length (there
is nothing to pad). A beam or a sample is a row of the decoder state: ``copies`` repeats each
source's row, and ``reorder`` hands the family's ``reorder_decoding`` the surviving rows, so a
Transformer's cross-attention keys and values, computed once per source in ``start_decoding``,
follow their beams without being recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lmforge.errors import UserInputError


def pad_sources(
    sources: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad source id lists into (input_ids (B, S), attention_mask (B, S))."""
    if not sources or any(len(s) == 0 for s in sources):
        raise UserInputError("every source needs at least one token")
    width = max(len(s) for s in sources)
    ids = [list(s) + [pad_id] * (width - len(s)) for s in sources]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in sources]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


class EncoderDecoderStepModel:
    """A ``decoding = "encoder_decoder"`` model bound to a batch of sources: ``start`` encodes them
    and feeds each row's decoder prompt; ``step`` feeds one target token per row."""

    def __init__(
        self, model: nn.Module, source_ids: torch.Tensor, source_mask: torch.Tensor | None = None
    ) -> None:
        self.model = model
        self.source_ids = source_ids
        self.source_mask = source_mask if source_mask is not None else torch.ones_like(source_ids)
        self.block_size: int | None = getattr(model, "target_limit", None)

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, Any]:
        B, P = input_ids.shape
        if self.source_ids.shape[0] != B:
            raise ValueError(
                f"{B} decoder prompts for {self.source_ids.shape[0]} sources; give one per source"
            )
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("decoder prompts of a seq2seq batch must have the same length (no padding)")
        limit = self.block_size
        if limit is not None and P + max_new_tokens > limit:
            raise UserInputError(
                f"{P} decoder token(s) + --max-new-tokens {max_new_tokens} exceed the model's target "
                f"length of {limit}; lower --max-new-tokens to at most {limit - P}"
            )
        memory = self.model.encode(self.source_ids, self.source_mask)
        state = self.model.start_decoding(memory, self.source_mask, max_length=P + max_new_tokens)
        logits, state = self.model.decode(input_ids, state)
        logits = logits[:, -1].float()
        if copies > 1:
            state = self.reorder(state, torch.arange(B, device=input_ids.device).repeat_interleave(copies))
            logits = logits.repeat_interleave(copies, dim=0)
        return logits, state

    def step(self, next_ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = self.model.decode(next_ids[:, None], state)
        return logits[:, -1].float(), state

    def reorder(self, state: Any, index: torch.Tensor) -> Any:
        return self.model.reorder_decoding(state, index)

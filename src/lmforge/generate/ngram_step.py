"""An n-gram model (models/ngram.py) behind the step interface of step.py, for greedy, sampling and beams.

    step_model = NGramStepModel(NGramLM.load(run_dir))
    generate(step_model, [tokenizer.encode("ROMEO:")], GenerationConfig(strategy="greedy", eos_id=0))

The state is each row's last order - 1 tokens (pad id at a document start or after end-of-text),
an (N, order - 1) array; ``step`` shifts it, ``reorder`` indexes it. The logits are the model's
natural-log probabilities, so softmax gives back the n-gram distribution (under stupid backoff it
renormalises the scores). A probability of 0 (MLE: never seen there) becomes ``ZERO_PROB_LOGIT``,
a large finite negative number like beam search's own, rather than -inf: softmax still gives
exactly 0, and no sum of scores can turn into NaN. The context is bounded, so ``block_size`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmforge.models.ngram import NGramLM

ZERO_PROB_LOGIT = -1.0e9


@dataclass
class NGramState:
    contexts: np.ndarray  # (N, order - 1) int64, oldest token first
    device: torch.device


class NGramStepModel:
    """Decoding from an ``NGramLM``: the step protocol (start, step, reorder) over its contexts."""

    block_size: int | None = None

    def __init__(self, lm: NGramLM) -> None:
        self.lm = lm

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        copies: int = 1,
    ) -> tuple[torch.Tensor, NGramState]:
        mask = None if attention_mask is None else attention_mask.cpu().numpy()
        contexts = self.lm.prompt_contexts(input_ids.cpu().numpy(), mask)  # (B, order - 1)
        logits = self._logits(contexts, input_ids.device)  # (B, V)
        if copies > 1:
            contexts = np.repeat(contexts, copies, axis=0)
            logits = logits.repeat_interleave(copies, dim=0)
        return logits, NGramState(contexts, input_ids.device)

    def step(self, next_ids: torch.Tensor, state: NGramState) -> tuple[torch.Tensor, NGramState]:
        state.contexts = self.lm.advance(state.contexts, next_ids.cpu().numpy())
        return self._logits(state.contexts, state.device), state

    def reorder(self, state: NGramState, index: torch.Tensor) -> NGramState:
        state.contexts = state.contexts[index.cpu().numpy()]
        return state

    def _logits(self, contexts: np.ndarray, device: torch.device) -> torch.Tensor:
        probs = self.lm.next_distributions(contexts)  # (N, V)
        with np.errstate(divide="ignore"):
            logits = np.where(probs > 0, np.log(probs), ZERO_PROB_LOGIT)
        return torch.from_numpy(logits.astype(np.float32)).to(device)

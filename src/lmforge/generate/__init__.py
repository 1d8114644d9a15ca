"""Decoding: logits processors, greedy, ancestral sampling and beam search over a step interface.

    from lmforge.generate import GenerationConfig, generate
    results = generate(model, [tokenizer.encode("ROMEO:")], GenerationConfig(strategy="greedy"))

Modules, in reading order: processors (temperature, top-k, top-p, penalties), config (validated
settings), cache (the preallocated KV cache), step (the protocol a model's decoding kind implements,
and the key-value cache's), sampling (greedy and sampling loop), beam (beam search), stopping (stop strings), result
(continuations), decode (padding and the ``generate`` front door).
"""

from lmforge.generate.cache import KVCache
from lmforge.generate.config import GenerationConfig
from lmforge.generate.decode import generate, pad_prompts
from lmforge.generate.result import Continuation
from lmforge.generate.step import GPTStepModel, KVCacheStepModel, StepModel, as_step_model

__all__ = [
    "Continuation",
    "GPTStepModel",
    "GenerationConfig",
    "KVCache",
    "KVCacheStepModel",
    "StepModel",
    "as_step_model",
    "generate",
    "pad_prompts",
]

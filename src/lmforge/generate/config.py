"""What to decode and how: one validated settings object for every strategy.

    GenerationConfig(strategy="sample", temperature=0.8, top_k=40, max_new_tokens=100)
    GenerationConfig(strategy="beam", num_beams=4, length_penalty=1.0, num_return_sequences=2)
    GenerationConfig(strategy="greedy", stop=("\\n\\n",), eos_id=0)

Strategies: ``greedy`` (always the likeliest token), ``sample`` (ancestral sampling: draw each token
from the model's processed distribution; temperature 0 means greedy), ``beam`` (beam search, with
Hugging Face's length penalty and early stopping). ``num_return_sequences`` is the number of
continuations per prompt: independent samples when sampling, the best beams for beam search.
Settings that cannot work raise ``UserInputError`` with the flag name, so the CLI passes them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmforge.errors import UserInputError
from lmforge.generate.processors import LogitsProcessor, build_processors

Strategy = Literal["greedy", "sample", "beam"]


@dataclass(frozen=True)
class GenerationConfig:
    strategy: Strategy = "sample"
    max_new_tokens: int = 100
    min_new_tokens: int = 0  # end-of-text is forbidden before this many new tokens
    temperature: float = 1.0  # sampling only; 0 turns sampling into greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # 1: no limit
    repetition_penalty: float = 1.0  # 1: none; > 1 discourages tokens already present
    num_beams: int = 4
    length_penalty: float = 1.0  # beam scores are sum(log p) / new_length ** length_penalty
    early_stopping: bool | Literal["never"] = True  # HF's meanings; True stops at num_beams hypotheses
    num_return_sequences: int = 1
    eos_id: int | None = None  # the end-of-text token: a row that emits it is finished
    stop: tuple[str, ...] = ()  # strings that end a continuation (checked on decoded text)

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "sample", "beam"):
            raise UserInputError(f"unknown strategy {self.strategy!r}; choose greedy, sample or beam")
        if self.max_new_tokens < 0:
            raise UserInputError(f"--max-new-tokens must be >= 0; got {self.max_new_tokens}")
        if self.min_new_tokens < 0:
            raise UserInputError(f"--min-new-tokens must be >= 0; got {self.min_new_tokens}")
        if self.temperature < 0:
            raise UserInputError(f"--temperature must be >= 0 (0 means greedy); got {self.temperature}")
        if self.top_k < 0:
            raise UserInputError(f"--top-k must be >= 0 (0 means no limit); got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserInputError(
                f"--top-p must be in (0, 1]: the probability mass to keep (1 keeps all); got {self.top_p}"
            )
        if self.repetition_penalty <= 0:
            raise UserInputError(
                f"--repetition-penalty must be > 0 (1 means none); got {self.repetition_penalty}"
            )
        if self.num_beams < 1:
            raise UserInputError(f"--num-beams must be >= 1; got {self.num_beams}")
        if self.num_return_sequences < 1:
            raise UserInputError(f"--num-samples must be >= 1; got {self.num_return_sequences}")
        if self.strategy == "beam" and self.num_return_sequences > self.num_beams:
            raise UserInputError(
                f"beam search keeps {self.num_beams} beams, so it cannot return {self.num_return_sequences} "
                "sequences; raise --num-beams or lower --num-samples"
            )
        if self.greedy and self.num_return_sequences > 1:
            raise UserInputError(
                "greedy decoding has one continuation per prompt; use --num-samples 1, or sample "
                "(--strategy sample with --temperature > 0) or beam search for several"
            )
        if self.early_stopping not in (True, False, "never"):
            raise UserInputError(
                f"early_stopping must be True, False or 'never'; got {self.early_stopping!r}"
            )
        if any(not s for s in self.stop):
            raise UserInputError("a --stop string is empty; it would stop before the first token")

    @property
    def greedy(self) -> bool:
        """Greedy decoding: asked for, or sampling at temperature 0."""
        return self.strategy == "greedy" or (self.strategy == "sample" and self.temperature == 0)

    def processors(self, prompt_length: int) -> list[LogitsProcessor]:
        return build_processors(
            prompt_length=prompt_length,
            sampling=self.strategy == "sample" and not self.greedy,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            min_new_tokens=self.min_new_tokens,
            eos_id=self.eos_id,
        )

"""A conversation with a causal run: history rendered by its chat template, answers streamed.

    session = ChatSession(model, tokenizer, template, GenerationConfig(strategy="greedy"))
    session.set_system("Answer in one sentence.")
    reply = session.reply("What does json.dumps do?", on_text=lambda t: print(t, end=""))
    reply.text, reply.finish, reply.dropped      # "Serialize obj to a JSON ...", "eos", 0
    session.reset()                               # forget the turns, keep the system message

Every turn re-renders the whole history (system message, earlier turns, the new user message,
then the template's generation prompt) and encodes it exactly as SFT encoded its training
examples (finetune/chat_data.py: piece by piece, an end token after each earlier answer), so
the model continues the format it was trained on. An answer ends at the token SFT taught it to
end with (the template's end-of-turn token, else end-of-text), or after ``max_new_tokens``.

The history is cut to fit the context: the oldest turns go first (a user message with the
answer to it), the system message always stays, and ``min(max_new_tokens, context / 2)``
positions are left for the answer. A single message too long even then keeps its last tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.tokenizers.chat import (
    DEFAULT_TEMPLATE,
    ChatTemplate,
    chat_segments,
    encode_segments,
    end_token_ids,
)


@dataclass
class Reply:
    text: str  # the answer, without its end token and surrounding whitespace
    finish: str  # "eos" (it ended itself), "stop" or "length" (max_new_tokens)
    tokens: int  # new tokens generated
    prompt_tokens: int  # the rendered history it continued
    dropped: int  # messages of the oldest turns dropped this turn to fit the context
    cut: int  # tokens cut from the front when even the newest message alone was too long


def response_end_id(tokenizer, template: ChatTemplate) -> int:
    """The token SFT trains a response to end with under ``template`` (finetune/chat_data.py)."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids, trained = encode_segments(tokenizer, chat_segments(template, probe))
    ends = end_token_ids(tokenizer)
    return next(i for i, is_response in zip(ids, trained) if is_response and i in ends)


class ChatSession:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        template: ChatTemplate,
        config: GenerationConfig,
        *,
        system: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """``config``'s sampling settings are kept; its end token is set to the template's."""
        self.model, self.tokenizer, self.template = model, tokenizer, template
        # a base run's default-format text goes on with the next "User:" line: stop there too
        stops = ("\nUser:",) if template.source == DEFAULT_TEMPLATE else ()
        self.config = dataclasses.replace(
            config, eos_id=response_end_id(tokenizer, template), stop=tuple(config.stop) + stops
        )
        self.generator = generator
        self.context = model.context_limit
        self.system = system
        self.turns: list[dict[str, str]] = []

    def reset(self) -> None:
        """Forget every turn; the system message stays."""
        self.turns = []

    def set_system(self, text: str | None) -> None:
        """The system message every later turn is rendered with (None or "": none)."""
        self.system = text or None

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """The ids the model continues for ``messages``: as SFT encoded them, plus the generation prompt."""
        return encode_segments(self.tokenizer, chat_segments(self.template, messages, True))[0]

    def fit_history(self) -> tuple[list[int], int, int]:
        """(prompt ids, messages dropped, tokens cut): the oldest turns leave until the prompt
        fits the context with room for the answer."""
        room = min(self.config.max_new_tokens, self.context // 2) if self.context else 0
        budget = self.context - room if self.context else None
        dropped = 0
        ids = self.encode(self.messages)
        while budget is not None and len(ids) > budget and len(self.turns) > 1:
            self.turns.pop(0)  # a user message, then the answer to it
            dropped += 1
            while len(self.turns) > 1 and self.turns[0]["role"] != "user":
                self.turns.pop(0)
                dropped += 1
            ids = self.encode(self.messages)
        cut = 0
        if budget is not None and len(ids) > budget:
            cut, ids = len(ids) - budget, ids[-budget:]
        return ids, dropped, cut

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """The model's answer to the user's ``text``, streamed through ``on_text`` as it is
        generated; both join the history."""
        from lmforge.generate import generate
        from lmforge.generate.streaming import TextStream

        self.turns.append({"role": "user", "content": text})
        ids, dropped, cut = self.fit_history()
        stream = TextStream(self.tokenizer, self.config.stop, self.config.eos_id)
        started = False

        def emit(piece: str) -> None:
            nonlocal started
            if not started:
                piece = piece.lstrip()  # the template's space after "Assistant:"
                started = bool(piece)
            if piece and on_text is not None:
                on_text(piece)

        def on_token(chosen: torch.Tensor, _probs: torch.Tensor) -> None:
            emit(stream.push(int(chosen[0])))

        with torch.no_grad():
            result = generate(
                self.model,
                [ids],
                self.config,
                generator=self.generator,
                tokenizer=self.tokenizer,
                on_token=on_token if on_text is not None else None,
            )[0][0]
        answer = result.text or ""
        if on_text is not None:
            emit(stream.finish(answer).rstrip())
        self.turns.append({"role": "assistant", "content": answer.strip()})
        return Reply(answer.strip(), result.finish, len(result.ids), len(ids), dropped, cut)

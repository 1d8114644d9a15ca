"""Streaming text: turn tokens into printable text as they arrive, never printing what will be cut.

    stream = TextStream(tokenizer, stops=["\\n\\n"], eos_id=0)
    stream.push(id_of("Hi"))    -> "Hi"
    stream.push(id_of("\\n"))    -> ""        held back: it may be the start of "\\n\\n"
    stream.push(id_of("!"))     -> "\\n!"     it was not
    stream.push(id_of("\\n\\n"))  -> ""        a stop string: the stream is finished
    stream.finish("Hi\\n!")      -> ""        whatever the final continuation adds

Text is decoded from all the ids so far (byte-level tokens can end inside a UTF-8 character, so a
token's text alone is not enough); a trailing replacement character and any tail that could begin
a stop string are held back until the next token settles them. Decoding the whole text each time
costs O(n) per token: fine for a terminal, and what a server would replace with offsets.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    def __init__(self, tokenizer, stops: Sequence[str] = (), eos_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.eos_id = eos_id
        self.ids: list[int] = []
        self.emitted = ""
        self.done = False

    def push(self, token_id: int) -> str:
        """The new text that is safe to print after ``token_id``."""
        if self.done:
            return ""
        if token_id == self.eos_id:
            self.done = True
            return ""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        cuts = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if cuts:
            self.done = True
            return self._emit(text[: min(cuts)])
        return self._emit(text[: len(text) - self._held_back(text)])

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` (the continuation's text) not printed yet."""
        self.done = True
        return self._emit(final_text)

    def _held_back(self, text: str) -> int:
        """How many trailing characters might still change: a partial character or a stop's start."""
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        partial = len(text) - len(text.rstrip("\ufffd"))
        return max(hold, partial)

    def _emit(self, safe: str) -> str:
        if not safe.startswith(self.emitted):  # a decoder rewrote earlier text: wait for it to settle
            return ""
        new, self.emitted = safe[len(self.emitted) :], safe
        return new

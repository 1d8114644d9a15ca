"""One choice of an answer: the engine's tokens turned into text pieces, cut at stop strings.

    async for piece in run_choice(engine, tokenizer, prompt_ids, params, stops=["\\n\\n"]):
        piece.text            # text safe to send now ("" while a possible stop string is held back)
        piece.tokens          # the TokenEvents this piece covers (for logprobs)
        piece.finish_reason   # None while going; "stop" or "length" on the last piece

A stop string is matched on the decoded text (``generate/streaming.TextStream``): the text is cut
before it, finish_reason is "stop", and the engine's generator is closed at once, which frees the
request's batch row. A stop token (end-of-text) ends the choice without adding text. Several choices
(``n``, several prompts) run concurrently and are merged by ``merge``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field


@dataclass
class Piece:
    index: int  # the choice's index in the answer
    text: str
    tokens: list = field(default_factory=list)  # TokenEvent
    finish_reason: str | None = None
    generated: int = 0  # tokens the engine produced for this choice so far (usage counts these)


async def run_choice(
    engine, tokenizer, prompt_ids: list[int], params, stops: Sequence[str], index: int = 0
) -> AsyncIterator[Piece]:
    """The pieces of one choice; closing this generator early closes the engine's."""
    from lmforge.generate.stopping import StopStrings
    from lmforge.generate.streaming import TextStream

    stream = TextStream(tokenizer, stops)
    pending: list = []
    generated = 0
    events = engine.generate(prompt_ids, params)
    try:
        async for event in events:
            finish = event.finish_reason
            generated += 1
            if finish == "stop":  # a stop token: no text, and not reported as a token either
                yield Piece(index, stream.finish(tokenizer.decode(stream.ids)), pending, "stop", generated)
                return
            if finish not in (None, "length"):  # "abort": the engine is stopping
                yield Piece(index, stream.finish(tokenizer.decode(stream.ids)), pending, "abort", generated)
                return
            pending.append(event)
            text = stream.push(event.token_id)
            if stream.done:  # a stop string: keep only the tokens whose text lies before it
                kept, _, _ = StopStrings(tokenizer, stops).cut(stream.ids)
                reported = len(stream.ids) - len(pending)
                yield Piece(index, text, pending[: max(len(kept) - reported, 0)], "stop", generated)
                return
            if finish == "length":
                yield Piece(
                    index, text + stream.finish(tokenizer.decode(stream.ids)), pending, "length", generated
                )
                return
            if text:
                yield Piece(index, text, pending, None, generated)
                pending = []
    finally:
        await events.aclose()


async def merge(choices: Sequence[AsyncIterator[Piece]]) -> AsyncIterator[Piece]:
    """The pieces of several choices as they come; closing this closes them all."""
    if len(choices) == 1:
        try:
            async for piece in choices[0]:
                yield piece
        finally:
            await choices[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(choice: AsyncIterator[Piece]) -> None:
        try:
            async for piece in choice:
                await queue.put(piece)
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(error)
        finally:
            await choice.aclose()
            await queue.put(done)

    tasks = [asyncio.create_task(pump(choice)) for choice in choices]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

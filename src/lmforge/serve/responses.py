"""OpenAI's answer shapes, built from the pieces of the choices (choices.py) as they arrive.

    collect(...)  -> {"id": "cmpl-...", "object": "text_completion", "choices": [{"index", "text",
                      "logprobs", "finish_reason"}], "usage": {...}}   (chat: "chat.completion",
                      choices[i].message = {"role": "assistant", "content"})
    stream(...)   -> "data: {chunk}\n\n" per piece ("chat.completion.chunk" with a "delta"; the
                      first chat chunk of each choice carries the role), the usage chunk when
                      stream_options.include_usage, then "data: [DONE]\n\n"

logprobs come in the two shapes OpenAI has: the legacy one of /v1/completions (``tokens``,
``token_logprobs``, ``top_logprobs`` as {token: logprob} dicts, ``text_offset`` counted from the
start of the completion) and the chat one (``content: [{token, logprob, bytes, top_logprobs}]``).
A token's text is the tokenizer's decoding of that one id.
"""

from __future__ import annotations

import json
import time
import uuid

from lmforge.errors import UserInputError
from lmforge.serve.choices import Piece
from lmforge.serve.protocol import APIError, Work


class _Tally:
    """Per-choice text, tokens and counts while pieces arrive; usage at the end."""

    def __init__(self, work: Work, tokenizer) -> None:
        count = len(work.prompts) * work.n
        self.tokenizer = tokenizer
        self.text = [""] * count
        self.tokens: list[list] = [[] for _ in range(count)]
        self.finish: list[str | None] = [None] * count
        self.generated = [0] * count
        self.prompt_tokens = sum(len(ids) for ids in work.prompts)
        self.offsets = [0] * count  # legacy logprobs' text_offset, per choice
        self.first_token_at: float | None = None

    def add(self, piece: Piece) -> None:
        i = piece.index
        self.text[i] += piece.text
        self.tokens[i] += piece.tokens
        self.generated[i] = piece.generated
        if piece.finish_reason is not None:
            self.finish[i] = "stop" if piece.finish_reason == "abort" else piece.finish_reason
        if self.first_token_at is None and piece.generated:
            self.first_token_at = time.perf_counter()

    def usage(self) -> dict:
        completion = sum(self.generated)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def logprobs(self, kind: str, index: int, events: list) -> dict | None:
        if kind == "chat":
            return {"content": [_chat_logprob(self.tokenizer, e) for e in events], "refusal": None}
        strings = [self.tokenizer.decode([e.token_id]) for e in events]
        offsets = []
        for s in strings:
            offsets.append(self.offsets[index])
            self.offsets[index] += len(s)
        return {
            "tokens": strings,
            "token_logprobs": [e.logprob for e in events],
            "top_logprobs": [{self.tokenizer.decode([t]): lp for t, lp in e.top_logprobs} for e in events],
            "text_offset": offsets,
        }


def _chat_logprob(tokenizer, event) -> dict:
    def entry(token_id: int, logprob: float) -> dict:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        **entry(event.token_id, event.logprob),
        "top_logprobs": [entry(t, lp) for t, lp in event.top_logprobs],
    }


def _header(state, kind: str, chunk: bool) -> dict:
    prefix, obj = ("cmpl", "text_completion") if kind == "text" else ("chatcmpl", "chat.completion")
    if chunk and kind == "chat":
        obj = "chat.completion.chunk"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": state.model_name,
    }


async def collect(state, work: Work, kind: str, source, start: float) -> dict:
    tally = _Tally(work, state.tokenizer)
    try:
        async for piece in source:
            tally.add(piece)
    finally:
        await source.aclose()
    _count(state, tally, start)
    choices = []
    for i, text in enumerate(tally.text):
        logprobs = tally.logprobs(kind, i, tally.tokens[i]) if work.logprobs is not None else None
        if kind == "text":
            choices.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": tally.finish[i]})
        else:
            message = {"role": "assistant", "content": text}
            choices.append(
                {"index": i, "message": message, "logprobs": logprobs, "finish_reason": tally.finish[i]}
            )
    return {**_header(state, kind, chunk=False), "choices": choices, "usage": tally.usage()}


def _count(state, tally: _Tally, start: float) -> None:
    state.metrics.tokens(tally.prompt_tokens, sum(tally.generated))
    if tally.first_token_at is not None:
        state.metrics.first_token.observe(tally.first_token_at - start)


async def stream(state, work: Work, kind: str, source, endpoint: str, start: float):
    """Server-sent events: one chunk per piece, the usage chunk when asked, then [DONE]."""
    tally = _Tally(work, state.tokenizer)
    header = _header(state, kind, chunk=True)
    status = 499  # nginx's "client closed request", kept when the client leaves mid-stream
    try:
        if kind == "chat":
            for i in range(len(tally.text)):
                delta = {"role": "assistant", "content": ""}
                yield _event(
                    {
                        **header,
                        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                    }
                )
        async for piece in source:
            tally.add(piece)
            if not piece.text and not piece.tokens and piece.finish_reason is None:
                continue
            logprobs = tally.logprobs(kind, piece.index, piece.tokens) if work.logprobs is not None else None
            finish = tally.finish[piece.index]
            if kind == "text":
                choice = {
                    "index": piece.index,
                    "text": piece.text,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            else:
                delta = {"content": piece.text} if piece.text else {}
                choice = {"index": piece.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            yield _event({**header, "choices": [choice]})
        options = work.body.stream_options
        if options is not None and options.include_usage:
            yield _event({**header, "choices": [], "usage": tally.usage()})
        yield "data: [DONE]\n\n"
        status = 200
    except UserInputError as error:  # refused by the engine after the headers went out
        yield _event(APIError(400, str(error), code="context_length_exceeded").body())
        status = 400
    finally:
        import anyio

        with anyio.CancelScope(shield=True):  # a cancelled request still frees its engine rows
            await source.aclose()
        _count(state, tally, start)
        state.metrics.request_done(endpoint, status, time.perf_counter() - start)


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

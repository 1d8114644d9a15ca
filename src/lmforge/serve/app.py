"""The HTTP routes of ``lmforge serve``: OpenAI's completions and chat API over the engine.

    app = create_app(ServerState(engine, tokenizer, model, "stdlib", template, limits))
    POST /v1/completions        {"prompt": "Return the", "max_tokens": 20}  -> text_completion
    POST /v1/chat/completions   {"messages": [{"role": "user", "content": "Hi"}]}  -> chat.completion
        "stream": true answers as server-sent events, "data: {chunk}\\n\\n" ... "data: [DONE]\\n\\n"
    GET /v1/models, GET /health, GET /metrics (Prometheus text), GET / (the playground page)

Every failure is OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, with a
4xx status for the caller's mistakes (protocol.py says which), and the server goes on serving. The
body is read chunk by chunk up to ``max_body_bytes`` (413 past it, whatever Content-Length
claims). When ``api_key`` is set, /v1/* needs ``Authorization: Bearer KEY``, compared in constant
time. A streamed answer whose client goes away is cancelled by Starlette; closing its generators
frees the engine rows at once (choices.py).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request  # this module is imported by `lmforge serve` only

from lmforge.errors import UserInputError
from lmforge.serve.choices import Piece, merge, run_choice
from lmforge.serve.metrics import CONTENT_TYPE, Metrics
from lmforge.serve.protocol import APIError, Limits, Work, parse_chat, parse_completion

log = logging.getLogger("lmforge.serve")
PLAYGROUND = Path(__file__).parent / "static" / "playground.html"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"


@dataclass
class ServerState:
    engine: object  # lmforge.serve.engine.Engine, started
    tokenizer: object
    model: object  # for beam search, run on the engine's thread between steps
    model_name: str
    template: object  # lmforge.tokenizers.chat.ChatTemplate
    limits: Limits
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    stop_token_ids: tuple[int, ...] = ()
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(state: ServerState):
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lmforge = state

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):  # unknown route, wrong method
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        body = APIError(error.status_code, f"{request.method} {request.url.path}: {error.detail}", type=kind)
        return JSONResponse(body.body(), status_code=error.status_code)

    async def answer(request: Request, endpoint: str, parse, respond):
        start = time.perf_counter()
        try:
            _check_key(request, state.api_key)
            raw = await _read_json(request, state.max_body_bytes)
            work = parse(raw)
            result = await respond(work, request, start)
        except APIError as error:
            state.metrics.request_done(endpoint, error.status, time.perf_counter() - start)
            return JSONResponse(error.body(), status_code=error.status)
        except UserInputError as error:  # the engine's or the template's refusal of this input
            code = "context_length_exceeded" if "context" in str(error) else None
            state.metrics.request_done(endpoint, 400, time.perf_counter() - start)
            return JSONResponse(APIError(400, str(error), code=code).body(), status_code=400)
        except Exception:
            log.exception("%s failed", endpoint)
            state.metrics.request_done(endpoint, 500, time.perf_counter() - start)
            error = APIError(500, "the server failed on this request (see its log)", type="server_error")
            return JSONResponse(error.body(), status_code=500)
        if isinstance(result, dict):
            state.metrics.request_done(endpoint, 200, time.perf_counter() - start)
            return JSONResponse(result)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return _closing_stream(StreamingResponse)(result, media_type="text/event-stream", headers=headers)

    def respond_with(kind: str):
        async def respond(work: Work, request: Request, start: float):
            if work.body.num_beams > 1:
                pieces = await _beam_pieces(state, work)
                source = _replay(pieces)
            else:
                source = merge(_choices(state, work))
            endpoint = COMPLETIONS if kind == "text" else CHAT
            if work.body.stream:
                return _sse(state, work, kind, source, endpoint, start)
            return await _collect(state, work, kind, source, start)

        return respond

    @app.post(COMPLETIONS)
    async def completions(request: Request):
        def parse(raw):
            return parse_completion(raw, state.limits, state.model_name, state.tokenizer)

        return await answer(request, COMPLETIONS, parse, respond_with("text"))

    @app.post(CHAT)
    async def chat(request: Request):
        def parse(raw):
            return parse_chat(raw, state.limits, state.model_name, state.tokenizer, state.template)

        return await answer(request, CHAT, parse, respond_with("chat"))

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            _check_key(request, state.api_key)
        except APIError as error:
            return JSONResponse(error.body(), status_code=error.status)
        entry = {
            "id": state.model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "lmforge",
            "max_model_len": state.limits.context,
        }
        return {"object": "list", "data": [entry]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": state.model_name}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(state.engine.stats()), media_type=CONTENT_TYPE)

    @app.get("/")
    async def playground():
        if not PLAYGROUND.is_file():
            error = APIError(
                404, "the playground page is not installed with this lmforge", type="not_found_error"
            )
            return JSONResponse(error.body(), status_code=404)
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    return app


def _closing_stream(base: type) -> type:
    """A StreamingResponse that closes its body iterator however it ends: on a client that went
    away Starlette cancels the response while the iterator waits at a ``yield``, and an unclosed
    async generator would hold its engine rows until garbage collection."""

    class ClosingStream(base):
        async def stream_response(self, send) -> None:
            import anyio

            try:
                await super().stream_response(send)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.body_iterator.aclose()

    return ClosingStream


def _check_key(request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())
    if not ok:
        message = "a valid API key is needed: send the header 'Authorization: Bearer KEY'"
        raise APIError(401, message, type="invalid_request_error", code="invalid_api_key")


async def _read_json(request, limit: int) -> object:
    """The JSON body, read chunk by chunk so that a body past ``limit`` is refused however it comes."""
    length = request.headers.get("content-length", "")
    too_big = APIError(413, f"the request body is larger than this server's limit of {limit:,} bytes")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as error:
        raise APIError(400, f"the request body is not valid JSON: {error}") from None


def _choices(state: ServerState, work: Work) -> list:
    """One engine generator per (prompt, choice), indexed prompt-major as OpenAI numbers them."""
    choices = []
    for p, ids in enumerate(work.prompts):
        for c in range(work.n):
            params = work.sampling(p, c, state.stop_token_ids)
            choices.append(run_choice(state.engine, state.tokenizer, ids, params, work.stops, p * work.n + c))
    return choices


async def _beam_pieces(state: ServerState, work: Work) -> list[Piece]:
    """Beam search (num_beams > 1) through ``lmforge.generate``, on the engine's thread between steps."""
    from lmforge.generate import GenerationConfig, generate

    eos = state.stop_token_ids[0] if state.stop_token_ids else None
    pieces = []
    for p, ids in enumerate(work.prompts):
        config = GenerationConfig(
            strategy="beam",
            num_beams=work.body.num_beams,
            num_return_sequences=work.n,
            max_new_tokens=work.max_tokens[p],
            eos_id=eos,
            stop=work.stops,
        )

        def search(ids=ids, config=config):
            return generate(state.model, [ids], config, tokenizer=state.tokenizer)[0]

        for c, continuation in enumerate(await state.engine.run_exclusive(search)):
            finish = "length" if continuation.finish == "length" else "stop"
            generated = len(continuation.ids) + (continuation.finish == "eos")
            pieces.append(Piece(p * work.n + c, continuation.text, [], finish, generated))
    return pieces


async def _replay(pieces: list[Piece]):
    for piece in pieces:
        yield piece


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


def _header(state: ServerState, kind: str, chunk: bool) -> dict:
    prefix, obj = ("cmpl", "text_completion") if kind == "text" else ("chatcmpl", "chat.completion")
    if chunk and kind == "chat":
        obj = "chat.completion.chunk"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": state.model_name,
    }


async def _collect(state: ServerState, work: Work, kind: str, source, start: float) -> dict:
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


def _count(state: ServerState, tally: _Tally, start: float) -> None:
    state.metrics.tokens(tally.prompt_tokens, sum(tally.generated))
    if tally.first_token_at is not None:
        state.metrics.first_token.observe(tally.first_token_at - start)


async def _sse(state: ServerState, work: Work, kind: str, source, endpoint: str, start: float):
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

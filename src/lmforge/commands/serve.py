"""``lmforge serve``: an OpenAI-compatible HTTP server over a run, with continuous batching."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, RUN_DIR, Bounds, Text
from lmforge.errors import UserInputError

LOOPBACK_NAMES = ("localhost", "ip6-localhost")
API_KEY_VARIABLE = "LMFORGE_API_KEY"


def serve(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    host: Annotated[str, Text(what="a host name or IP address")] = "127.0.0.1",
    port: Annotated[int, Bounds(non_negative=True, at_most=65535)] = 8000,
    api_key: Annotated[str | None, Text(what="an API key")] = None,
    max_batch_size: Annotated[int, Bounds(positive=True, at_most=4096)] = 32,
    max_tokens_limit: Annotated[int | None, Bounds(positive=True, at_most=10_000_000)] = None,
    prefill_chunk: Annotated[int, Bounds(positive=True, at_most=1_000_000)] = 256,
    max_request_bytes: Annotated[int, Bounds(positive=True, at_most=1 << 30)] = 1 << 20,
    model_name: Annotated[str | None, Text(what="a model name")] = None,
    dtype: Literal["auto", "fp32", "bf16"] = "auto",
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    check: bool = False,
) -> dict:
    """Serve a run over HTTP with the OpenAI API (completions, chat, streaming) and a playground.

    Concurrent requests share the model's decoding steps (continuous batching): a request joins
    the running batch at the next step and leaves when it ends. Any OpenAI client works: point its
    base URL at http://HOST:PORT/v1. Endpoints: POST /v1/completions, POST /v1/chat/completions
    (both with "stream": true), GET /v1/models, GET /health, GET /metrics (Prometheus text), and
    GET / (the playground page). Chat messages are rendered with the run's
    tokenizer/chat_template.jinja (Hugging Face's convention) or, without one, a plain template
    ("User: ...", "Assistant:"). The server binds 127.0.0.1 (this machine only) unless --host says
    otherwise; on any other address, set --api-key. Needs the extra: pip install 'lmforge[serve]'.

    Args:
        checkpoint: a run directory written by `lmforge pretrain` or `lmforge convert`.
        host: the address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 (every interface).
        port: the TCP port; 0 picks a free one (the address printed at start says which).
        api_key: require the header "Authorization: Bearer KEY" on /v1/* (compared in constant time);
            default: the environment variable LMFORGE_API_KEY when set, which other users cannot read
            in the process list as they can a flag.
        max_batch_size: requests decoded together at most; more wait in a queue.
        max_tokens_limit: the largest max_tokens a request may ask (default: the model's context).
        prefill_chunk: prompt tokens read per step, so a long prompt does not stall the others.
        max_request_bytes: the largest request body; a larger one gets 413.
        model_name: the model id clients send and /v1/models lists (default: the run's folder name).
        dtype: auto (bf16 where the hardware computes it natively, else fp32), fp32 or bf16.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.
        check: load the run, print what would be served, and exit without serving.

    Examples:
        lmforge serve --checkpoint my_run
        lmforge serve --checkpoint my_run --port 8080 --max-batch-size 64 --max-tokens-limit 512
        lmforge serve --checkpoint my_run --host 0.0.0.0 --api-key "$(cat my_key.txt)"
        lmforge serve --checkpoint my_run --check
    """
    if not host.strip():
        raise UserInputError("--host must name an address, e.g. 127.0.0.1 or 0.0.0.0")
    if api_key is None:
        api_key = os.environ.get(API_KEY_VARIABLE) or None
        if api_key is not None and not api_key.strip():
            raise UserInputError(
                f"the environment variable {API_KEY_VARIABLE} is blank; unset it or set a key"
            )
    if api_key is not None and not api_key.strip():
        raise UserInputError("--api-key must not be blank")
    if model_name is not None and not model_name.strip():
        raise UserInputError("--model-name must not be blank")
    state, loaded = _build(
        checkpoint, max_batch_size, max_tokens_limit, prefill_chunk, dtype, weights, device
    )
    state.api_key, state.max_body_bytes = api_key, max_request_bytes
    state.model_name = model_name or Path(checkpoint).resolve().name
    summary = {
        "model": state.model_name,
        "checkpoint": str(checkpoint),
        "context": state.limits.context,
        "max_tokens_limit": state.limits.max_tokens,
        "max_batch_size": max_batch_size,
        "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "chat_template": "default" if state.template.is_default else "the run's",
    }
    if check:
        print(
            f"{summary['model']}: context {summary['context']} tokens, {summary['dtype']} on {summary['device']}, "
            f"chat template: {summary['chat_template']}; ready to serve (--check: not serving)"
        )
        return summary
    sock = _listen(host, port)
    try:
        _run(state, sock, host)
    finally:
        sock.close()
    return summary


def _build(checkpoint, max_batch_size, max_tokens_limit, prefill_chunk, dtype, weights, device):
    """(ServerState without the network settings, the loaded run): the model, the engine, limits."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserInputError(
            "lmforge serve needs FastAPI and uvicorn: pip install 'lmforge[serve]'"
        ) from None
    from lmforge.hardware import resolve_device, resolve_precision
    from lmforge.inference import load_for_inference
    from lmforge.serve.app import ServerState
    from lmforge.serve.engine import Engine
    from lmforge.serve.protocol import Limits
    from lmforge.tokenizers.chat import ChatTemplate, stop_token_ids

    precision = resolve_precision("auto", resolve_device(device)) if dtype == "auto" else dtype
    loaded = load_for_inference(  # linears packed for oneDNN where a race on this CPU says it pays
        checkpoint,
        weights=weights,
        device=device,
        dtype=precision,
        causal_for="lmforge serve",
        pack_rows=max_batch_size,
    )
    model = loaded.model
    if getattr(model, "decoding", None) != "kv_cache":
        raise UserInputError(
            f"lmforge serve batches Transformer decoders that decode with a KV cache; {checkpoint} holds a "
            f"{type(model).__name__}: use `lmforge generate` for it"
        )
    engine = Engine(model, max_batch_size=max_batch_size, prefill_chunk=prefill_chunk)
    context = engine.context_limit
    limit = min(max_tokens_limit or context, context)
    template = ChatTemplate.for_tokenizer(loaded.run.tokenizer_dir, loaded.tokenizer)
    state = ServerState(
        engine=engine,
        tokenizer=loaded.tokenizer,
        model=model,
        model_name="",
        template=template,
        limits=Limits(max_tokens=limit, context=context, max_batch_size=max_batch_size),
        stop_token_ids=stop_token_ids(loaded.tokenizer),
    )
    return state, loaded


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so that --port 0's real port is known."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        raise UserInputError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _run(state, sock: socket.socket, host: str) -> None:
    import uvicorn

    from lmforge.serve.app import create_app

    url = _url(sock)
    where = "this machine only" if _is_loopback(host) else "reachable from other machines"
    # the warning first: whoever waits for the address line has seen it by then
    if not _is_loopback(host) and state.api_key is None:
        print(
            f"warning: listening on {host} without --api-key: anyone who can reach this address can use the model",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"serving {state.model_name} on {url} ({where}); OpenAI base URL {url}/v1, playground {url}/",
        flush=True,
    )
    state.engine.start()
    try:
        config = uvicorn.Config(create_app(state), log_level="warning", timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        state.engine.stop()

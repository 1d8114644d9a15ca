"""A real ``lmforge serve`` app on loopback, in a background thread, for the API tests.

    with running_server(run_dir, max_batch_size=1, api_key="k") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k")

The app is built exactly as the command builds it (``commands/serve._build``: the run loaded by
``load_for_inference``, the real engine, the run's chat template) and served by uvicorn on a socket
bound to port 0; leaving the block stops uvicorn and the engine.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.tiny_run import make_run


@dataclass
class Server:
    url: str
    state: object  # lmforge.serve.app.ServerState

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def tiny_serving_run(path: Path, block_size: int = 64, **model: object) -> Path:
    """A random-weight character-level GPT run (its tokenizer has end-of-text)."""
    make_run(path, block_size=block_size, **model)
    return path


@contextlib.contextmanager
def running_server(
    run_dir: Path,
    *,
    max_batch_size: int = 8,
    max_tokens_limit: int | None = None,
    api_key: str | None = None,
    max_request_bytes: int = 1 << 20,
    model_name: str = "tiny",
) -> Iterator[Server]:
    import uvicorn

    from lmforge.commands.serve import _build, _listen, _url
    from lmforge.serve.app import create_app

    state, _ = _build(run_dir, max_batch_size, max_tokens_limit, 256, "fp32", "auto", "cpu")
    state.model_name, state.api_key, state.max_body_bytes = model_name, api_key, max_request_bytes
    sock = _listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning"))
    state.engine.start()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Server(_url(sock), state)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        state.engine.stop()
        sock.close()

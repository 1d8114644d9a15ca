"""`lmforge serve` as a subprocess on a loopback port, for the playground's tests and screenshot.

The server is started the way a user starts it (the CLI, `--port 0`) and is known to be up when it
prints the `http://HOST:PORT` line the interface promises; `/health` then answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

URL_LINE = re.compile(r"http://([0-9.]+|localhost|\[[0-9a-f:]+\]):(\d+)")


@contextlib.contextmanager
def serve(checkpoint: Path, *extra: str, timeout: float = 120.0) -> Iterator[str]:
    """Run `lmforge serve --checkpoint CHECKPOINT --port 0 EXTRA...`; yield its base URL, then stop it."""
    command = [
        sys.executable,
        "-m",
        "lmforge",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        "0",
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:  # keeps draining the pipe so the server never blocks on a full one
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = URL_LINE.search(line)
            if match and not found:
                found.append(f"http://{match.group(1)}:{match.group(2)}")
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(timeout)
        if not found:
            raise RuntimeError("lmforge serve did not print its URL:\n" + "".join(lines))
        base = found[0].replace("0.0.0.0", "127.0.0.1")
        wait_healthy(base, deadline=time.monotonic() + timeout)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_healthy(base: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def post_json(base: str, path: str, body: dict, api_key: str | None = None) -> dict:
    """One non-streamed API call, the independent reading the page's rendering is compared against."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())

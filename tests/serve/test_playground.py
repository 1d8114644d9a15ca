"""The playground page: one self-contained file, served at `/`, that reaches no host but its own.

Many users (and this project's machines) are offline, and a page that pulled a script or a font
from a CDN would break there and leak what is typed to a third party; so the page may name only
same-origin paths (`/v1/...`), fragments and `data:` URLs.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

import lmforge
from tests.serve.api_server import running_server, tiny_serving_run

PAGE = Path(lmforge.__file__).parent / "serve" / "static" / "playground.html"


def test_page_names_no_other_host():
    text = PAGE.read_text(encoding="utf-8")
    assert re.findall(r"https?:|wss?:|ftp:", text, flags=re.IGNORECASE) == []
    # protocol-relative URLs ("//cdn.example/x.js") in attributes, CSS or string literals
    assert re.findall(r"""(?:=|\(|["'`])\s*//[^/\s]""", text) == []
    for url in re.findall(r"""(?:src|href|action)\s*=\s*["']([^"']*)["']""", text, flags=re.IGNORECASE):
        assert url.startswith(("#", "data:")) or (url.startswith("/") and not url.startswith("//")), url


def test_page_fetches_only_the_servers_own_api():
    text = PAGE.read_text(encoding="utf-8")
    targets = re.findall(r"""fetch\(\s*([^,)]+)""", text)
    assert targets, "the page should call the API"
    for target in targets:
        literal = re.fullmatch(r"""["'](/v1/[a-z/]+)["']""", target.strip())
        # the one fetch whose URL is a variable is stream()'s, called with literal /v1 paths
        assert literal or target.strip() == "url", target
    for path in re.findall(r"""stream\(\s*["']([^"']+)["']""", text):
        assert path in ("/v1/completions", "/v1/chat/completions")


def test_page_is_one_file_with_inline_script_and_style():
    text = PAGE.read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*\bsrc\s*=", text, flags=re.IGNORECASE) == []
    assert re.findall(r"<link[^>]*stylesheet", text, flags=re.IGNORECASE) == []
    assert re.findall(r"@import|@font-face", text) == []
    assert text.count("<script>") == 1 and text.count("<style>") == 1


def test_page_is_served_at_root_as_html(tmp_path):
    pytest.importorskip("fastapi", reason="lmforge serve needs the `serve` extra (fastapi, uvicorn)")
    run = tiny_serving_run(tmp_path / "run")
    with running_server(run) as server, urllib.request.urlopen(server.url + "/", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].split(";")[0].strip() == "text/html"
        assert response.read() == PAGE.read_bytes()

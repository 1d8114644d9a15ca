"""The playground in a real browser: headless Chromium drives the page against a real `lmforge serve`.

What the page shows is compared with what the API answers to the same request made directly (the
independent truth): the same tokens, one shaded span per generated token (as many as the usage
says), each span's probability equal to exp(logprob), the hover tooltip listing the API's top
alternatives. Needs Debian's chromium (`apt-get install -y chromium`) and Playwright's Python client
(`pip install playwright`; its own browser download is never used); skips without them.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.serve.api_server import running_server, tiny_serving_run

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
API_KEY = "sk-playground-test"
MODEL = "tiny"  # the run directory's name is the model id


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs Playwright's Python client: pip install playwright"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="lmforge serve needs the `serve` extra (fastapi, uvicorn)")
    # a long context so that the Stop test's generation outlasts a click
    run = sharpened(tiny_serving_run(tmp_path_factory.mktemp("runs") / "run", block_size=1024))
    with running_server(run, api_key=API_KEY, model_name=MODEL) as running:
        yield running.url


def sharpened(run: Path, gain: float = 20.0) -> Path:
    """The run with its final LayerNorm's gain multiplied: the logits grow, and the next-token
    probabilities of random weights (all near 1/vocab otherwise) spread from near 0 to near 1."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = run / "model.safetensors"
    with safe_open(path, "pt") as weights:
        metadata = weights.metadata()
    tensors = load_file(path)
    tensors["ln_f.weight"] = tensors["ln_f.weight"] * gain
    save_file(tensors, path, metadata=metadata)
    return run


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    yield page
    page.close()
    assert errors == [], "the page's script failed"


def post_json(base: str, path: str, body: dict) -> dict:
    """The same request made directly, without the page: the truth the page's rendering must match."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def unlock(page, server: str) -> None:
    """Without the key the server refuses and the page shows the server's own message; with it, the model."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server + "/v1/models", timeout=10)
    message = json.loads(refused.value.read())["error"]["message"]
    page.wait_for_function("document.getElementById('model').textContent === 'no model'")
    assert page.text_content("#error") == message
    page.fill("#apiKey", API_KEY)
    page.press("#apiKey", "Enter")
    page.wait_for_function(f"document.getElementById('model').textContent === {MODEL!r}")
    assert page.text_content("#error") == ""


def set_range(page, element_id: str, value: int | float) -> None:
    page.eval_on_selector(
        f"#{element_id}",
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def generate(page, timeout_ms: int = 60_000) -> int:
    """Click Generate/Send, wait for the stream to end; the completion tokens the usage reported."""
    page.click("#send")
    return finished(page, timeout_ms)


def finished(page, timeout_ms: int = 60_000) -> int:
    """Wait for the answer (or an error, which fails the test); the completion tokens the usage reported."""
    page.wait_for_function(
        "!document.getElementById('send').disabled && "
        "(document.getElementById('usage').dataset.completionTokens !== undefined || "
        " document.getElementById('error').textContent !== '')",
        timeout=timeout_ms,
    )
    assert page.text_content("#error") == ""
    return int(page.get_attribute("#usage", "data-completion-tokens"))


def spans(page, selector: str = "#output .tok") -> list[dict]:
    return page.eval_on_selector_all(
        selector,
        "els => els.map(e => ({text: e.textContent.replace(/↵\\n/g, '\\n'), p: e.dataset.p,"
        " color: getComputedStyle(e).backgroundColor}))",
    )


def rgb(color: str) -> tuple[int, ...]:
    return tuple(int(part) for part in color[color.index("(") + 1 : -1].split(","))


def visible(token: str) -> str:
    return token.replace("\n", "↵").replace("\t", "⇥").replace(" ", "␣")


def test_prompt_streams_the_apis_tokens_shaded_by_probability(page, server):
    unlock(page, server)
    page.get_by_label("Greedy").check()
    page.fill("#prompt", "First Citizen:")
    set_range(page, "maxTokens", 24)
    completion_tokens = generate(page)

    direct = post_json(
        server,
        "/v1/completions",
        {"model": MODEL, "prompt": "First Citizen:", "max_tokens": 24, "temperature": 0, "logprobs": 5},
    )
    truth = direct["choices"][0]["logprobs"]
    shown = spans(page)
    assert completion_tokens == direct["usage"]["completion_tokens"] == len(shown) > 1
    assert page.text_content("#output .prompt") == "First Citizen:"
    assert "".join(span["text"] for span in shown) == direct["choices"][0]["text"]
    for span, logprob in zip(shown, truth["token_logprobs"], strict=True):
        assert float(span["p"]) == pytest.approx(math.exp(logprob), abs=1e-5)

    # the colour follows the probability: equal p, equal colour; the least likely token is redder
    # (red minus blue) than the likeliest, as the legend's scale says
    by_p = sorted(shown, key=lambda span: float(span["p"]))
    assert float(by_p[-1]["p"]) - float(by_p[0]["p"]) > 0.3, "sharpened weights give varied probabilities"
    assert by_p[0]["color"] != by_p[-1]["color"]
    low, high = rgb(by_p[0]["color"]), rgb(by_p[-1]["color"])
    assert low[0] - low[2] > high[0] - high[2]
    colors = {span["p"]: span["color"] for span in shown}
    assert all(colors[span["p"]] == span["color"] for span in shown)

    # hovering a token lists the API's top alternatives, likeliest first
    index = len(shown) // 2
    page.hover(f"#output .tok >> nth={index}")
    page.wait_for_selector("#tip:not([hidden])")
    rows = page.eval_on_selector_all("#tip tr", "rows => rows.map(r => r.cells[0].textContent)")
    alternatives = sorted(truth["top_logprobs"][index].items(), key=lambda item: -item[1])
    assert len(rows) == 5
    assert set(rows) == {visible(token) for token, _ in alternatives}
    assert rows[0] == visible(alternatives[0][0])
    page.mouse.move(1, 1)
    page.wait_for_selector("#tip", state="hidden")


def test_a_chat_turn_streams_shaded_tokens(page, server):
    unlock(page, server)
    page.get_by_label("Chat").check()
    page.get_by_label("Greedy").check()
    set_range(page, "maxTokens", 16)
    page.fill("#system", "Be brief.")
    page.fill("#userMsg", "Speak, speak.")
    page.press("#userMsg", "Enter")
    completion_tokens = finished(page)

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Speak, speak."}]
    direct = post_json(
        server,
        "/v1/chat/completions",
        {"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0,
         "logprobs": True, "top_logprobs": 5},
    )  # fmt: skip
    assert page.text_content("#output .msg.user .body") == "Speak, speak."
    shown = spans(page, "#output .msg.assistant .tok")
    assert completion_tokens == direct["usage"]["completion_tokens"] == len(shown) > 0
    assert "".join(span["text"] for span in shown) == direct["choices"][0]["message"]["content"]
    for span, entry in zip(shown, direct["choices"][0]["logprobs"]["content"], strict=True):
        assert float(span["p"]) == pytest.approx(math.exp(entry["logprob"]), abs=1e-5)
    assert page.input_value("#userMsg") == ""


def test_stop_aborts_the_stream_and_the_server_serves_the_next(page, server):
    unlock(page, server)
    page.get_by_label("Sample").check()
    set_range(page, "maxTokens", 1000)
    page.fill("#prompt", "A")
    page.click("#send")
    page.wait_for_selector("#output .tok")
    page.click("#stop")
    page.wait_for_function("document.getElementById('send').disabled === false")
    assert "stopped" in page.text_content("#usage")
    assert 0 < len(spans(page)) < 1000
    set_range(page, "maxTokens", 8)
    assert generate(page) == len(spans(page)) == 8


def test_beam_search_answer_arrives_whole_and_unshaded(page, server):
    unlock(page, server)
    page.get_by_role("radio", name="Beam").check()
    assert page.is_disabled("#temperature") and not page.is_disabled("#beams")
    set_range(page, "beams", 3)
    set_range(page, "maxTokens", 12)
    page.fill("#prompt", "All:")
    completion_tokens = generate(page)

    direct = post_json(
        server, "/v1/completions", {"model": MODEL, "prompt": "All:", "max_tokens": 12, "num_beams": 3}
    )
    shown = spans(page)
    assert completion_tokens == direct["usage"]["completion_tokens"]
    assert "".join(span["text"] for span in shown) == direct["choices"][0]["text"] != ""
    assert all(span["p"] is None for span in shown)  # beam search reports no per-token logprobs

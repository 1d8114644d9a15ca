"""Bad input and security: each mistake is OpenAI's error object with the right 4xx, and the server
goes on serving; a client that leaves mid-stream frees its batch row."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

from tests.serve.api_server import running_server, tiny_serving_run  # noqa: E402

KEY = "s3cret-key"
LIMIT = 30  # --max-tokens-limit
BODY_LIMIT = 4096  # --max-request-bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tiny_serving_run(tmp_path_factory.mktemp("serve-errors") / "run", block_size=64)
    with running_server(
        run, max_batch_size=4, max_tokens_limit=LIMIT, api_key=KEY, max_request_bytes=BODY_LIMIT
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


def post(server, path: str, content: bytes | object, key: str | None = KEY, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=60)


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def still_serving(client) -> None:
    answer = client.completions.create(model="tiny", prompt="First", max_tokens=3, temperature=0)
    assert answer.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": LIMIT + 1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 17}, "n"),
        ({"n": 5}, "n"),  # more than --max-batch-size 4
        ({"n": 0}, "n"),
        ({"logprobs": 21}, "logprobs"),
        ({"stop": [""]}, "stop"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [10**9]}, "prompt"),
        ({"num_beams": 2, "n": 3}, "n"),
        ({"presence_penalty": 3}, "presence_penalty"),
    ],
)
def test_a_value_outside_its_range_is_a_400_naming_it(server, client, body, param):
    request = {"model": "tiny", "prompt": "First", "max_tokens": 4, **body}
    error = assert_error(post(server, "/v1/completions", _json(request)), 400, param=param)
    assert error["type"] == "invalid_request_error"
    still_serving(client)


def test_the_openai_client_sees_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="First", temperature=-1)
    assert caught.value.status_code == 400 and caught.value.body["param"] == "temperature"


def test_chat_bounds(server, client):
    messages = [{"role": "user", "content": "Hi"}]
    too_many = {"model": "tiny", "messages": messages, "max_completion_tokens": LIMIT + 1}
    assert_error(post(server, "/v1/chat/completions", _json(too_many)), 400, param="max_completion_tokens")
    unknown_role = {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}
    assert_error(post(server, "/v1/chat/completions", _json(unknown_role)), 400)
    assert_error(post(server, "/v1/chat/completions", _json({"model": "tiny", "messages": []})), 400)
    still_serving(client)


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_malformed_json_is_a_400(server, client, body):
    assert_error(post(server, "/v1/completions", body, **{"Content-Type": "application/json"}), 400)
    still_serving(client)


def test_unknown_model_is_a_404_model_not_found(server, client):
    assert_error(
        post(server, "/v1/completions", _json({"model": "gpt-4", "prompt": "x"})), 404, "model_not_found"
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    still_serving(client)


def test_a_prompt_longer_than_the_context_is_context_length_exceeded(server, client):
    long_prompt = "First Citizen " * 10  # 140 characters; the context is 64
    error = assert_error(
        post(server, "/v1/completions", _json({"model": "tiny", "prompt": long_prompt, "max_tokens": 4})),
        400,
        "context_length_exceeded",
    )
    assert "64" in error["message"]
    fits_alone = {"model": "tiny", "prompt": "F" * 50, "max_tokens": 20}  # 50 + 20 > 64
    assert_error(post(server, "/v1/completions", _json(fits_alone)), 400, "context_length_exceeded")
    still_serving(client)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Basic {KEY}", KEY]
)
def test_a_missing_or_wrong_api_key_is_a_401(server, client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_error(
        post(server, "/v1/completions", _json({"prompt": "x"}), key=None, **headers), 401, "invalid_api_key"
    )
    assert_error(httpx.get(f"{server.url}/v1/models", headers=headers), 401)
    assert httpx.get(f"{server.url}/health").status_code == 200  # health checks need no key
    still_serving(client)


def test_the_openai_client_with_a_wrong_key_gets_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()


def test_a_body_over_the_limit_is_a_413_however_it_is_sent(server, client):
    big = _json({"model": "tiny", "prompt": "x" * BODY_LIMIT})
    assert_error(post(server, "/v1/completions", big), 413)

    def chunks():  # no Content-Length: chunked transfer encoding, the size known only while reading
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    assert_error(post(server, "/v1/completions", chunks()), 413)
    lying = post(server, "/v1/completions", big, **{"Content-Length": str(len(big))})
    assert lying.status_code == 413
    still_serving(client)


def test_an_unknown_route_is_an_openai_error(server):
    assert_error(httpx.get(f"{server.url}/v1/nothing"), 404)
    assert_error(httpx.get(f"{server.url}/v1/completions"), 405)


def test_a_client_that_leaves_mid_stream_frees_its_row(tmp_path):
    """With one batch row, a streamed request that runs 400 tokens when read to the end is abandoned
    after two chunks: the next request is served, and the engine stopped generating for the first."""
    import json

    run = tiny_serving_run(tmp_path / "run", block_size=512)
    with running_server(run, max_batch_size=1) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60)
        body = {"model": "tiny", "prompt": "First", "max_tokens": 400, "temperature": 0}
        whole = client.completions.create(**body)
        assert whole.choices[0].finish_reason == "length"  # read to the end, it runs all 400 tokens
        before = server.state.engine.stats().tokens
        with httpx.stream(
            "POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60
        ) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    json.loads(line[len("data: ") :])
                    seen += 1
                if seen == 2:
                    break
        answer = client.completions.create(model="tiny", prompt="All", max_tokens=3, temperature=0)
        assert answer.usage.completion_tokens >= 1
        deadline = time.monotonic() + 10
        while server.state.engine.stats().running and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = server.state.engine.stats()
        assert stats.running == 0
        assert stats.tokens - before < 400, f"the abandoned request ran on: {stats.tokens - before} tokens"


def _json(body: object) -> bytes:
    import json

    return json.dumps(body).encode()

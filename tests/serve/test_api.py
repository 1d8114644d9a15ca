"""``lmforge serve`` over loopback, driven by the official ``openai`` client.

The truths: ``lmforge generate`` (greedy and beam text for the same prompt), the model's own
log-softmax (logprobs), the tokenizer (usage), the default chat template written out by hand, and
properties of the API (streamed pieces add up to the answer; the same seed gives the same text;
choice i of a seeded request is the request seeded seed + i).
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from lmforge.cli import main  # noqa: E402
from tests.serve.api_server import running_server, tiny_serving_run  # noqa: E402

PROMPT = "First Citizen"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_serving_run(tmp_path_factory.mktemp("serve") / "run", block_size=64)


@pytest.fixture(scope="module")
def server(run_dir):
    with running_server(run_dir, max_batch_size=8) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def generate_cli(run_dir, *flags: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["generate", "--checkpoint", str(run_dir), "--device", "cpu", "--json", *flags]) == 0
    return json.loads(out.getvalue())


def greedy(client, prompt: str = PROMPT, max_tokens: int = 20, **extra):
    return client.completions.create(
        model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0, **extra
    )


def test_greedy_completion_equals_lmforge_generate(client, run_dir):
    answer = greedy(client)
    expected = generate_cli(run_dir, "--prompt", PROMPT, "--strategy", "greedy", "--max-new-tokens", "20")
    sample = expected["samples"][0]
    assert answer.choices[0].text == sample["text"]
    assert answer.choices[0].finish_reason == {"length": "length", "eos": "stop"}[sample["finish"]]
    assert answer.object == "text_completion" and answer.model == "tiny"


def test_beam_search_equals_lmforge_generate_beam(client, run_dir):
    answer = greedy(client, max_tokens=12, n=2, extra_body={"num_beams": 3})
    expected = generate_cli(
        run_dir, "--prompt", PROMPT, "--strategy", "beam", "--num-beams", "3", "--num-samples", "2",
        "--max-new-tokens", "12",
    )  # fmt: skip
    assert [c.text for c in answer.choices] == [s["text"] for s in expected["samples"]]
    assert [c.index for c in answer.choices] == [0, 1]


def test_usage_counts_the_prompt_and_the_new_tokens(client, server):
    answer = greedy(client, max_tokens=7, extra_body={"ignore_eos": True})  # an unknown field is ignored
    prompt_tokens = len(server.state.tokenizer.encode(PROMPT))
    generated = 7 if answer.choices[0].finish_reason == "length" else answer.usage.completion_tokens
    assert answer.usage.prompt_tokens == prompt_tokens
    assert answer.usage.completion_tokens == generated
    assert answer.usage.total_tokens == prompt_tokens + generated


def test_logprobs_are_the_models_log_softmax(client, server):
    answer = greedy(client, max_tokens=8, logprobs=3)
    logprobs = answer.choices[0].logprobs
    tokenizer, model = server.state.tokenizer, server.state.model
    prompt_ids = tokenizer.encode(PROMPT)
    new_ids = [tokenizer.token_to_id(t) for t in logprobs.tokens]
    assert "".join(logprobs.tokens) == answer.choices[0].text
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + new_ids])).logits[0].float()
    truth = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]  # position t predicts t + 1
    for step, (token, chosen, top) in enumerate(zip(new_ids, logprobs.token_logprobs, logprobs.top_logprobs)):
        assert chosen == pytest.approx(truth[step, token].item(), abs=1e-4)
        values, ids = truth[step].topk(3)
        assert len(top) == 3
        assert list(top.values()) == pytest.approx(values.tolist(), abs=1e-4)
        assert list(top) == [tokenizer.decode([i]) for i in ids.tolist()]
        assert next(iter(top)) == tokenizer.decode([token])  # greedy: the chosen token is the likeliest
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]


def test_chat_renders_the_default_template(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Speak"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0)
    by_hand = "System: Be brief.\n\nUser: Speak\n\nAssistant:"
    completion = greedy(client, prompt=by_hand, max_tokens=15)
    assert chat.choices[0].message.content == completion.choices[0].text
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens == completion.usage.prompt_tokens
    assert chat.object == "chat.completion"


def test_a_multi_turn_chat_is_encoded_as_sft_trained_it(client, run_dir):
    """Each earlier answer ends with end-of-text, as `finetune sft` trained it, and the pieces are
    encoded apart: the server continues the ids the chat command and SFT use, not the one-piece text."""
    from lmforge.run import Run
    from lmforge.tokenizers.chat import ChatTemplate, chat_segments, encode_chat, encode_segments

    messages = [
        {"role": "user", "content": "Speak"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Go"},
    ]
    tokenizer = Run(run_dir).load_tokenizer()
    template = ChatTemplate.for_tokenizer(run_dir / "tokenizer", tokenizer)
    ids, _ = encode_segments(tokenizer, chat_segments(template, messages, True))
    one_piece = encode_chat(tokenizer, template.render(messages, add_generation_prompt=True))
    assert len(ids) == len(one_piece) + 1 and tokenizer.document_separator_id in ids
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
    completion = greedy(client, prompt=ids, max_tokens=4)
    assert chat.usage.prompt_tokens == len(ids)
    assert chat.choices[0].message.content == completion.choices[0].text


def test_chat_logprobs_shape(client):
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Speak"}], max_completion_tokens=6,
        temperature=0, logprobs=True, top_logprobs=2,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == chat.choices[0].message.content
    for entry in content:
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.top_logprobs[0].token == entry.token and entry.top_logprobs[0].logprob == entry.logprob


def test_streamed_completion_adds_up_to_the_answer(client):
    whole = greedy(client, max_tokens=15, logprobs=1)
    chunks = list(
        greedy(client, max_tokens=15, logprobs=1, stream=True, stream_options={"include_usage": True})
    )
    pieces = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in pieces[:-1])
    streamed_tokens = [t for c in pieces for t in c.choices[0].logprobs.tokens]
    assert streamed_tokens == whole.choices[0].logprobs.tokens
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump() and not chunks[-1].choices


def test_streamed_chat_adds_up_to_the_answer(client):
    request = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_n_choices_are_seeds_in_a_row_and_a_seed_repeats(client):
    sampled = {"prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "model": "tiny"}
    three = client.completions.create(**sampled, n=3, seed=5)
    again = client.completions.create(**sampled, n=3, seed=5)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.text for c in three.choices] == [c.text for c in again.choices]
    for i in range(3):
        alone = client.completions.create(**sampled, seed=5 + i)
        assert alone.choices[0].text == three.choices[i].text
    assert three.usage.prompt_tokens == len(PROMPT)  # the prompt is counted once, whatever n
    assert len({c.text for c in three.choices}) > 1  # three seeds, 12 characters: not all alike


def test_several_prompts_are_numbered_prompt_major(client):
    answer = client.completions.create(
        model="tiny", prompt=["First", "All"], n=2, max_tokens=5, temperature=0
    )
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    first, second = greedy(client, "First", 5).choices[0].text, greedy(client, "All", 5).choices[0].text
    assert [c.text for c in answer.choices] == [first, first, second, second]


def test_stop_string_cuts_before_it(client):
    text = greedy(client, max_tokens=20).choices[0].text
    assert len(text) >= 6, text
    stop = text[3:5]
    expected = text[: text.find(stop)]
    answer = greedy(client, max_tokens=20, stop=[stop, "never appears"])
    assert answer.choices[0].text == expected
    assert answer.choices[0].finish_reason == "stop"
    streamed = list(greedy(client, max_tokens=20, stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == expected
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_models_health_and_metrics(client, server):
    import httpx2 as httpx

    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"

    def metric(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    ok = 'lmforge_requests_total{endpoint="/v1/completions",status="200"}'
    before = httpx.get(f"{server.url}/metrics").text
    answer = greedy(client, max_tokens=4)
    after = httpx.get(f"{server.url}/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert metric(after.text, ok) == metric(before, ok) + 1
    grown = metric(after.text, "lmforge_completion_tokens_total") - metric(
        before, "lmforge_completion_tokens_total"
    )
    assert grown == answer.usage.completion_tokens
    count = 'lmforge_request_duration_seconds_count{endpoint="/v1/completions"}'
    assert metric(after.text, count) == metric(before, count) + 1
    for gauge in ("lmforge_queue_length", "lmforge_batch_size"):
        assert re.search(rf"^# TYPE {gauge} gauge$", after.text, re.MULTILINE)


def test_root_serves_the_playground_page_from_the_package(server, monkeypatch, tmp_path):
    import httpx2 as httpx

    from lmforge.serve import app

    page = tmp_path / "playground.html"
    page.write_text("<!doctype html><title>lmforge playground</title>", encoding="utf-8")
    monkeypatch.setattr(app, "PLAYGROUND", page)
    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text == page.read_text(encoding="utf-8")
    monkeypatch.setattr(app, "PLAYGROUND", tmp_path / "absent.html")
    missing = httpx.get(f"{server.url}/")
    assert missing.status_code == 404 and "playground" in missing.json()["error"]["message"]

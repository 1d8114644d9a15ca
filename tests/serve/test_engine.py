"""The continuous-batching engine against independent truths: ``lmforge.generate`` decoding each prompt
alone (itself checked against transformers), a plain forward pass for logprobs, hand-computed penalties."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.generate import GenerationConfig, generate
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.serve.engine import Engine, EngineStoppedError, SamplingParams, TokenEvent
from lmforge.serve.sampler import RowSampler, choose

VOCAB, CONTEXT = 97, 64
VARIANTS = [
    {"pos_encoding": "learned"},
    {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
]


def peaked_gpt(seed: int = 0, **overrides) -> GPT:
    """A 2-layer GPT with spread-out weights: peaked next-token distributions, no near-ties for the
    float noise of batched matmuls to flip."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=VOCAB, block_size=CONTEXT, n_layer=2, n_head=4, n_embd=32, **overrides)
    model = GPT(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3)
    return model


def prompts(count: int, seed: int, lo: int = 3, hi: int = 25) -> list[list[int]]:
    rng = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi, (count,), generator=rng).tolist()
    return [torch.randint(0, VOCAB, (n,), generator=rng).tolist() for n in lengths]


def alone(model, prompt: list[int], **settings) -> list[int]:
    """``lmforge.generate`` on this prompt by itself: the truth the engine's batch must reproduce."""
    seed = settings.pop("seed", None)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    config = GenerationConfig(**settings)
    return generate(model, [prompt], config, generator=generator)[0][0].ids


async def collect(engine: Engine, prompt: list[int], params: SamplingParams, after_steps: int = 0):
    """All events of one request, submitted once the engine has run ``after_steps`` decode steps."""
    while engine.stats().steps < after_steps:
        await asyncio.sleep(0.0005)
    return [event async for event in engine.generate(prompt, params)]


def run_engine(model, coroutine_fn, **engine_args):
    engine = Engine(model, **engine_args)
    engine.start()
    try:
        return asyncio.run(coroutine_fn(engine))
    finally:
        engine.stop()


class BatchSizes:
    """Records the batch of every forward pass (a pre-hook on the model)."""

    def __init__(self, model) -> None:
        self.sizes: list[tuple[int, int]] = []  # (rows, tokens per row)
        self.in_forward = False
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)

    def _before(self, module, args):
        self.in_forward = True
        self.sizes.append(tuple(args[0].shape))

    def _after(self, module, args, output):
        self.in_forward = False


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v["pos_encoding"])
@pytest.mark.parametrize("prefill_chunk", [4, 256])
def test_greedy_matches_generate_alone_with_staggered_joins(variant, prefill_chunk):
    model = peaked_gpt(1, **variant)
    batch = prompts(10, seed=2)
    max_tokens = [5, 30, 12, 1, 25, 8, 17, 3, 22, 10]
    starts = [0, 0, 0, 2, 3, 3, 6, 10, 10, 15]  # decode steps before each request arrives
    sizes = BatchSizes(model)

    async def main(engine):
        jobs = [
            collect(engine, p, SamplingParams(max_tokens=m, temperature=0), after_steps=s)
            for p, m, s in zip(batch, max_tokens, starts)
        ]
        return await asyncio.gather(*jobs)

    results = run_engine(model, main, max_batch_size=4, prefill_chunk=prefill_chunk)
    engine_calls = list(sizes.sizes)  # before generate() below adds its own
    for prompt, m, events in zip(batch, max_tokens, results):
        assert [e.token_id for e in events] == alone(model, prompt, strategy="greedy", max_new_tokens=m)
        assert [e.finish_reason for e in events] == [None] * (m - 1) + ["length"]
    decode_rows = [rows for rows, tokens in engine_calls if tokens == 1]
    assert max(decode_rows) == 4  # batched, and never above max_batch_size
    assert max(rows for rows, _ in engine_calls) <= 4
    prefill_tokens = [tokens for rows, tokens in engine_calls if rows == 1 and tokens > 1]
    assert max(prefill_tokens) <= prefill_chunk


def test_stop_token_ends_with_reason_stop_like_eos_in_generate():
    model = peaked_gpt(3)
    batch = prompts(6, seed=4)
    truths = [alone(model, p, strategy="greedy", max_new_tokens=40) for p in batch]
    # a stop token each greedy continuation reaches after a few tokens
    stop = truths[0][3]

    async def main(engine):
        params = SamplingParams(max_tokens=40, temperature=0, stop_token_ids=(stop,))
        return await asyncio.gather(*(collect(engine, p, params) for p in batch))

    results = run_engine(model, main, max_batch_size=3)
    for prompt, events in zip(batch, results):
        truth = alone(model, prompt, strategy="greedy", max_new_tokens=40, eos_id=stop)
        ids = [e.token_id for e in events]
        if stop in ids:
            assert ids[:-1] == truth and ids[-1] == stop and events[-1].finish_reason == "stop"
        else:
            assert ids == truth and events[-1].finish_reason == "length"
    assert results[0][-1].finish_reason == "stop" and len(results[0]) == 4


@pytest.mark.parametrize("settings", [{}, {"top_k": 5}, {"top_p": 0.7, "temperature": 0.8}])
def test_same_seed_same_tokens_alone_in_a_busy_batch_and_as_generate(settings):
    model = peaked_gpt(5)
    for param in model.parameters():  # flatter distributions than peaked_gpt's: sampling matters
        param.data.mul_(0.5)
    prompt = prompts(1, seed=6)[0]
    params = SamplingParams(max_tokens=20, seed=1234, **settings)
    busy = [SamplingParams(max_tokens=m, seed=s, temperature=1.3) for m, s in [(30, 1), (7, 2), (25, None)]]

    async def main(engine):
        solo = await collect(engine, prompt, params)
        others = [collect(engine, p, b) for p, b in zip(prompts(3, seed=7), busy)]
        crowd = await asyncio.gather(
            *others, collect(engine, prompt, params, after_steps=engine.stats().steps + 3)
        )
        return solo, crowd[-1]

    solo, crowded = run_engine(model, main, max_batch_size=4, prefill_chunk=5)
    truth = alone(model, prompt, strategy="sample", max_new_tokens=20, seed=1234, **settings)
    assert [e.token_id for e in solo] == [e.token_id for e in crowded] == truth


def test_top_k_and_top_p_restrict_the_choices_to_the_likeliest():
    model = peaked_gpt(8)
    for param in model.parameters():
        param.data.mul_(0.3)  # flat: without the limits, unlikely tokens would be drawn
    batch = prompts(4, seed=9)

    async def main(engine):
        top_k = [
            collect(engine, p, SamplingParams(max_tokens=15, top_k=3, seed=i)) for i, p in enumerate(batch)
        ]
        top_p = [
            collect(engine, p, SamplingParams(max_tokens=15, top_p=0.3, seed=i)) for i, p in enumerate(batch)
        ]
        return await asyncio.gather(*top_k, *top_p)

    results = run_engine(model, main, max_batch_size=8)
    for index, events in enumerate(results):
        prompt = batch[index % 4]
        ids = [e.token_id for e in events]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]  # (15, V)
        probs = logits.softmax(-1)
        for t, token in enumerate(ids):
            if index < 4:  # top_k=3: among the 3 likeliest
                assert token in probs[t].topk(3).indices.tolist()
            else:  # top_p=0.3: the likelier tokens before it hold less than 0.3 of the mass
                assert probs[t][probs[t] > probs[t][token]].sum() < 0.3


def test_logprobs_equal_log_softmax_of_a_plain_forward():
    model = peaked_gpt(10)
    batch = prompts(5, seed=11)

    async def main(engine):
        jobs = [
            collect(
                engine, p, SamplingParams(max_tokens=12, seed=i, logprobs=k, temperature=0.9), after_steps=i
            )
            for i, (p, k) in enumerate(zip(batch, [0, 1, 5, 5, None]))
        ]
        return await asyncio.gather(*jobs)

    results = run_engine(model, main, max_batch_size=3, prefill_chunk=6)
    for prompt, events, k in zip(batch, results, [0, 1, 5, 5, None]):
        ids = [e.token_id for e in events]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
        reference = torch.log_softmax(logits, -1)
        for t, event in enumerate(events):
            if k is None:
                assert event.logprob is None and event.top_logprobs == []
                continue
            assert event.logprob == pytest.approx(reference[t, event.token_id].item(), abs=1e-4)
            assert len(event.top_logprobs) == k
            values = [v for _, v in event.top_logprobs]
            assert values == sorted(values, reverse=True)
            assert sum(torch.tensor(values).exp().tolist()) <= 1 + 1e-6
            if k:
                top_values, top_ids = reference[t].topk(k)
                assert [i for i, _ in event.top_logprobs] == top_ids.tolist()
                assert values == pytest.approx(top_values.tolist(), abs=1e-4)


def test_penalties_hand_computed():
    # logits [2.0, 1.9, 0.0]; presence 0.5, frequency 0.15 over the tokens generated so far:
    # step 1: no counts -> 0;  step 2: 2.0 - 0.5 - 0.15 = 1.35 < 1.9 -> 1
    # step 3: 1.35 vs 1.9 - 0.65 = 1.25 -> 0;  step 4: 2.0 - 0.5 - 0.30 = 1.20 < 1.25 -> 1
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    sampler = RowSampler(
        SamplingParams(max_tokens=4, temperature=0, presence_penalty=0.5, frequency_penalty=0.15, logprobs=0),
        3,
        torch.device("cpu"),
    )
    plain = RowSampler(SamplingParams(max_tokens=4, temperature=0), 3, torch.device("cpu"))
    chosen, plain_chosen = [], []
    for _ in range(4):
        tokens, logprobs, _ = choose(logits, [sampler])
        chosen.append((tokens[0], logprobs[0]))
        plain_chosen.append(choose(logits, [plain])[0][0])
    raw = torch.log_softmax(logits[0], -1)  # logprobs report the unpenalised distribution
    assert chosen == [(t, pytest.approx(raw[t].item())) for t in [0, 1, 0, 1]]
    assert plain_chosen == [0, 0, 0, 0]
    assert torch.equal(logits, torch.tensor([[2.0, 1.9, 0.0]]))  # the caller's logits are untouched


def test_presence_penalty_in_the_engine_never_repeats_a_token():
    model = peaked_gpt(12)
    batch = prompts(3, seed=13)

    async def main(engine):
        params = SamplingParams(max_tokens=30, temperature=0, presence_penalty=1e4)
        plain = SamplingParams(max_tokens=30, temperature=0)
        return await asyncio.gather(
            *(collect(engine, p, params) for p in batch), collect(engine, batch[0], plain)
        )

    results = run_engine(model, main)
    for events in results[:3]:
        ids = [e.token_id for e in events]
        assert len(set(ids)) == len(ids) == 30
    assert [e.token_id for e in results[3]] == alone(model, batch[0], strategy="greedy", max_new_tokens=30)


def test_a_consumer_that_breaks_off_frees_its_row_for_the_next_request():
    model = peaked_gpt(14)
    prompt, other = prompts(2, seed=15)

    async def main(engine):
        stream = engine.generate(prompt, SamplingParams(max_tokens=38, temperature=0))
        got = [await stream.__anext__(), await stream.__anext__()]
        assert engine.stats().running == 1
        await stream.aclose()  # what a vanished HTTP client's cancelled task does
        for _ in range(2000):
            if engine.stats().running == 0:
                break
            await asyncio.sleep(0.001)
        assert engine.stats().running == 0
        steps = engine.stats().steps
        second = await asyncio.wait_for(
            collect(engine, other, SamplingParams(max_tokens=5, temperature=0)), 10
        )
        return got, second, engine.stats().steps - steps

    got, second, steps = run_engine(model, main, max_batch_size=1)
    assert len(got) == 2 and [e.token_id for e in second] == alone(
        model, other, strategy="greedy", max_new_tokens=5
    )
    assert steps == 4  # only the second request's steps: the first one's row was gone


def test_a_cancelled_task_frees_its_row():
    model = peaked_gpt(14)
    prompt = prompts(1, seed=16)[0]

    async def main(engine):
        async def consume():
            async for _ in engine.generate(prompt, SamplingParams(max_tokens=38, temperature=0)):
                await asyncio.sleep(0.001)

        task = asyncio.create_task(consume())
        while engine.stats().steps < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(2000):
            if engine.stats().running == 0:
                break
            await asyncio.sleep(0.001)
        return engine.stats()

    stats = run_engine(model, main, max_batch_size=1)
    assert stats.running == 0 and stats.steps < 37


def test_run_exclusive_runs_on_the_worker_between_steps():
    model = peaked_gpt(17)
    sizes = BatchSizes(model)
    prompt = prompts(1, seed=18)[0]

    def exclusive():
        assert not sizes.in_forward
        before = engine.stats().steps
        time.sleep(0.05)  # the batch is paused: no step runs meanwhile
        return threading.current_thread().name, before, engine.stats().steps

    async def main(engine):
        job = asyncio.create_task(collect(engine, prompt, SamplingParams(max_tokens=40, temperature=0)))
        while engine.stats().steps < 2:
            await asyncio.sleep(0.001)
        result = await engine.run_exclusive(exclusive)
        events = await job
        with pytest.raises(ZeroDivisionError):
            await engine.run_exclusive(lambda: 1 / 0)
        return result, events

    engine = Engine(model, max_batch_size=2)
    engine.start()
    try:
        (thread, before, after), events = asyncio.run(main(engine))
    finally:
        engine.stop()
    assert thread == "lmforge-engine" and before == after
    assert [e.token_id for e in events] == alone(model, prompt, strategy="greedy", max_new_tokens=40)


def test_stop_aborts_pending_requests_and_refuses_new_ones():
    model = peaked_gpt(19)
    batch = prompts(3, seed=20)
    engine = Engine(model, max_batch_size=1)

    async def main():
        streams = [engine.generate(p, SamplingParams(max_tokens=38, temperature=0)) for p in batch]
        first = await streams[0].__anext__()  # request 0 runs; the others wait for its row
        waiting = [asyncio.create_task(s.__anext__()) for s in streams[1:]]
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)
        tail = [e async for e in streams[0]]
        others = [await w for w in waiting]
        with pytest.raises(EngineStoppedError):
            await engine.generate(batch[0], SamplingParams(max_tokens=2)).__anext__()
        return first, tail, others

    engine.start()
    first, tail, others = asyncio.run(main())
    assert first.finish_reason is None and tail[-1].finish_reason == "abort"
    assert [e.finish_reason for e in others] == ["abort", "abort"]
    assert all(isinstance(e, TokenEvent) and e.token_id == -1 for e in [tail[-1], *others])


def test_requests_past_the_context_are_refused_before_queueing():
    model = peaked_gpt(21)
    engine = Engine(model)

    async def first(prompt, params):
        return await engine.generate(prompt, params).__anext__()

    with pytest.raises(UserInputError, match="prompt has 64 tokens"):
        asyncio.run(first([1] * CONTEXT, SamplingParams(max_tokens=1)))
    with pytest.raises(UserInputError, match="exceeds the model's context"):
        asyncio.run(first([1] * 60, SamplingParams(max_tokens=5)))
    with pytest.raises(UserInputError, match="top_p"):
        engine.validate([1], SamplingParams(max_tokens=1, top_p=0))
    engine.validate([1] * 60, SamplingParams(max_tokens=4))  # exactly the context: fine
    assert engine.stats().waiting == 0

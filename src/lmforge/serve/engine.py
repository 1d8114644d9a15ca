"""Continuous batching: concurrent requests share the model's decoding steps.

    engine = Engine(model, max_batch_size=32, prefill_chunk=256); engine.start()
    async for event in engine.generate([464, 3290, 318], SamplingParams(max_tokens=20)):
        print(event.token_id, event.logprob, event.finish_reason)     # one event per new token

One worker thread owns the model and loops:
1. runs the ``run_exclusive`` calls that wait (beam search and anything outside batching), drops
   cancelled requests and admits waiting ones into free rows (at most ``max_batch_size``);
2. prefills at most ``prefill_chunk`` prompt tokens, of one joining request or of several short
   ones, so a long prompt stalls the running rows for one chunk at a time, never for its whole length;
   a request whose prompt is done samples its first token and joins the batch;
3. runs ONE decode step for every running row together, each row one token at its own position
   (slots.py), samples every row with its own settings (sampler.py), hands each request its event
   on its own event loop, and retires the rows that finished.
So a request joins at the next step and leaves when it ends: nobody waits for the longest request.

A consumer that stops reading (breaks out, ``aclose()``, its task cancelled when the HTTP client
went away) marks its request cancelled in the generator's ``finally``; the worker frees its row
before the next step. (After a bare ``break`` the ``finally`` runs when the generator is garbage
collected; ``aclose()`` it, or use ``contextlib.aclosing``, to free the row at once.)

What a caller sees: ``generate`` raises ``UserInputError`` for a request that cannot fit (prompt
longer than ``context_limit - 1``, prompt + max_tokens past it; ``validate`` checks the same
without queueing) and ``EngineStoppedError`` once stopped, both at the first iteration. Its last
event has a ``finish_reason``: "stop" (a stop token, not to be shown as text), "length", or
"abort" (``stop()`` was called; that event carries no token, ``token_id`` -1). A forward pass
that fails raises its error in the generators of the requests it was for; the engine serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from lmforge.errors import LMForgeError, UserInputError
from lmforge.serve.sampler import RowSampler, SamplingParams, TokenEvent, choose
from lmforge.serve.slots import KVSlots

T = TypeVar("T")

__all__ = ["Engine", "EngineStats", "EngineStoppedError", "SamplingParams", "TokenEvent"]


# A decoding step attends row by row (each row over its own keys) when the rows' keys fill less
# than this share of rows x the longest row's: at 32 rows of GPT-2's 12 heads, filled half,
# per-row SDPA took 2.4 ms a layer against 4.3 batched under a mask in bf16 (5.1 against 8.0 in
# fp32; Emerald Rapids, 2 cores); filled wholly, the one batched call wins.
RAGGED_FILL = 0.8


class EngineStoppedError(LMForgeError):
    """The engine is not running (never started, or stopped): nothing can be queued."""


@dataclass(frozen=True)
class EngineStats:
    running: int  # rows in the batch (decoding, or prefilling their prompt)
    waiting: int  # requests queued for a free row
    steps: int  # decode steps run
    tokens: int  # tokens generated (every request, every step)
    prompt_tokens: int  # prompt tokens prefilled
    max_batch_size: int


class _Request:
    """One generation: its prompt, settings, where its KV rows are and where its events go."""

    def __init__(self, prompt: list[int], params: SamplingParams, loop, queue: asyncio.Queue) -> None:
        self.prompt, self.params = prompt, params
        self.loop, self.queue = loop, queue
        self.sampler: RowSampler | None = None  # made on the worker (it holds device tensors)
        self.row = -1
        self.filled = 0  # positions of this row's KV cache that hold keys and values
        self.last_token = -1  # the token the next decode step feeds
        self.generated = 0
        self.cancelled = False  # set by the consumer's side, read by the worker
        self.done = False


class Engine:
    def __init__(
        self, model, *, max_batch_size: int = 32, prefill_chunk: int = 256, context: int | None = None
    ) -> None:
        """model: a ``decoding == "kv_cache"`` model, on its device. max_batch_size: rows decoded
        together. prefill_chunk: prompt tokens prefilled per step at most. context: the longest
        sequence served (prompt + new tokens), default the model's ``context_limit``; a lower one
        shrinks the KV storage, (n_layer, max_batch_size, kv_heads, context, head_size) for keys and
        again for values, allocated by ``start()``."""
        if getattr(model, "decoding", None) != "kv_cache":
            raise UserInputError(
                f"the serving engine batches models that decode through a key-value cache; "
                f"{type(model).__name__} decodes by {getattr(model, 'decoding', 'nothing')!r}"
            )
        if max_batch_size < 1:
            raise UserInputError(f"max_batch_size must be >= 1; got {max_batch_size}")
        if prefill_chunk < 1:
            raise UserInputError(f"prefill_chunk must be >= 1; got {prefill_chunk}")
        self.model = model.eval()
        self.max_batch_size, self.prefill_chunk = max_batch_size, prefill_chunk
        limit = model.context_limit
        if context is not None and not 2 <= context <= limit:
            raise UserInputError(f"context must be in 2..{limit} (the model's context); got {context}")
        self.context_limit: int = context or limit
        self.vocab_size: int = model.config.vocab_size
        # Mistral-style: each query sees the last ``window`` keys only (None: all of them)
        self.window: int | None = getattr(model.config, "sliding_window", None)
        self.device = next(model.parameters()).device
        self._slots: KVSlots | None = None  # allocated on start, released on stop
        self._incoming: deque[_Request] = deque()  # appended by any thread, drained by the worker
        self._exclusive: deque[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []  # row i holds _running[i]
        self._prefilling: _Request | None = None  # row len(_running), part of its prompt cached
        self._wake = threading.Event()
        self._lock = threading.Lock()  # stop() vs a request being queued: none slips past the shutdown
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._steps = self._tokens = self._prompt_tokens = 0

    # --- the caller's side (any thread, usually the server's event loop) -------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        layout = self.model.cache_layout()
        self._slots = KVSlots(
            layout.layers,
            self.max_batch_size,
            layout.heads,
            self.context_limit,
            layout.head_size,
            dtype=layout.dtype,
            device=self.device,
        )
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="lmforge-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the worker; every pending request gets a last event with finish_reason "abort"."""
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join()
        self._thread = None
        self._slots = None

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise ``UserInputError`` for a request that cannot run (``generate`` calls it first)."""
        limit = self.context_limit
        if not prompt_ids:
            raise UserInputError("the prompt is empty; start from the end-of-text token for none")
        if params.max_tokens < 1:
            raise UserInputError(f"max_tokens must be >= 1; got {params.max_tokens}")
        if len(prompt_ids) > limit - 1:
            raise UserInputError(
                f"the prompt has {len(prompt_ids)} tokens; this model reads {limit} at most, "
                f"so a prompt may have {limit - 1} to leave room for one new token"
            )
        if len(prompt_ids) + params.max_tokens > limit:
            raise UserInputError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                f"model's context of {limit} tokens; lower max_tokens to {limit - len(prompt_ids)} or less"
            )
        vocab = self.vocab_size
        if any(not 0 <= t < vocab for t in prompt_ids):
            raise UserInputError(f"a prompt token id is outside the vocabulary (0..{vocab - 1})")
        if params.temperature < 0:
            raise UserInputError(f"temperature must be >= 0 (0 means greedy); got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise UserInputError(f"top_p must be in (0, 1]; got {params.top_p}")
        if params.top_k < 0:
            raise UserInputError(f"top_k must be >= 0 (0 means off); got {params.top_k}")
        if params.logprobs is not None and params.logprobs < 0:
            raise UserInputError(f"logprobs must be >= 0; got {params.logprobs}")

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[TokenEvent]:
        """The new tokens of ``prompt_ids``, one event each; the last carries the finish reason.

        Raises ``UserInputError`` (bad request) or ``EngineStoppedError`` at the first iteration,
        before anything is queued.
        """
        self.validate(prompt_ids, params)
        request = _Request(list(prompt_ids), params, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self._thread is None or self._stopping:
                raise EngineStoppedError("the engine is not running; call start() first")
            self._incoming.append(request)
        self._wake.set()
        try:
            while True:
                event = await request.queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            if not request.done:
                request.cancelled = True  # the worker frees its row before the next step
                self._wake.set()

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread between two steps, the batch paused; its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            if self._thread is None or self._stopping:
                raise EngineStoppedError("the engine is not running; call start() first")
            self._exclusive.append((fn, loop, future))
        self._wake.set()
        return await future

    def stats(self) -> EngineStats:
        running = len(self._running) + (self._prefilling is not None)
        return EngineStats(
            running=running,
            waiting=len(self._waiting) + len(self._incoming),
            steps=self._steps,
            tokens=self._tokens,
            prompt_tokens=self._prompt_tokens,
            max_batch_size=self.max_batch_size,
        )

    # --- the worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        with torch.inference_mode():
            while not self._stopping:
                self._wake.clear()  # before looking: a request queued from now on sets it again
                self._run_exclusive_calls()
                self._admit()
                if not (self._running or self._prefilling or self._waiting):
                    self._wake.wait(0.5)
                    continue
                # a failed forward ends the requests it was for; the engine serves on
                try:
                    self._prefill()
                except Exception as error:
                    self._fail([r for r in self._running if r.generated == 0], error)
                try:
                    if self._running:
                        self._decode()
                except Exception as error:
                    self._fail(list(self._running), error)
            self._shut_down()

    def _run_exclusive_calls(self) -> None:
        while self._exclusive:
            fn, loop, future = self._exclusive.popleft()
            try:
                result = fn()
            except Exception as error:
                _call_soon(loop, _settle, future, None, error)
            else:
                _call_soon(loop, _settle, future, result, None)

    def _admit(self) -> None:
        """Drop cancelled requests, queue new ones, start prefilling into the next free row."""
        while self._incoming:
            self._waiting.append(self._incoming.popleft())
        for request in [r for r in self._running if r.cancelled]:
            self._retire(request)
        if self._prefilling is not None and self._prefilling.cancelled:
            self._prefilling.done = True
            self._prefilling = None
        self._waiting = deque(r for r in self._waiting if not r.cancelled)

    def _retire(self, request: _Request) -> None:
        """Free a running row: the last running row moves into it, the prefilling row after it."""
        request.done = True
        row, last = request.row, len(self._running) - 1
        if row != last:
            moved = self._running[last]
            self._slots.move(last, row, moved.filled)
            moved.row = row
            self._running[row] = moved
        self._running.pop()
        if self._prefilling is not None:
            self._slots.move(last + 1, last, self._prefilling.filled)
            self._prefilling.row = last

    def _prefill(self) -> None:
        """Up to ``prefill_chunk`` prompt tokens: the current joiner's next chunk, then new joiners'."""
        budget = self.prefill_chunk
        while budget > 0:
            request = self._prefilling
            if request is None:
                if not self._waiting or len(self._running) >= self.max_batch_size:
                    return
                request = self._waiting.popleft()
                request.sampler = RowSampler(request.params, self.vocab_size, self.device)
                request.row, request.filled = len(self._running), 0
                self._prefilling = request
            start = request.filled
            chunk = request.prompt[start : start + budget]
            ids = torch.tensor([chunk], device=self.device)
            out = self.model(
                ids, kv_cache=self._slots.prefill_view(request.row, start), last_logits_only=True
            )
            request.filled += len(chunk)
            budget -= len(chunk)
            self._prompt_tokens += len(chunk)
            if request.filled == len(request.prompt):
                self._prefilling = None
                request.row = len(self._running)  # where it already is: right after the running rows
                self._running.append(request)
                self._deliver([request], out.logits[:, -1])

    def _decode(self) -> None:
        """One token for every running row (the ones that just joined included)."""
        rows = list(self._running)  # row i of the batch is rows[i]: the view needs no gather
        lengths_list = [r.filled for r in rows]
        span = max(lengths_list) + 1
        lengths = torch.tensor(lengths_list, device=self.device)  # (n,): each row's new position
        ids = torch.tensor([[r.last_token] for r in rows], device=self.device)  # (n, 1)
        keys = torch.arange(span, device=self.device)[None, :]
        mask = keys <= lengths[:, None]  # (n, S): row i sees its own positions 0..lengths[i]
        past = None  # the longest row's (slots.DecodeView)
        if self.window is not None and span > self.window:
            mask &= keys > lengths[:, None] - self.window
            past = 0
        row_keys = None  # each row over its own keys, where padding to the longest row would cost more
        if (
            self.window is None
            and self.device.type == "cpu"
            and sum(lengths_list) + len(rows) < RAGGED_FILL * len(rows) * span
        ):
            row_keys = [length + 1 for length in lengths_list]
        out = self.model(
            ids,
            attention_mask=mask[:, None, None, :],
            position_ids=lengths[:, None],
            kv_cache=self._slots.decode_view(lengths, span, past, row_keys),
            last_logits_only=True,
        )
        for request in rows:
            request.filled += 1
        self._steps += 1
        self._deliver(rows, out.logits[:, -1])

    def _deliver(self, rows: list[_Request], logits: torch.Tensor) -> None:
        """Sample each row's token from logits (n, V), send the events, retire finished rows."""
        tokens, chosen, tops = choose(logits, [r.sampler for r in rows])
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        finished = []
        for request, token, logprob, top in zip(rows, tokens, chosen, tops):
            request.generated += 1
            self._tokens += 1
            reason = None
            if token in request.params.stop_token_ids:
                reason = "stop"
            elif request.generated >= request.params.max_tokens:
                reason = "length"
            request.last_token = token
            if reason is not None:
                finished.append(request)
            by_loop.setdefault(request.loop, []).append((request, TokenEvent(token, logprob, top, reason)))
        for request in finished:  # first: a consumer that reads its last event finds its row gone
            self._retire(request)
        for loop, events in by_loop.items():
            _call_soon(loop, _put_events, events)

    def _fail(self, requests: list[_Request], error: Exception) -> None:
        """These requests' generators raise ``error``; their rows (and the joiner's) are freed.

        A failed decode step leaves the other rows intact: a row's new key and value only count
        once its length grows, after the step succeeded."""
        if self._prefilling is not None:
            requests.append(self._prefilling)
            self._prefilling.done = True
            self._prefilling = None
        for request in requests:
            if request in self._running:
                self._retire(request)
            request.done = True
            _call_soon(request.loop, request.queue.put_nowait, error)

    def _shut_down(self) -> None:
        with self._lock:  # nothing is queued after this: generate() and run_exclusive() see _stopping
            pending = [*self._running, *([self._prefilling] if self._prefilling else []), *self._waiting]
            pending += list(self._incoming)
            self._incoming.clear()
            exclusive = list(self._exclusive)
            self._exclusive.clear()
        self._running, self._prefilling, self._waiting = [], None, deque()
        for request in pending:
            request.done = True
            _call_soon(request.loop, request.queue.put_nowait, TokenEvent(-1, None, [], "abort"))
        for _fn, loop, future in exclusive:
            _call_soon(loop, _settle, future, None, EngineStoppedError("the engine stopped"))


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> None:
    """Schedule fn on a consumer's loop; a loop that closed has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _put_events(events: list[tuple[_Request, TokenEvent]]) -> None:
    for request, event in events:
        request.queue.put_nowait(event)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

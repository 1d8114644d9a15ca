"""The OpenAI request bodies the server accepts, checked and turned into engine work.

    body = {"model": "stdlib", "prompt": "Return the", "max_tokens": 20, "temperature": 0, "n": 2, "seed": 7}
    request = parse_completion(body, limits)      # or raises APIError(400, ...) naming the field
    request.prompts == ["Return the"]; request.sampling(n_index=1).seed == 8

Field meanings are OpenAI's (``/v1/completions`` and ``/v1/chat/completions``), plus two extension
fields as vLLM accepts them: ``top_k`` (0 or -1: off) and ``num_beams`` (> 1: beam search, not
streamed token by token). Fields the server does not know are ignored, because OpenAI clients send
extras (``user``, ``metadata``, ...). A value outside what the field allows is a 400 whose ``param``
names the field; ``n``, ``num_beams``, ``logprobs`` and the number of prompts are bounded because
each costs a batch row or a softmax over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmforge.tokenizers.chat import encode_conversation

MAX_N = 16  # choices per prompt (and at most the batch size)
MAX_BEAMS = 16
MAX_TOP_LOGPROBS = 20  # OpenAI's own bound for top_logprobs
MAX_PROMPTS = 32  # prompts in one completions request
MAX_CHOICES = 64  # prompts x n in one completions request
MAX_STOPS = 16


class APIError(Exception):
    """An answer with a 4xx/5xx status and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    top_k: int = Field(0, ge=-1)
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionBody(_Request):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(...)
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: passed on to the template
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Request):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


_Request.model_rebuild()
CompletionBody.model_rebuild()
ChatBody.model_rebuild()


@dataclass(frozen=True)
class Limits:
    """What the server allows: the CLI's flags and the model's context."""

    max_tokens: int  # --max-tokens-limit
    context: int  # prompt + new tokens
    max_batch_size: int


@dataclass
class Work:
    """One checked request: prompts as ids, and what to generate for each."""

    prompts: list[list[int]]  # token ids, one list per prompt
    prompt_texts: list[str]
    max_tokens: list[int]  # per prompt (chat's default fills what the context leaves)
    body: _Request
    stops: tuple[str, ...]
    logprobs: int | None  # None: none asked; k: the chosen token and the top k

    @property
    def n(self) -> int:
        return self.body.n

    def sampling(self, prompt_index: int, choice: int, stop_token_ids: tuple[int, ...]):
        """The engine's SamplingParams for choice ``choice`` of prompt ``prompt_index``: seeds seed,
        seed + 1, ... so that the n choices differ and the same request gives the same n again."""
        from lmforge.serve.engine import SamplingParams

        body = self.body
        seed = None if body.seed is None else (body.seed + prompt_index * body.n + choice) % 2**64
        return SamplingParams(
            max_tokens=self.max_tokens[prompt_index],
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=max(body.top_k, 0),
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            seed=seed,
            logprobs=self.logprobs,
            stop_token_ids=stop_token_ids,
        )


def validated(model: type[BaseModel], body: object) -> Any:
    """``body`` as ``model``, or a 400 naming the first field at fault."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param) from None


def check_common(body: _Request, limits: Limits, served_model: str) -> tuple[str, ...]:
    """The checks both endpoints share; returns the stop strings."""
    if body.model is not None and body.model != served_model:
        raise APIError(
            404,
            f"The model `{body.model}` does not exist; this server serves `{served_model}`",
            param="model",
            code="model_not_found",
        )
    if body.n > limits.max_batch_size:
        raise APIError(
            400, f"n must be at most the batch size {limits.max_batch_size}; got {body.n}", param="n"
        )
    if body.num_beams > 1 and body.n > body.num_beams:
        raise APIError(400, f"n ({body.n}) cannot exceed num_beams ({body.num_beams})", param="n")
    stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise APIError(400, f"stop takes 1 to {MAX_STOPS} non-empty strings", param="stop")
    return stops


def check_lengths(
    prompts: list[list[int]], asked: int | None, default: int | None, limits: Limits, param: str
) -> list[int]:
    """New tokens per prompt: ``asked`` within 1..--max-tokens-limit and the context, or, when not
    asked, ``default`` (None: all the context leaves) cut to what fits."""
    if asked is not None and not 1 <= asked <= limits.max_tokens:
        raise APIError(
            400,
            f"{param} must be between 1 and {limits.max_tokens} (this server's limit); got {asked}",
            param=param,
        )
    lengths = []
    for ids in prompts:
        room = limits.context - len(ids)
        if room < 1:
            raise APIError(
                400,
                f"This model's maximum context length is {limits.context} tokens; the prompt has {len(ids)} "
                "tokens, which leaves no room for an answer. Shorten the prompt.",
                param="messages" if param == "max_completion_tokens" else "prompt",
                code="context_length_exceeded",
            )
        if asked is not None and asked > room:
            raise APIError(
                400,
                f"This model's maximum context length is {limits.context} tokens; you asked for {len(ids)} "
                f"prompt tokens + {asked} new tokens. Shorten the prompt or lower {param}.",
                param=param,
                code="context_length_exceeded",
            )
        wanted = asked if asked is not None else (default or limits.max_tokens)
        lengths.append(min(wanted, room, limits.max_tokens))
    return lengths


def check_beams(body: _Request, logprobs: int | None) -> None:
    if body.num_beams > 1 and logprobs is not None:
        raise APIError(400, "logprobs are not available with beam search (num_beams > 1)", param="logprobs")


def parse_completion(raw: object, limits: Limits, served_model: str, tokenizer) -> Work:
    """Check a ``/v1/completions`` body; prompts become ids (an empty one starts a document)."""
    body: CompletionBody = validated(CompletionBody, raw)
    stops = check_common(body, limits, served_model)
    check_beams(body, body.logprobs)
    if body.echo:
        raise APIError(400, "echo is not supported: the answer holds the new text only", param="echo")
    prompt = body.prompt
    one = isinstance(prompt, str) or (bool(prompt) and all(isinstance(i, int) for i in prompt))
    items = [prompt] if one else list(prompt)
    if not 1 <= len(items) <= MAX_PROMPTS:
        raise APIError(400, f"prompt takes 1 to {MAX_PROMPTS} prompts; got {len(items)}", param="prompt")
    if len(items) * body.n > MAX_CHOICES:
        raise APIError(
            400, f"prompts x n must be at most {MAX_CHOICES}; got {len(items) * body.n}", param="n"
        )
    ids = [_prompt_ids(item, tokenizer) for item in items]
    texts = [item if isinstance(item, str) else tokenizer.decode(item) for item in items]
    lengths = check_lengths(ids, body.max_tokens, 16, limits, "max_tokens")
    return Work(ids, texts, lengths, body, stops, body.logprobs)


def parse_chat(raw: object, limits: Limits, served_model: str, tokenizer, template) -> Work:
    """Check a ``/v1/chat/completions`` body; the messages are rendered with the chat template."""
    body: ChatBody = validated(ChatBody, raw)
    stops = check_common(body, limits, served_model)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    check_beams(body, logprobs)
    messages = [{**m.model_dump(exclude_none=True), "content": _text_of(m.content)} for m in body.messages]
    text = template.render(messages, add_generation_prompt=True)
    ids = [encode_conversation(tokenizer, template, messages)]  # as `finetune sft` encoded its chats
    if not ids[0]:
        raise APIError(400, "the chat template rendered these messages as no tokens", param="messages")
    asked, param = body.max_completion_tokens, "max_completion_tokens"
    if asked is None:
        asked, param = body.max_tokens, "max_tokens"
    lengths = check_lengths(ids, asked, None, limits, param)
    return Work(ids, [text], lengths, body, stops, logprobs)


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: OpenAI's content parts ({"type": "text", "text": ...}) joined."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400, "this model reads text only: content parts must be {type: text}", param="messages"
            )
        texts.append(part["text"])
    return "".join(texts)


def _prompt_ids(prompt: str | list[int], tokenizer) -> list[int]:
    if isinstance(prompt, list):  # token ids as given
        vocab = tokenizer.vocab_size
        if not prompt or any(not 0 <= i < vocab for i in prompt):
            raise APIError(400, f"prompt: token ids must be in 0..{vocab - 1}", param="prompt")
        return list(prompt)
    from lmforge.inference import encode_prompt

    try:
        return encode_prompt(prompt, tokenizer, None)[0]
    except Exception as error:  # noqa: BLE001 - a tokenizer without a start token and an empty prompt
        raise APIError(400, f"prompt: {error}", param="prompt") from None

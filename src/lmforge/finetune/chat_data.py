"""Chat examples as training rows: the run's chat template renders them, and only the assistant's
tokens are trained on.

    {"prompt": "Hi", "completion": "Hello."}        (one turn: user = prompt, assistant = completion)
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, ...]}        (any number of turns)

With the default template (tokenizers/chat.py) the one-turn example renders as

    "User: Hi\\n\\nAssistant:" + " Hello.\\n\\n" + <|endoftext|>
     ---- no loss (-100) ----   ---------- trained ----------

Where the assistant's text lies is found by rendering prefixes, never by searching the text:
the span of message i is ``render(messages[:i+1])`` minus ``render(messages[:i],
add_generation_prompt=True)``, which works for any template whose earlier turns do not change
when later ones follow (every common one; a template that rewrites them is refused in one line).
Each piece of text is encoded on its own (``encode_chat``) and the ids are joined, so the
prompt a model is trained after is exactly the ids ``render_prompt`` + ``encode_chat`` give at
inference, and a token never straddles a prompt/response boundary. Each response ends with an
end token that is trained too: the template's own end-of-turn token when its span holds one
(``<|eot_id|>``, ``<|im_end|>``...), else end-of-text appended after it.

``build_row`` returns the input ids and labels in lmforge's convention: ``labels[t]`` is the
token after position t when that token is the assistant's, else -100 (the last token, which
has nothing to predict, is not in the input). A conversation longer than the context loses
tokens from its start (the oldest turns, or the start of a long prompt), as ``chat`` cuts its
history; one whose last response and end token cannot fit behind at least one prompt token is
refused (``TooLong``), and ``encode_rows`` skips such examples and counts them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import DataError
from lmforge.models.loss import IGNORE_INDEX
from lmforge.tokenizers.chat import (  # chat_segments and encode_segments live beside the template: serve uses them too
    ROLES,
    ChatTemplate,
    chat_segments,
    encode_segments,
)

Messages = list[dict[str, str]]
INSTRUCT = "builtin:stdlib-instruct"


class TooLong(DataError):
    """The last response (with its end token) does not fit in the context behind a prompt token."""


@dataclass
class ChatRow:
    """One example as model input: ``input_ids`` and aligned ``labels`` (-100: no loss), equal length."""

    input_ids: list[int]
    labels: list[int]

    @property
    def targets(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render_prompt(template: ChatTemplate, prompt: str) -> str:
    """The text a model continues to answer ``prompt`` as a one-turn chat (user = prompt)."""
    return template.render([{"role": "user", "content": prompt}], add_generation_prompt=True)


def as_messages(example: Mapping[str, object]) -> Messages:
    """An example's conversation: its "messages", or its prompt and completion as one turn."""
    if "messages" in example:
        return [dict(m) for m in example["messages"]]  # type: ignore[union-attr]
    return [
        {"role": "user", "content": str(example["prompt"])},
        {"role": "assistant", "content": str(example["completion"])},
    ]


def build_row(tokenizer, template: ChatTemplate, example: Mapping[str, object], context: int) -> ChatRow:
    """One example (prompt/completion or messages) as input ids and assistant-only labels, at most
    ``context`` tokens (cut from the left; ``TooLong`` when the last response cannot fit)."""
    ids, trained = encode_segments(tokenizer, chat_segments(template, as_messages(example)))
    if not any(trained):
        raise DataError("the example has no assistant response to train on")
    last_end = len(trained) - trained[::-1].index(True)
    ids, trained = ids[:last_end], trained[:last_end]  # turns after the last response teach nothing
    keep = context + 1  # the input, ids[:-1], then has ``context`` tokens
    if len(ids) > keep:
        last_start = last_end - 1
        while last_start > 0 and trained[last_start - 1]:
            last_start -= 1  # the first token of the last response
        if last_end - last_start + 1 > keep:
            raise TooLong(
                f"the response has {last_end - last_start} tokens with its end, which does not fit in "
                f"the model's context of {context} tokens behind its prompt"
            )
        ids, trained = ids[-keep:], trained[-keep:]
    labels = [nxt if mask else IGNORE_INDEX for nxt, mask in zip(ids[1:], trained[1:])]
    return ChatRow(ids[:-1], labels)


def encode_rows(
    tokenizer, template: ChatTemplate, examples: Sequence[Mapping[str, object]], context: int
) -> tuple[list[ChatRow], int]:
    """(rows, how many examples were skipped because their last response does not fit the context)."""
    rows, skipped = [], 0
    for example in examples:
        try:
            rows.append(build_row(tokenizer, template, example, context))
        except TooLong:
            skipped += 1
    return rows, skipped


def prompt_response_ids(
    tokenizer, template: ChatTemplate, prompt: str, response: str
) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids with its end token) exactly as SFT trains a one-turn example:
    the layout align/ rows use, so SFT, DPO, reward and PPO see the same tokens."""
    segments = chat_segments(template, as_messages({"prompt": prompt, "completion": response}))
    ids, trained = encode_segments(tokenizer, segments)
    start = trained.index(True)
    return ids[:start], ids[start:]


# --------------------------------------------------------------------------- reading examples


def read_chat_examples(source: str | Path, split: str = "train") -> list[dict]:
    """Every example of a .jsonl file (prompt/completion or messages) or of builtin:stdlib-instruct
    (``split`` "train" or "val"); one ``DataError`` naming the file and line of the first bad row."""
    text = str(source)
    if text.startswith("builtin:"):
        if text != INSTRUCT:
            raise DataError(f"{text}: unknown built-in data; SFT reads {INSTRUCT} or a .jsonl file")
        from lmforge.data.instruct import instruct_examples

        return [
            {"prompt": row["prompt"], "completion": row["completion"]} for row in instruct_examples(split)
        ]
    path = Path(source)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"{path} {what}; give a .jsonl file of chat examples or {INSTRUCT}")
    examples = [_checked(row, f"{path}:{number}") for number, row in _jsonl(path)]
    if not examples:
        raise DataError(
            f'{path} holds no examples; give one JSON object per line: {{"prompt": ..., "completion": ...}} '
            'or {"messages": [{"role": ..., "content": ...}, ...]}'
        )
    return examples


def _jsonl(path: Path) -> Iterator[tuple[int, object]]:
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not a JSON object ({error.msg}); a .jsonl file holds one object per line"
                ) from None


def _checked(row: object, at: str) -> dict:
    """The row as {"prompt", "completion"} or {"messages"}, or one line saying what is wrong."""
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        messages = row["messages"]
        for index, message in enumerate(messages, start=1):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise DataError(f'{at}: message {index} is not {{"role": ..., "content": "text"}}')
            if message.get("role") not in ROLES:
                raise DataError(
                    f"{at}: message {index} has role {message.get('role')!r}; use one of {', '.join(ROLES)}"
                )
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{at}: the messages hold no assistant turn, so there is nothing to train on")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if isinstance(row, dict) and "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise DataError(f'{at}: "prompt" and "completion" must both be text')
        return {"prompt": row["prompt"], "completion": row["completion"]}
    present = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
    raise DataError(
        f'{at}: a row needs "prompt" and "completion", or "messages" (found: {present or "nothing"})'
    )

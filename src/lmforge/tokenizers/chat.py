"""Chat templates: turn a list of ``messages`` into the one prompt text a causal model continues.

    template = ChatTemplate.for_tokenizer("runs/chat/tokenizer", tokenizer)
    template.render([{"role": "user", "content": "Hi"}])
        # a run with RUN/tokenizer/chat_template.jinja (Hugging Face's convention, e.g. Llama 3's):
        #   "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>
        #    <|start_header_id|>assistant<|end_header_id|>\\n\\n"
        # a run without one, DEFAULT_TEMPLATE:
        #   "User: Hi\\n\\nAssistant:"

A template is Jinja2 rendered the way ``transformers``' ``apply_chat_template`` renders it
(``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``,
``strftime_now``, a ``tojson`` that keeps non-ASCII text, and the variables ``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token`` and the other special tokens), so a
template converted from a Hugging Face checkpoint gives the same text here as there. Templates
come with downloaded checkpoints: they run in Jinja2's ``ImmutableSandboxedEnvironment``, which
refuses attribute access to Python internals (no ``__class__.__mro__`` escape) and mutation of
the values passed in.

The default template is for base models, which never saw a chat format: role names as plain
words, a blank line between turns, and ``Assistant:`` to continue from. It uses no special
tokens, so it works with any tokenizer, character-level ones included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from lmforge.errors import CheckpointError, DataError, UserInputError

TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")
# Tokens chat templates end an assistant turn with (Llama 3, ChatML/Qwen2, Phi-3, Llama 3.1 tool
# calls, Gemma): a chat model emits one where a base model would emit end-of-text.
END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|eom_id|>", "<end_of_turn>")


class TemplateError(UserInputError):
    """The template refused the messages (its ``raise_exception``, or an error while rendering)."""


class ChatTemplate:
    """A compiled chat template with the tokenizer's special tokens bound to it."""

    def __init__(self, source: str | None = None, special_tokens: Mapping[str, str] | None = None) -> None:
        """source: the Jinja2 text (None: DEFAULT_TEMPLATE); special_tokens: name -> token string
        (``bos``, ``eos``, ...), passed to the template as ``bos_token``, ``eos_token``, ..."""
        from jinja2 import TemplateSyntaxError

        self.source = source if source is not None else DEFAULT_TEMPLATE
        self.is_default = source is None
        self.variables = {f"{name}_token": token for name, token in (special_tokens or {}).items()}
        try:
            self._template = _environment().from_string(self.source)
        except TemplateSyntaxError as error:
            raise CheckpointError(
                f"the chat template does not compile: {error} (line {error.lineno})"
            ) from None

    @classmethod
    def for_tokenizer(cls, tokenizer_dir: str | Path, tokenizer: object | None = None) -> ChatTemplate:
        """The template stored beside a run's tokenizer, else the default one."""
        path = Path(tokenizer_dir) / TEMPLATE_FILE
        source = path.read_text(encoding="utf-8") if path.is_file() else None
        return cls(source, getattr(tokenizer, "special_tokens", None))

    def render(self, messages: Sequence[Mapping[str, object]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` ({"role", "content"} each), ready to encode."""
        from jinja2 import TemplateError as JinjaError

        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                **self.variables,
            )
        except TemplateError:
            raise
        except JinjaError as error:  # a SecurityError from the sandbox is one too
            raise TemplateError(f"the chat template could not render these messages: {error}") from None


def stop_token_ids(tokenizer) -> tuple[int, ...]:
    """Where an answer ends: end-of-text, and the end-of-turn tokens of chat formats that this
    vocabulary holds (a converted Llama 3 Instruct ends its turns with <|eot_id|>, not end-of-text)."""
    ids = [tokenizer.document_separator_id]
    ids += [tokenizer.token_to_id(token) for token in END_OF_TURN]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def encode_chat(tokenizer, text: str) -> list[int]:
    """The ids of a rendered chat. The template already wrote the special tokens it wants (Llama 3's
    starts with ``bos_token``), so a Hugging Face tokenizer's post-processor must not add its own,
    or the prompt would begin with two; transformers encodes with ``add_special_tokens=False`` too."""
    backend = getattr(tokenizer, "backend", None)  # tokenizers.Tokenizer behind the subword kinds
    if backend is not None and hasattr(backend, "encode"):
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(text)


def chat_segments(
    template: ChatTemplate, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False
) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is it an assistant response) pieces, in order; joined
    they are ``template.render(messages, add_generation_prompt=...)``."""
    segments: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template.render(messages[:index], add_generation_prompt=True)
        after = template.render(messages[: index + 1], add_generation_prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            raise DataError(
                "the chat template renders a turn differently once later turns follow (message "
                f"{index + 1}, {message['role']}), so the assistant's text cannot be told apart; "
                "SFT needs a template whose earlier turns stay as they are"
            )
        segments += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    full = template.render(messages, add_generation_prompt=add_generation_prompt)
    if not full.startswith(done):
        raise DataError("the chat template renders the whole conversation differently from its turns")
    segments.append((full[len(done) :], False))
    return [(text, trained) for text, trained in segments if text]


def end_token_ids(tokenizer) -> tuple[int, ...]:
    """The ids that may end a response: end-of-text and the end-of-turn tokens the vocabulary has."""
    ends = stop_token_ids(tokenizer)
    if not ends:
        raise DataError(
            "this tokenizer has no end-of-text token, so a response cannot be taught to end; "
            "SFT needs a GPT-style tokenizer (every lmforge char, word and BPE tokenizer has one)"
        )
    return ends


def encode_segments(tokenizer, segments: Sequence[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """(ids, trained mask) of the pieces; a response whose ids hold no end token gets end-of-text."""
    ends = end_token_ids(tokenizer)
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_response in segments:
        piece = encode_chat(tokenizer, text)
        if is_response and not any(i in ends for i in piece):
            piece = [*piece, tokenizer.document_separator_id]
        ids += piece
        trained += [is_response] * len(piece)
    return ids, trained


def encode_conversation(
    tokenizer,
    template: ChatTemplate,
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = True,
) -> list[int]:
    """The ids a model continues for ``messages``, exactly as SFT encoded such a conversation
    (each piece on its own, an end token after each earlier answer), so a fine-tuned model sees at
    inference what it was trained on. A template that rewrites earlier turns (SFT refuses it) is
    encoded as one rendered text instead."""
    try:
        return encode_segments(tokenizer, chat_segments(template, messages, add_generation_prompt))[0]
    except DataError:
        return encode_chat(tokenizer, template.render(messages, add_generation_prompt=add_generation_prompt))


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the chat template refused these messages: {message}")


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None, **kwargs: object) -> str:
    # transformers' override: Jinja's own tojson escapes HTML characters, which templates don't want
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _generation_extension():
    """``{% generation %}...{% endgeneration %}``, Hugging Face's marker around what the assistant
    writes (for ``return_assistant_tokens_mask``): rendered as its body. lmforge finds the assistant's
    text by rendering prefixes of the conversation (finetune/chat_data.py), so the marker only has to
    compile, or a template downloaded with it would be refused."""
    from jinja2.ext import Extension

    class GenerationMarker(Extension):
        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)  # the "generation" name
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    return GenerationMarker


def _environment():
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _generation_extension()]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env

"""Chat templates render as transformers' ``apply_chat_template`` renders them, inside the sandbox."""

from __future__ import annotations

import pytest

pytest.importorskip("jinja2")

from lmforge.errors import CheckpointError  # noqa: E402
from lmforge.tokenizers.chat import DEFAULT_TEMPLATE, TEMPLATE_FILE, ChatTemplate, TemplateError  # noqa: E402

# The templates as the checkpoints ship them (tokenizer_config.json's chat_template).
LLAMA_3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (  # Qwen2's
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# Block tags on lines of their own, indented: what trim_blocks and lstrip_blocks exist for; tojson
# of non-ASCII text; loop controls.
MULTILINE = """{% for message in messages %}
    {% if message.role == 'tool' %}{% continue %}{% endif %}
    <{{ message.role }}>{{ message.content | tojson }}
{% endfor %}
{% if add_generation_prompt %}
<assistant>
{% endif %}"""

CONVERSATION = [
    {"role": "system", "content": "Réponds en une phrase."},
    {"role": "user", "content": "  What is a KV cache?  "},
    {"role": "assistant", "content": "Keys and values kept between steps."},
    {"role": "user", "content": "Why?"},
]
SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>"}


def transformers_render(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<unk>", *SPECIAL.values()])}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
    )
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


@pytest.mark.parametrize(
    "template",
    [LLAMA_3, CHATML, MULTILINE, DEFAULT_TEMPLATE],
    ids=["llama3", "chatml", "multiline", "default"],
)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_renders_as_transformers_apply_chat_template(template, add_generation_prompt):
    messages = CONVERSATION + [{"role": "tool", "content": "42"}]
    ours = ChatTemplate(template, SPECIAL).render(messages, add_generation_prompt=add_generation_prompt)
    assert ours == transformers_render(template, messages, add_generation_prompt)


def test_mistral_template_and_its_raise_exception():
    messages = [m for m in CONVERSATION if m["role"] != "system"]
    assert ChatTemplate(MISTRAL, SPECIAL).render(messages) == transformers_render(MISTRAL, messages)
    with pytest.raises(TemplateError, match="roles must alternate"):
        ChatTemplate(MISTRAL, SPECIAL).render(CONVERSATION)
    with pytest.raises(Exception, match="roles must alternate"):  # transformers refuses the same
        transformers_render(MISTRAL, CONVERSATION)


def test_default_template_is_plain_text():
    rendered = ChatTemplate().render(CONVERSATION[:2])
    assert rendered == "System: Réponds en une phrase.\n\nUser:   What is a KV cache?  \n\nAssistant:"
    assert ChatTemplate().is_default


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{% set _ = messages.append({'role': 'user'}) %}",
        "{{ raise_exception.__globals__['os'] }}",
    ],
)
def test_a_template_cannot_reach_python_internals(attack):
    with pytest.raises(TemplateError):
        ChatTemplate(attack).render(CONVERSATION)


def test_a_template_that_does_not_compile_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="does not compile"):
        ChatTemplate("{% for message in messages %}")


def test_for_tokenizer_reads_the_runs_template(tmp_path):
    assert ChatTemplate.for_tokenizer(tmp_path).is_default
    (tmp_path / TEMPLATE_FILE).write_text(CHATML, encoding="utf-8")

    class Tok:
        special_tokens = SPECIAL

    template = ChatTemplate.for_tokenizer(tmp_path, Tok())
    assert not template.is_default
    assert template.render(CONVERSATION) == transformers_render(CHATML, CONVERSATION)

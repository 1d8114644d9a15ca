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


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_generation_markers_compile_and_render_as_transformers(add_generation_prompt):
    marked = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
        "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    ours = ChatTemplate(marked, SPECIAL).render(CONVERSATION, add_generation_prompt=add_generation_prompt)
    assert ours == transformers_render(marked, CONVERSATION, add_generation_prompt)
    assert "<|im_start|>assistant\n" in ours and "generation" not in ours


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


def test_encode_chat_adds_no_second_bos_as_transformers():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from lmforge.tokenizers.chat import encode_chat
    from lmforge.tokenizers.hf import HFTokenizer

    words = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "Hi", "Why?", " "]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Split(" ", behavior="isolated")
    backend.add_special_tokens(["<s>", "</s>", "<pad>"])
    backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # as Llama's
    ours = HFTokenizer(backend, {"bos": "<s>", "eos": "</s>", "pad": "<pad>"})
    messages = [{"role": "user", "content": "Hi"}]
    text = ChatTemplate(MISTRAL, SPECIAL).render(messages)
    assert text == "<s>[INST] Hi [/INST]"
    reference = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    expected = reference.apply_chat_template(
        messages, chat_template=MISTRAL, tokenize=True, return_dict=False
    )
    assert encode_chat(ours, text) == list(expected)
    assert encode_chat(ours, text).count(1) == 1 and ours.encode(text).count(1) == 2  # the post-processor's


def test_stop_token_ids_are_end_of_text_and_the_end_of_turn_tokens_the_vocabulary_holds():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from lmforge.tokenizers import train_tokenizer
    from lmforge.tokenizers.chat import stop_token_ids
    from lmforge.tokenizers.hf import HFTokenizer

    char = train_tokenizer("char", "First Citizen: speak", None)
    assert stop_token_ids(char) == (char.document_separator_id,)
    words = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "Hi"]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.add_special_tokens(words[1:4])
    llama3 = HFTokenizer(backend, {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>"})
    assert stop_token_ids(llama3) == (2, 3)

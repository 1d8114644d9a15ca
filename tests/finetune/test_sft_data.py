"""SFT rows: the rendered pieces join into what transformers' ``apply_chat_template`` renders, the
trained tokens are exactly the ones transformers marks as the assistant's, the loss reads the
assistant's positions only, and the examples' errors name their line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import DataError
from lmforge.finetune.chat_data import (
    TooLong,
    build_row,
    chat_segments,
    encode_rows,
    encode_segments,
    prompt_response_ids,
    read_chat_examples,
    render_prompt,
)
from lmforge.models.loss import IGNORE_INDEX
from lmforge.tokenizers import train_tokenizer
from lmforge.tokenizers.chat import DEFAULT_TEMPLATE, ChatTemplate
from lmforge.train.objectives import language_model_loss
from tests.tokenizers.test_chat import CHATML, LLAMA_3, SPECIAL, transformers_render

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a KV cache?"},
    {"role": "assistant", "content": "Keys and values kept between steps."},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "So a step reads old tokens once."},
]
# ChatML with Hugging Face's generation markers around what the assistant writes
CHATML_GENERATION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>\n' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;?!'\n_-|<>"


def char_tokenizer():
    return train_tokenizer("char", CHARS, None)


def chatml_tokenizers():
    """(lmforge's tokenizer, transformers' PreTrainedTokenizerFast) over one backend: one id per
    character plus the ChatML specials, so a text tokenizes the same whole or in pieces."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    from lmforge.tokenizers.hf import HFTokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(CHARS)))}
    backend = Tokenizer(BPE(vocab=vocab, merges=[]))
    backend.add_special_tokens(specials)
    ours = HFTokenizer(backend, {"bos": "<|endoftext|>", "eos": "<|endoftext|>"})
    reference = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    return ours, reference


@pytest.mark.parametrize("template", [CHATML, LLAMA_3, DEFAULT_TEMPLATE], ids=["chatml", "llama3", "default"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_pieces_join_into_transformers_rendering(template, add_generation_prompt):
    for messages in (CONVERSATION, CONVERSATION[1:3], CONVERSATION[:4]):
        pieces = chat_segments(ChatTemplate(template, SPECIAL), messages, add_generation_prompt)
        expected = transformers_render(template, messages, add_generation_prompt)
        assert "".join(text for text, _ in pieces) == expected
        responses = [text for text, trained in pieces if trained]
        assert len(responses) == sum(m["role"] == "assistant" for m in messages)
        for text, message in zip(responses, [m for m in messages if m["role"] == "assistant"]):
            assert message["content"].strip() in text


def test_trained_tokens_are_transformers_assistant_mask():
    ours, reference = chatml_tokenizers()
    template = ChatTemplate(CHATML_GENERATION, {"eos": "<|endoftext|>"})  # the markers render as their body
    for messages in (CONVERSATION, CONVERSATION[1:3]):
        expected = reference.apply_chat_template(
            messages,
            chat_template=CHATML_GENERATION,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, trained = encode_segments(ours, chat_segments(template, messages))
        assert ids == list(expected["input_ids"])  # <|im_end|> ends each answer: no end-of-text added
        assert [int(t) for t in trained] == list(expected["assistant_masks"])


def test_default_template_row_by_hand():
    tokenizer = char_tokenizer()
    row = build_row(tokenizer, ChatTemplate(), {"prompt": "Hi", "completion": "Hello."}, context=64)
    eos = tokenizer.document_separator_id
    text = "User: Hi\n\nAssistant: Hello.\n\n"
    ids = tokenizer.encode(text) + [eos]
    assert row.input_ids == ids[:-1]
    answer_from = len("User: Hi\n\nAssistant:")  # the space after the colon is the answer's first token
    assert row.labels == [IGNORE_INDEX] * (answer_from - 1) + ids[answer_from:]
    assert tokenizer.decode([t for t in row.labels if t != IGNORE_INDEX]) == " Hello.\n\n<|endoftext|>"
    prompt, response = prompt_response_ids(tokenizer, ChatTemplate(), "Hi", "Hello.")
    assert prompt == tokenizer.encode(render_prompt(ChatTemplate(), "Hi")) and prompt + response == ids


def test_loss_is_cross_entropy_over_the_assistant_positions_only():
    tokenizer = char_tokenizer()
    template = ChatTemplate()
    row = build_row(tokenizer, template, {"messages": CONVERSATION}, context=512)
    full = template.render(CONVERSATION, add_generation_prompt=False)
    # the assistant's characters, found in the text by hand: each answer's " content\n\n" span
    answer_chars = set()
    for message in CONVERSATION:
        if message["role"] == "assistant":
            start = full.index("Assistant: " + message["content"]) + len("Assistant:")
            answer_chars |= set(range(start, start + len(message["content"]) + 3))
    ids = tokenizer.encode(full)  # one id per character, plus an end-of-text after each answer below
    torch.manual_seed(0)
    logits = torch.randn(1, len(row.input_ids), tokenizer.vocab_size)

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, labels, reduction):
            from lmforge.models.loss import language_model_loss as ce

            return type("Out", (), {"loss": ce(self.logits, labels, reduction)})

    batch = {"input_ids": torch.tensor([row.input_ids]), "labels": torch.tensor([row.labels])}
    loss, count = language_model_loss(Fixed(logits), batch)
    # by hand: walk the characters, an end-of-text after each answer; sum -log p(next) where the
    # next token is an answer character or that end-of-text
    sequence, trained = [], []
    for position, token in enumerate(ids):
        sequence.append(token)
        trained.append(position in answer_chars)
        if position in answer_chars and position + 1 not in answer_chars:
            sequence.append(tokenizer.document_separator_id)
            trained.append(True)
    assert sequence[:-1] == row.input_ids
    logp = F.log_softmax(logits[0].double(), dim=-1)
    expected = -sum(logp[t, sequence[t + 1]] for t in range(len(sequence) - 1) if trained[t + 1])
    assert count == sum(trained) and loss.item() == pytest.approx(expected.item(), rel=1e-6)

    untrained = [t for t in range(len(row.labels)) if row.labels[t] == IGNORE_INDEX]
    perturbed = logits.clone()
    perturbed[0, untrained] += 10 * torch.randn(len(untrained), tokenizer.vocab_size)
    assert language_model_loss(Fixed(perturbed), batch)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    one = [t for t in range(len(row.labels)) if row.labels[t] != IGNORE_INDEX][3]
    perturbed[0, one] += 10 * torch.randn(tokenizer.vocab_size)
    assert language_model_loss(Fixed(perturbed), batch)[0].item() != pytest.approx(loss.item(), rel=1e-3)


def test_too_long_cuts_the_prompt_from_the_left_or_skips():
    tokenizer = char_tokenizer()
    template = ChatTemplate()
    example = {"prompt": "x" * 100, "completion": "Short."}
    row = build_row(tokenizer, template, example, context=30)
    assert len(row.input_ids) == 30
    answer = [t for t in row.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == " Short.\n\n<|endoftext|>"  # the whole answer kept
    assert tokenizer.decode(row.input_ids).startswith("x")  # the prompt's start went
    long_answer = {"prompt": "Hi", "completion": "y" * 40}
    with pytest.raises(TooLong):
        build_row(tokenizer, template, long_answer, context=30)
    rows, skipped = encode_rows(tokenizer, template, [example, long_answer, example], context=30)
    assert len(rows) == 2 and skipped == 1


def write_lines(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ['{"prompt": "a", "completion": "b"}', '{"prompt": "a"}'],
            ':2: a row needs "prompt" and "completion"',
        ),
        (["{oops"], ":1: not a JSON object"),
        (['{"messages": [{"role": "user", "content": "a"}]}'], ":1: the messages hold no assistant turn"),
        (['{"messages": [{"role": "bot", "content": "a"}]}'], ":1: message 1 has role 'bot'"),
        (['{"prompt": 1, "completion": "b"}'], "must both be text"),
        ([""], "holds no examples"),
    ],
)
def test_bad_example_files_name_the_line(lines, message, tmp_path):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_chat_examples(write_lines(tmp_path / "bad.jsonl", lines))


def test_sources(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        read_chat_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown built-in data"):
        read_chat_examples("builtin:stdlib-docs")
    rows = [{"messages": CONVERSATION, "id": 3}, {"prompt": "a", "completion": "b", "extra": 1}]
    path = write_lines(tmp_path / "ok.jsonl", [json.dumps(r) for r in rows])
    assert read_chat_examples(path) == [{"messages": CONVERSATION}, {"prompt": "a", "completion": "b"}]
    from lmforge.data import instruct

    triples = [("json", "json.dumps(obj)", "Serialize obj."), ("csv", "csv.reader(f)", "Return a reader.")]
    monkeypatch.setattr(instruct, "cached_triples", lambda name, build: triples)  # not the whole stdlib
    monkeypatch.setattr(instruct, "split_of", lambda module: "val" if module == "csv" else "train")
    assert read_chat_examples(instruct.INSTRUCT, "val") == [
        {"prompt": "Explain what `csv.reader(f)` does.", "completion": "Return a reader."}
    ]

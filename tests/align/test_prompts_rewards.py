"""Prompt sources and ``--reward`` specs: what each form gives, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from lmforge.align.prompts import Prompt, encode_prompts, load_prompts
from lmforge.align.rewards import resolve_reward, score
from lmforge.errors import DataError, UserInputError
from lmforge.tokenizers.chat import ChatTemplate


def test_jsonl_prompts_and_messages_up_to_the_last_user_turn(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "What is 2+2?"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "7"},
            ]
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    prompts = load_prompts(str(path))
    assert [p.text for p in prompts] == ["What is 2+2?", "Name a prime."]
    template = ChatTemplate()  # the default: "Role: content" turns, then "Assistant:"
    assert prompts[0].render(template) == "User: What is 2+2?\n\nAssistant:"
    assert prompts[1].render(template) == (
        "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Name a prime.\n\nAssistant:"
    )


def test_builtin_arith_prompts_have_splits():
    train, val = load_prompts("builtin:arith", "train"), load_prompts("builtin:arith", "val")
    assert train and val and train[0].text.endswith("=")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("not json\n", "not a JSON object"),
        ('{"text": "x"}\n', "needs a 'prompt' string or a 'messages' list"),
        ('{"messages": [{"role": "system", "content": "x"}]}\n', "no user turn"),
        ("\n", "holds no prompts"),
    ],
)
def test_bad_prompt_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_prompts(str(path))


def test_a_prompt_past_the_context_is_refused_or_left_out():
    from lmforge.tokenizers import train_tokenizer

    tokenizer = train_tokenizer("char", "abcdef User:Assistn\n", None)
    long, short = Prompt("abcdef" * 3), Prompt("ab")
    with pytest.raises(DataError, match="past the model's context of 30 tokens"):
        encode_prompts([short, long], ChatTemplate(), tokenizer, context=30, max_new_tokens=8)
    kept, ids = encode_prompts([short, long], ChatTemplate(), tokenizer, 30, 8, drop_long=True)
    assert kept == [short] and ids == [tokenizer.encode("User: ab\n\nAssistant:")]
    with pytest.raises(DataError, match="no prompt fits"):
        encode_prompts([long], ChatTemplate(), tokenizer, 30, 8, drop_long=True)


def test_builtin_arith_reward_checks_the_sum():
    reward = resolve_reward("builtin:arith")
    assert score(reward, ["12+35=", "12+35="], ["47", "46 or so"]).tolist() == [1.0, 0.0]


def test_module_and_file_rewards(tmp_path, monkeypatch):
    source = "def length(prompts, completions):\n    return [len(c) for c in completions]\nvalue = 3\n"
    (tmp_path / "my_rewards_mod.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert score(resolve_reward("my_rewards_mod:length"), ["p", "p"], ["ab", ""]).tolist() == [2.0, 0.0]
    assert score(resolve_reward(f"{tmp_path / 'my_rewards_mod.py'}:length"), ["p"], ["abc"]).tolist() == [3.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("my_rewards_mod:missing", "has no function 'missing'"),
        ("my_rewards_mod:value", "it is not callable"),
        ("nofile.py:f", "does not exist"),
        ("just-a-word", "is not a reward"),
        ("builtin:nope", "unknown built-in reward"),
    ],
)
def test_bad_reward_specs_are_one_line(tmp_path, monkeypatch, spec, message):
    (tmp_path / "my_rewards_mod.py").write_text("value = 3\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match=message):
        resolve_reward(spec)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ([1.0], "returned 1 values for 2 completions"),
        (["good", "bad"], "rewards must be numbers"),
        ([float("nan"), 1.0], "finite"),
        (3.0, "not a list of numbers"),
    ],
)
def test_a_reward_function_returning_the_wrong_thing_is_one_line(returned, message):
    with pytest.raises(UserInputError, match=message):
        score(lambda prompts, completions: returned, ["p", "q"], ["a", "b"])

"""``lmforge chat``: piped turns answered as ``generate`` answers the rendered prompt, /system,
/reset and /quit, the history cut from its oldest turns to fit the context, exit 0 at end of input."""

from __future__ import annotations

import io

import pytest

from lmforge.cli import main
from lmforge.finetune.chat_data import render_prompt
from lmforge.finetune.chat_session import ChatSession
from lmforge.generate import GenerationConfig, generate
from lmforge.run import Run
from lmforge.tokenizers.chat import ChatTemplate
from tests.seq2seq_run import one_line_error
from tests.tiny_run import make_bert_run, make_run

GREEDY = ["--strategy", "greedy", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "run"
    make_run(path, block_size=64, n_embd=32)
    return path


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "wide"
    make_run(path, block_size=256, n_embd=32)
    return path


def chat(run_dir, lines: str, monkeypatch, capsys, *flags: str) -> tuple[int, list[str], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code = main(["chat", "--checkpoint", str(run_dir), *GREEDY, *flags])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def greedy_answer(run_dir, messages: list[dict]) -> str:
    """What generate continues the rendered conversation with: the answer chat should print."""
    run = Run(run_dir)
    model, tokenizer = run.load_model(), run.load_tokenizer()
    ids = tokenizer.encode(ChatTemplate().render(messages, add_generation_prompt=True))
    config = GenerationConfig(
        strategy="greedy", max_new_tokens=12, eos_id=tokenizer.document_separator_id, stop=("\nUser:",)
    )
    return generate(model, [ids], config, tokenizer=tokenizer)[0][0].text.strip()


def test_piped_turns_system_reset_and_end_of_input(run_dir, monkeypatch, capsys):
    code, out, err = chat(run_dir, "Speak\n/system Be brief\nDie?\n/reset\nSpeak\n", monkeypatch, capsys)
    assert code == 0 and len(out) == 3, (out, err)
    speak = {"role": "user", "content": "Speak"}
    assert out[0] == greedy_answer(run_dir, [speak])
    assert render_prompt(ChatTemplate(), "Speak") == ChatTemplate().render([speak])
    # after /reset only the system message is left before the new turn
    assert out[2] == greedy_answer(run_dir, [{"role": "system", "content": "Be brief"}, speak])
    assert "(system message set)" in err and "(conversation reset)" in err


def test_quit_stops_reading(run_dir, monkeypatch, capsys):
    code, out, _ = chat(run_dir, "Speak\n/quit\nDie?\n", monkeypatch, capsys)
    assert code == 0 and len(out) == 1


def session(run_dir, max_new_tokens: int = 8) -> ChatSession:
    run = Run(run_dir)
    config = GenerationConfig(strategy="greedy", max_new_tokens=max_new_tokens)
    return ChatSession(run.load_model(), run.load_tokenizer(), ChatTemplate(), config, system="Be short")


def test_history_renders_as_the_template_with_an_end_after_each_answer(wide_run):
    chat_session = session(wide_run)
    first = chat_session.reply("Speak")
    chat_session.reply("Die?")
    tokenizer = chat_session.tokenizer
    assert chat_session.messages[:3] == [
        {"role": "system", "content": "Be short"},
        {"role": "user", "content": "Speak"},
        {"role": "assistant", "content": first.text},
    ]
    assert len(chat_session.messages) == 5
    ids = chat_session.encode(chat_session.messages[:4])
    before, after = (
        ChatTemplate().render(chat_session.messages[:2]) + " " + first.text + "\n\n",
        "User: Die?\n\nAssistant:",
    )
    assert ids == tokenizer.encode(before) + [tokenizer.document_separator_id] + tokenizer.encode(after)


def test_history_is_cut_from_the_oldest_turns_and_keeps_the_system_message(run_dir):
    chat_session = session(run_dir)
    budget = 64 - 8  # the context less the room kept for the answer
    dropped = 0
    for number in range(6):
        reply = chat_session.reply(f"Hear me {number}")
        dropped += reply.dropped
        assert reply.prompt_tokens <= budget
    assert dropped > 0 and chat_session.messages[0] == {"role": "system", "content": "Be short"}
    assert chat_session.messages[1]["role"] == "user"  # a turn goes with the answer to it
    users = [m["content"] for m in chat_session.messages if m["role"] == "user"]
    assert users == [f"Hear me {n}" for n in range(6 - len(users), 6)]  # the newest turns stayed
    last_prompt = chat_session.encode(chat_session.messages[:-1])
    assert len(last_prompt) <= budget
    head = chat_session.tokenizer.encode("System: Be short\n\nUser: Hear me")
    assert last_prompt[: len(head)] == head


def test_a_message_alone_longer_than_the_context_keeps_its_end(run_dir, monkeypatch, capsys):
    code, out, err = chat(run_dir, "Speak " * 30 + "\n", monkeypatch, capsys)
    assert code == 0 and len(out) == 1 and "history cut to fit the context of 64 tokens" in err


def test_a_masked_model_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    code = main(["chat", "--checkpoint", str(make_bert_run(tmp_path / "bert").path)])
    captured = capsys.readouterr()
    assert "lmforge chat" in one_line_error(code, captured.out, captured.err)


def test_sampling_is_seeded(run_dir, monkeypatch, capsys):
    flags = ["--strategy", "sample", "--temperature", "1.5", "--seed", "3"]
    runs = [chat(run_dir, "Speak\n", monkeypatch, capsys, *flags)[1] for _ in range(2)]
    assert runs[0] == runs[1]

"""SFT: packed rows score every example as it scores alone, a tiny model learns its examples'
answers, ``finetune sft`` writes a plain causal run with its chat template, and bad input is one
line (exit 2)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.finetune.chat_data import ChatRow, encode_rows
from lmforge.finetune.settings import SFTConfig
from lmforge.finetune.sft import plan_sft, run_sft
from lmforge.finetune.sft_batches import assistant_loss, collate, pack_groups
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.loss import IGNORE_INDEX
from lmforge.run import Run
from lmforge.tokenizers.chat import DEFAULT_TEMPLATE, TEMPLATE_FILE, ChatTemplate
from tests.seq2seq_run import one_line_error
from tests.tiny_run import make_bert_run, make_run

EXAMPLES = [
    {"prompt": "Speak", "completion": "All speak."},
    {"prompt": "Hear me", "completion": "We hear."},
    {"prompt": "Die?", "completion": "Resolved."},
    {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Citizen?"},
                  {"role": "assistant", "content": "First."}, {"role": "user", "content": "All?"},
                  {"role": "assistant", "content": "Speak, speak."}]},
]  # fmt: skip


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "base"
    make_run(path, block_size=64, n_embd=32)
    return path


def test_pack_groups_best_fit_by_hand():
    rows = [ChatRow([1] * n, [IGNORE_INDEX] * n) for n in (3, 2, 1, 4)]
    # longest first: 4 opens block 0, 3 opens block 1 (4 + 3 > 6), 2 fills block 0, 1 goes to block 1
    assert pack_groups(rows, 6) == [[3, 1], [0, 2]]


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_packed_batch_gives_the_summed_loss_of_each_example_alone(pos_encoding):
    from lmforge.tokenizers import train_tokenizer
    from tests.tiny_run import TEXT

    tokenizer = train_tokenizer("char", TEXT + "?,", None)
    rows, _ = encode_rows(tokenizer, ChatTemplate(), EXAMPLES, context=96)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32,
                          pos_encoding=pos_encoding)).eval()  # fmt: skip
    groups = pack_groups(rows, 96)
    assert len(groups) < len(rows)  # something was packed
    packed = collate(rows, groups, pad_id=0, packed=True)
    with torch.no_grad():
        together = model(**packed, reduction="sum").loss.item()
        alone = sum(assistant_loss(model, [row], pad_id=0, batch_size=1)[0] for row in rows)
    assert together == pytest.approx(alone, rel=1e-5)
    assert int((packed["labels"] != IGNORE_INDEX).sum()) == sum(row.targets for row in rows)
    rounded = collate(rows, groups, pad_id=0, packed=True, context=96)  # width in steps of 16
    assert (
        rounded["input_ids"].shape[1] % 16 == 0
        and rounded["input_ids"].shape[1] >= packed["input_ids"].shape[1]
    )
    with torch.no_grad():
        assert model(**rounded, reduction="sum").loss.item() == pytest.approx(together, rel=1e-5)


def test_sft_learns_its_examples_and_saves_a_plain_run(base_run, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", EXAMPLES)
    settings = SFTConfig(max_steps=40, lr=3e-3, warmup_steps=2, eval_every=20, batch_size=4, device="cpu")
    job = plan_sft(checkpoint=base_run, data=data, val=data, out=tmp_path / "sft", settings=settings)
    pad = job.tokenizer.document_separator_id
    before = assistant_loss(job.net, job.train_rows, pad, 8)
    summary = run_sft(job, progress=False)
    run = Run(tmp_path / "sft")
    after = assistant_loss(run.load_model("best"), job.train_rows, pad, 8)
    assert before[1] == after[1] and after[0] < 0.3 * before[0]
    assert summary["val_loss"] == pytest.approx(after[0] / after[1], rel=1e-4)
    assert (run.tokenizer_dir / TEMPLATE_FILE).read_text(encoding="utf-8") == DEFAULT_TEMPLATE
    assert run.read_config()["task"]["kind"] == "sft" and run.metrics_path.exists() and run.plot_path.exists()


def test_cli_with_lora_and_without_packing_then_generate(base_run, tmp_path, capsys):
    data = write_jsonl(tmp_path / "chats.jsonl", EXAMPLES * 3)
    out = tmp_path / "lora"
    argv = ["finetune", "sft", "--checkpoint", str(base_run), "--data", data, "--out", str(out),
            "--max-steps", "3", "--lora-rank", "2", "--no-packing", "--json"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trainable_parameters"] < summary["parameters"] and summary["rows"] == summary["examples"]
    assert summary["val_examples"] == 1  # a tenth of 12 examples held out
    assert "lora" not in json.dumps(Run(out).read_config()["model"])  # merged: a plain GPT
    assert main(["generate", "--checkpoint", str(out), "--prompt", "User: Hi", "--max-new-tokens", "4"]) == 0


@pytest.mark.parametrize(
    "rows, message",
    [
        (None, "does not exist"),
        ([], "holds no examples"),
        ([{"text": "a"}], ':1: a row needs "prompt" and "completion"'),
        ([{"prompt": "x", "completion": "y" * 200}] * 3, "no example fits the model's context of 64"),
    ],
)
def test_bad_data_is_one_line(rows, message, base_run, tmp_path, capsys):
    data = str(tmp_path / "missing.jsonl") if rows is None else write_jsonl(tmp_path / "d.jsonl", rows)
    code = main(["finetune", "sft", "--checkpoint", str(base_run), "--data", data, "--out", str(tmp_path / "o"),
                 "--max-steps", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert message in one_line_error(code, captured.out, captured.err)
    assert not (tmp_path / "o").exists()


def test_a_bert_or_seq2seq_checkpoint_is_refused(tmp_path, capsys):
    from tests.seq2seq_run import make_seq2seq_run

    data = write_jsonl(tmp_path / "d.jsonl", EXAMPLES)
    for run, family in (
        (make_bert_run(tmp_path / "bert"), "bert"),
        (make_seq2seq_run(tmp_path / "s2s"), None),
    ):
        code = main(["finetune", "sft", "--checkpoint", str(run.path), "--data", data, "--out", str(tmp_path / "o"),
                     "--max-steps", "1"])  # fmt: skip
        captured = capsys.readouterr()
        line = one_line_error(code, captured.out, captured.err)
        assert "SFT trains causal Transformer decoders (gpt runs" in line
        assert family is None or f"holds a {family} model" in line


@pytest.mark.slow
def test_builtin_instructions_then_chat_answers_in_the_trained_format(tmp_path, monkeypatch, capsys):
    """The whole path on built-in data: pretrain a small char GPT on the standard library's docs,
    SFT it on builtin:stdlib-instruct, then chat. On held-out modules the assistant-token loss
    falls, the SFT model puts nearly all its probability on end-of-text right after a real
    answer (the base model almost none), and chat answers docstring-style, never running on into
    a next "User:" turn, exactly as the library session does."""
    from lmforge.data.instruct import INSTRUCT, instruct_examples
    from lmforge.finetune.chat_data import build_row
    from lmforge.finetune.chat_session import ChatSession
    from lmforge.generate import GenerationConfig

    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--data", "builtin:stdlib-docs", "--tokenizer", "char", "--out", "data"]) == 0
    base = ["pretrain", "--data", "data", "--out", "base", "--model", "gpt-nano", "--block-size", "256",
            "--n-layer", "2", "--n-embd", "96", "--max-steps", "300", "--eval-every", "300"]  # fmt: skip
    assert main(base) == 0
    sft = ["finetune", "sft", "--checkpoint", "base", "--data", INSTRUCT, "--out", "sft", "--max-steps", "200",
           "--lr", "2e-3", "--eval-every", "100", "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(sft) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["val_loss"] < 0.9 * summary["first_val_loss"]

    held_out = instruct_examples("val")[:40]
    ends = {}
    for name in ("base", "sft"):
        run = Run(name)
        model, tokenizer = run.load_model(), run.load_tokenizer()
        template = ChatTemplate.for_tokenizer(run.tokenizer_dir, tokenizer)
        probs = []
        for example in held_out:
            row = build_row(tokenizer, template, example, 256)
            with torch.no_grad():
                logits = model(torch.tensor([row.input_ids])).logits[0, -1]
            probs.append(torch.softmax(logits.float(), dim=-1)[row.labels[-1]].item())
        ends[name] = sum(probs) / len(probs)
    assert ends["sft"] > 0.9 and ends["base"] < 0.1, ends

    config = GenerationConfig(strategy="greedy", max_new_tokens=60)
    chat_session = ChatSession(model, tokenizer, template, config)
    replies = []
    for example in held_out[:6]:
        chat_session.reset()
        replies.append(chat_session.reply(example["prompt"]).text)
    assert all(text[:1].isupper() and "User:" not in text and "Assistant" not in text for text in replies)
    monkeypatch.setattr("sys.stdin", io.StringIO(held_out[0]["prompt"] + "\n"))
    assert main(["chat", "--checkpoint", "sft", "--strategy", "greedy", "--max-new-tokens", "60"]) == 0
    assert capsys.readouterr().out.strip() == replies[0]

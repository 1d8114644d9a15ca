"""``lmforge score`` end to end: JSON against the model's softmax by hand, the table, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.cli import main
from tests.tiny_run import make_run

TEXT = "First Citizen:\nSpeak, speak."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("score") / "run")


def score(capsys, *args) -> tuple[int, str, str]:
    code = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_matches_the_models_softmax_after_end_of_text(run, capsys):
    code, out, _ = score(capsys, "--checkpoint", run.path, "--text", "Speak", "--json")
    assert code == 0
    result = json.loads(out)
    tokenizer, model = run.load_tokenizer(), run.load_model()
    ids = tokenizer.encode("Speak")
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[tokenizer.eos_id, *ids]])).logits[0].double(), -1)
    by_hand = [probs[t, token].item() for t, token in enumerate(ids)]
    assert [t["id"] for t in result["tokens"]] == ids
    assert [t["token"] for t in result["tokens"]] == list("Speak")
    assert [t["prob"] for t in result["tokens"]] == pytest.approx(by_hand, rel=1e-5)
    assert result["logprob"] == pytest.approx(sum(math.log(p) for p in by_hand), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(-result["logprob"] / len(ids)), rel=1e-9)
    assert result["logprob_bits"] == pytest.approx(result["logprob"] / math.log(2))


def test_text_longer_than_the_context_scores_every_token(run, capsys):
    long_text = TEXT * 3  # 84 characters, the context is 16
    code, out, _ = score(capsys, "--checkpoint", run.path, "--text", long_text, "--json")
    assert code == 0
    assert "".join(t["token"] for t in json.loads(out)["tokens"]) == long_text
    code, out, _ = score(capsys, "--checkpoint", run.path, "--text", long_text)
    assert code == 0 and "longer than the 16-token context" in out


def test_human_output_is_a_table_then_the_totals(run, capsys):
    text = "All:\nSpeak."  # shorter than the context: no note about windows
    code, out, _ = score(capsys, "--checkpoint", run.path, "--text", text)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "token", "id", "prob", "log-prob"]
    assert lines[1].split()[:2] == ["1", '"A"'] and lines[5].split()[:2] == ["5", '"\\n"']
    assert len(lines) == 1 + len(text) + 1
    assert lines[-1].startswith(f'{len(text)} tokens after "<|endoftext|>": log-prob -')
    assert "nats" in lines[-1] and "bits" in lines[-1] and "perplexity" in lines[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "--text is empty"),
        (["--text", "hi", "--stride", "0"], "--stride must be positive; got 0"),
        (["--text", "hi", "--stride", "17"], "--stride must be between 1"),
    ],
)
def test_bad_input_is_one_line(run, capsys, args, message):
    code, out, err = score(capsys, "--checkpoint", run.path, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = score(capsys, "--checkpoint", tmp_path / "absent", "--text", "hi")
    assert code == 2 and "does not exist" in err

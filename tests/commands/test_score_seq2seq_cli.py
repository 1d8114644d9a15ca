"""``lmforge score --source --target`` on seq2seq runs: the per-token log-probabilities are the
model's teacher-forced loss on the pair (a training batch built independently, padding included);
greedy decoding's token at each step is the likeliest there; the table; bad input, one line each."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.cli import main
from tests.seq2seq_run import LETTERS, _batch, cached_run, one_line_error
from tests.tiny_run import make_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-attn", steps=300)


@pytest.fixture(scope="module")
def random_rnn(tmp_path_factory):
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-attn-additive", cell="lstm")


def score(capsys, *args) -> tuple[int, str, str]:
    code = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def score_json(capsys, run, source: str, target: str) -> dict:
    code, out, err = score(
        capsys, "--checkpoint", run.path, "--source", source, "--target", target, "--device", "cpu", "--json"
    )  # the CPU, where the references are computed
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("which", ["trained", "random_rnn"])
def test_scores_are_the_teacher_forced_loss_of_the_pair(which, request, capsys):
    run = request.getfixturevalue(which)
    tokenizer, model = run.load_tokenizer(), run.load_model().eval()
    pairs = [("abcdefgh", "hgfedcba"), ("abc", "cbb")]  # the second is padded in the batch
    results = [score_json(capsys, run, s, t) for s, t in pairs]
    for (source, target), result in zip(pairs, results):
        assert result["source_ids"] == tokenizer.encode(source)
        assert [t["id"] for t in result["tokens"]] == [*tokenizer.encode(target), tokenizer.eos_id]
        assert [t["token"] for t in result["tokens"]] == [*target, "<|endoftext|>"]
        with torch.no_grad():
            loss = model(**_batch(tokenizer, [(source, target)])).loss.item()  # mean over target + end
        count = len(result["tokens"])
        assert -result["logprob"] / count == pytest.approx(loss, rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
        assert result["logprob"] == pytest.approx(sum(t["logprob"] for t in result["tokens"]), rel=1e-9)
        assert [t["prob"] for t in result["tokens"]] == pytest.approx(
            [math.exp(t["logprob"]) for t in result["tokens"]]
        )
        assert result["logprob_bits"] == pytest.approx(result["logprob"] / math.log(2))
    with torch.no_grad():  # both pairs in one right-padded batch: the summed loss is the two scores
        total = model(**_batch(tokenizer, pairs), reduction="sum").loss.item()
    assert -sum(r["logprob"] for r in results) == pytest.approx(total, rel=1e-5)


def test_greedy_tokens_are_the_likeliest_at_each_step(random_rnn, capsys):
    """Greedy picks the argmax given the same prefix: changing its token at step k to any other
    letter scores no higher at step k (the steps before are the same, so they score the same)."""
    code, out, err = main(
        ["generate", "--checkpoint", str(random_rnn.path), "--source", "gabdh", "--strategy", "greedy",
         "--max-new-tokens", "4", "--json"]
    ), *capsys.readouterr()  # fmt: skip
    assert code == 0, err
    greedy = json.loads(out)["samples"][0]["text"]
    assert len(greedy) == 4 and set(greedy) <= set(LETTERS)  # this seeded model: four letters, no end
    best = score_json(capsys, random_rnn, "gabdh", greedy)["tokens"]
    for step in (0, 2):
        for letter in LETTERS.replace(greedy[step], ""):
            other = score_json(capsys, random_rnn, "gabdh", greedy[:step] + letter + greedy[step + 1 :])[
                "tokens"
            ]
            assert other[:step] == best[:step]
            assert other[step]["logprob"] <= best[step]["logprob"] + 1e-6


def test_human_output_is_a_table_then_the_totals(trained, capsys):
    code, out, _ = score(capsys, "--checkpoint", trained.path, "--source", "abcd", "--target", "dcba")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "token", "id", "prob", "log-prob"]
    assert [line.split()[1] for line in lines[1:6]] == ['"d"', '"c"', '"b"', '"a"', '"<|endoftext|>"']
    assert lines[6].startswith('5 tokens (the target, then "<|endoftext|>") given 4 source tokens: log-prob')
    reversed_well = score_json(capsys, trained, "abcd", "dcba")["perplexity"]
    badly = score_json(capsys, trained, "abcd", "abcd")["perplexity"]
    assert reversed_well < 1.5 < badly  # the trained model finds the reversal likely, the copy not


@pytest.mark.parametrize(
    "args,message",
    [
        (["--source", "abc"], "give both"),
        (["--target", "abc"], "give both"),
        (["--text", "abc"], "give --source (and --target"),
        (["--text", "abc", "--source", "a", "--target", "b"], "not both"),
        ([], "give --text (a language model) or --source and --target"),
        (["--source", "abc", "--target", ""], "--target is empty"),
    ],
)
def test_bad_input_is_one_line(trained, capsys, args, message):
    assert message in one_line_error(*score(capsys, "--checkpoint", trained.path, *args))


def test_a_language_model_given_a_source_names_text(tmp_path, capsys):
    causal = make_run(tmp_path / "gpt")
    line = one_line_error(
        *score(capsys, "--checkpoint", causal.path, "--source", "First", "--target", "Citizen")
    )
    assert "lmforge score --source needs a seq2seq" in line and "give --text instead" in line


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    return cached_run(
        tmp_path_factory.getbasetemp() / "seq2seq-runs", "seq2seq-nano", block_size=16, target_block_size=12
    )


def test_transformer_scores_are_its_teacher_forced_loss(transformer, capsys):
    tokenizer, model = transformer.load_tokenizer(), transformer.load_model().eval()
    pairs = [("abcdefgh", "hgfedcba"), ("abc", "cbb")]
    results = [score_json(capsys, transformer, s, t) for s, t in pairs]
    with torch.no_grad():
        total = model(**_batch(tokenizer, pairs), reduction="sum").loss.item()
    assert -sum(r["logprob"] for r in results) == pytest.approx(total, rel=1e-5)


def test_transformer_target_past_the_target_limit_is_refused(transformer, capsys):
    line = one_line_error(
        *score(capsys, "--checkpoint", transformer.path, "--source", "abc", "--target", "abcdefghabcd")
    )
    assert "the target has 12 tokens" in line and "target limit of 12 tokens: give at most 11" in line
    assert score_json(capsys, transformer, "abc", "abcdefghabc")["tokens"][-1]["token"] == "<|endoftext|>"

"""``lmforge attention --source --target`` on seq2seq runs: the cross-attention alignment. Each row
(a target step) is a distribution over the source tokens; a model trained to reverse strings
attends to the mirrored source position; the RNN without attention and the wrong kinds of run are
refused in one line, writing nothing."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from tests.seq2seq_run import cached_run, one_line_error
from tests.tiny_run import make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-attn", steps=300)


@pytest.fixture(scope="module")
def bottleneck(tmp_path_factory):
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-seq2seq")


def attention(capsys, *args) -> tuple[int, str, str]:
    code = main(["attention", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rnn_alignment_rows_are_distributions_and_mirror_the_reversal(trained, tmp_path, capsys):
    out = tmp_path / "align.png"
    source, target = "abcdefgh", "hgfedcba"
    code, stdout, err = attention(
        capsys, "--checkpoint", trained.path, "--source", source, "--target", target, "--out", out, "--json"
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["source_tokens"] == list(source)
    assert result["target_tokens"] == [*target, "<|endoftext|>"]
    (only,) = result["maps"]  # an RNN: one layer, one head
    assert (only["layer"], only["head"]) == (0, 0)
    weights = torch.tensor(only["weights"])
    assert weights.shape == (len(target) + 1, len(source))
    assert torch.allclose(weights.sum(-1), torch.ones(len(target) + 1), atol=1e-6)
    assert bool((weights >= 0).all())
    # step t writes target[t] = source[S-1-t]: a trained model reads it there (allow one miss)
    looked_at = weights[: len(target)].argmax(-1).tolist()
    assert sum(k == len(source) - 1 - t for t, k in enumerate(looked_at)) >= len(target) - 1, looked_at
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_human_output_names_the_map(trained, tmp_path, capsys):
    out = tmp_path / "align.png"
    code, stdout, _ = attention(
        capsys, "--checkpoint", trained.path, "--source", "abc", "--target", "cba", "--out", out
    )
    assert (
        code == 0
        and stdout == f"wrote {out}: cross-attention of layer 0, head 0, 4 target x 3 source tokens\n"
    )
    assert out.stat().st_size < 200_000


def test_the_rnn_without_attention_has_no_alignment(bottleneck, tmp_path, capsys):
    out = tmp_path / "none.png"
    line = one_line_error(
        *attention(
            capsys, "--checkpoint", bottleneck.path, "--source", "abc", "--target", "cba", "--out", out
        )
    )
    assert "without attention" in line and "no alignment" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--source", "abc"], "give both"),
        (["--target", "abc"], "give both"),
        (["--text", "abc"], "give --source (and --target"),
        (["--text", "abc", "--source", "a", "--target", "b"], "not both"),
        ([], "give --text (a language model) or --source and --target"),
        (["--source", "abc", "--target", "cba", "--layer", "1"], "--layer 1 does not exist"),
        (["--source", "abc", "--target", "cba", "--all", "--head", "0"], "leave out --layer and --head"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, args, message):
    out = tmp_path / "bad.png"
    assert message in one_line_error(*attention(capsys, "--checkpoint", trained.path, "--out", out, *args))
    assert not out.exists()


def test_a_language_model_given_a_source_names_text(tmp_path, capsys):
    causal = make_run(tmp_path / "gpt")
    out = tmp_path / "bad.png"
    line = one_line_error(
        *attention(
            capsys, "--checkpoint", causal.path, "--source", "First", "--target", "Citizen", "--out", out
        )
    )
    assert "lmforge attention --source needs a seq2seq" in line and "give --text instead" in line
    assert not out.exists()


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    return cached_run(
        tmp_path_factory.getbasetemp() / "seq2seq-runs", "seq2seq-nano", block_size=16, target_block_size=12
    )


def test_transformer_every_layer_and_head_is_a_distribution_over_the_source(transformer, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, err = attention(
        capsys, "--checkpoint", transformer.path, "--source", "abcdefgh" * 3, "--target", "cba", "--out", out,
        "--all", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "keeping" not in err and "drawing its first 16" in err  # the source limit
    result = json.loads(stdout)
    assert len(result["source_tokens"]) == 16 and result["target_tokens"] == ["c", "b", "a", "<|endoftext|>"]
    model = transformer.load_model()
    assert [(m["layer"], m["head"]) for m in result["maps"]] == [
        (i, j) for i in range(model.config.n_decoder_layer) for j in range(model.config.n_head)
    ]
    for found in result["maps"]:
        weights = torch.tensor(found["weights"])
        assert weights.shape == (4, 16)
        assert torch.allclose(weights.sum(-1), torch.ones(4), atol=1e-6)
    assert out.read_bytes().startswith(PNG_MAGIC)
    code, stdout, _ = attention(
        capsys, "--checkpoint", transformer.path, "--source", "abc", "--target", "cba", "--out", out,
        "--overwrite", "--layer", "1", "--head", "1", "--json",
    )  # fmt: skip
    assert code == 0 and [(m["layer"], m["head"]) for m in json.loads(stdout)["maps"]] == [(1, 1)]

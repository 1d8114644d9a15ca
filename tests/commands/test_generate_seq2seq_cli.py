"""``lmforge generate --source`` on seq2seq runs: a model trained on the reverse task reverses
held-out strings; a batch of sources (right-padded) gives each row its unbatched output, greedy and
beam; sampling is seeded; long sources and long targets; the bad inputs of issue 15, one line each."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.inference_seq2seq import encode_source, load_seq2seq, score_target
from tests.seq2seq_run import cached_run, one_line_error, reverse_pairs
from tests.tiny_run import make_run

HELD_OUT = [source for source, _ in reverse_pairs(40, seed=987_654)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The rnn-attn preset at half width, 300 steps of the reverse task (~10 s)."""
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-attn", steps=300)


@pytest.fixture(scope="module")
def random_rnn(tmp_path_factory):
    return cached_run(tmp_path_factory.getbasetemp() / "seq2seq-runs", "rnn-attn-additive", cell="lstm")


def generate(capsys, *args) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def generate_json(capsys, *args) -> dict:
    code, out, err = generate(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_the_trained_model_reverses_held_out_sources_greedy_and_beam(trained, tmp_path, capsys):
    path = tmp_path / "sources.txt"
    path.write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    for strategy in ("greedy", "beam"):
        result = generate_json(
            capsys,
            "--checkpoint",
            trained.path,
            "--source-file",
            path,
            "--strategy",
            strategy,
            "--batch-size",
            "40",
        )
        assert [r["source"] for r in result["results"]] == HELD_OUT
        right = sum(r["samples"][0]["text"] == r["source"][::-1] for r in result["results"])
        assert right >= 0.9 * len(HELD_OUT), (strategy, right)
        assert all(r["samples"][0]["finish"] == "eos" for r in result["results"])


def test_json_shape_and_human_output(trained, capsys):
    tokenizer = trained.load_tokenizer()
    result = generate_json(capsys, "--checkpoint", trained.path, "--source", "abcdef", "--strategy", "greedy")
    assert set(result) == {"source", "source_ids", "samples"}
    assert result["source"] == "abcdef" and result["source_ids"] == tokenizer.encode("abcdef")
    (sample,) = result["samples"]
    assert sample["text"] == "fedcba" and sample["ids"] == tokenizer.encode("fedcba")
    assert sample["finish"] == "eos" and sample["logprob"] < 0
    code, out, err = generate(
        capsys, "--checkpoint", trained.path, "--source", "abcdef", "--strategy", "greedy"
    )
    assert code == 0 and out == "fedcba\n"  # the target alone: the source is not echoed
    assert "new tokens" in err and "greedy" in err


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("which", ["trained", "random_rnn"])
def test_each_row_of_a_batch_equals_its_unbatched_output(which, strategy, request, tmp_path, capsys):
    run = request.getfixturevalue(which)
    sources = ["abcdefgh", "ab", "hgf", "abcabcab", "d"]  # a single token and a full row of padding
    path = tmp_path / "sources.txt"
    path.write_text("\n".join(sources), encoding="utf-8")
    common = ["--checkpoint", run.path, "--strategy", strategy, "--max-new-tokens", "12", "--num-beams", "3"]
    common += ["--device", "cpu"]  # a GPU picks other kernels for other batch shapes: 1e-4 apart
    if strategy == "beam":
        common += ["--num-samples", "2"]
    batched = generate_json(capsys, *common, "--source-file", path, "--batch-size", "5")["results"]
    in_twos = generate_json(capsys, *common, "--source-file", path, "--batch-size", "2")["results"]
    for source, row, row2 in zip(sources, batched, in_twos):
        alone = generate_json(capsys, *common, "--source", source)
        assert row["source_ids"] == alone["source_ids"]
        for ours, twos, single in zip(row["samples"], row2["samples"], alone["samples"]):
            assert ours["ids"] == single["ids"] == twos["ids"] and ours["text"] == single["text"]
            assert ours["logprob"] == pytest.approx(single["logprob"], abs=1e-4)
            assert ours["finish"] == single["finish"]


def test_generated_logprob_is_the_one_forward_score_of_the_target(random_rnn, capsys):
    """The step-by-step decoder (cached state) and one teacher-forced forward agree."""
    result = generate_json(
        capsys,
        "--checkpoint",
        random_rnn.path,
        "--source",
        "hecbad",
        "--strategy",
        "greedy",
        "--max-new-tokens",
        "7",
    )
    (sample,) = result["samples"]
    loaded = load_seq2seq(random_rnn.path, command="test", instead="--prompt", device="cpu")
    scores = score_target(loaded, result["source_ids"], sample["ids"])
    ended = sample["finish"] == "eos"
    expected = (
        scores.logprobs if ended else scores.logprobs[:-1]
    )  # the end token counts when it ended the row
    assert sample["logprob"] == pytest.approx(sum(expected), abs=1e-4)


def test_sampling_is_seeded_and_gives_num_samples(random_rnn, capsys):
    common = [
        "--checkpoint",
        random_rnn.path,
        "--source",
        "abc",
        "--max-new-tokens",
        "6",
        "--num-samples",
        "3",
    ]
    first = generate_json(capsys, *common, "--seed", "3", "--temperature", "1.5")
    again = generate_json(capsys, *common, "--seed", "3", "--temperature", "1.5")
    assert len(first["samples"]) == 3 and first == again
    other = generate_json(capsys, *common, "--seed", "4", "--temperature", "1.5")
    assert [s["ids"] for s in other["samples"]] != [s["ids"] for s in first["samples"]]


def test_show_probs_and_stream(trained, capsys):
    result = generate_json(
        capsys, "--checkpoint", trained.path, "--source", "abc", "--strategy", "greedy", "--show-probs"
    )
    tokens = result["samples"][0]["tokens"]
    assert [t["token"] for t in tokens] == ["c", "b", "a", "<|endoftext|>"]
    assert all(t["prob"] == t["top"][0]["prob"] for t in tokens)  # greedy takes the likeliest
    code, out, _ = generate(
        capsys, "--checkpoint", trained.path, "--source", "abc", "--strategy", "greedy", "--stream"
    )
    assert code == 0 and out == "cba\n"


def test_separate_source_tokenizer_reads_the_source(tmp_path, capsys):
    """A run with source_tokenizer/: the source is encoded with it, not with the target's."""
    from lmforge.tokenizers import train_tokenizer
    from tests.seq2seq_run import make_seq2seq_run

    source_tokenizer = train_tokenizer("char", "XYZ")  # ids 2, 3, 4: not the target's letters
    run = make_seq2seq_run(
        tmp_path / "run", shared_vocab=False, source_vocab_size=source_tokenizer.vocab_size
    )
    run.save_source_tokenizer(source_tokenizer)
    result = generate_json(capsys, "--checkpoint", run.path, "--source", "ZYX", "--max-new-tokens", "3")
    assert result["source_ids"] == source_tokenizer.encode("ZYX") == [4, 3, 2]


def test_a_language_model_given_a_source_and_a_seq2seq_model_given_a_prompt(trained, tmp_path, capsys):
    causal = make_run(tmp_path / "gpt")
    line = one_line_error(*generate(capsys, "--checkpoint", causal.path, "--source", "First"))
    assert "seq2seq" in line and "causal language model (gpt" in line and "give --prompt" in line
    line = one_line_error(*generate(capsys, "--checkpoint", trained.path, "--prompt", "abc"))
    assert "seq2seq model" in line and "give --source" in line


@pytest.mark.parametrize(
    "args,message",
    [
        (["--source", "abc", "--prompt", "abc"], "give --source (a seq2seq model) or --prompt"),
        (["--source", ""], "--source is empty"),
        (["--source", "abc", "--stream", "--strategy", "beam"], "--stream prints one continuation"),
        (["--source", "abc", "--show-probs", "--strategy", "beam"], "--show-probs shows the choices"),
    ],
)
def test_bad_input_is_one_line(trained, capsys, args, message):
    assert message in one_line_error(*generate(capsys, "--checkpoint", trained.path, *args))


def test_source_file_problems_name_the_line(trained, tmp_path, capsys):
    path = tmp_path / "sources.txt"
    path.write_text("abc\n\nabd\n", encoding="utf-8")
    line = one_line_error(*generate(capsys, "--checkpoint", trained.path, "--source-file", path))
    assert "line 2 is blank" in line
    line = one_line_error(
        *generate(capsys, "--checkpoint", trained.path, "--source", "a", "--source-file", path)
    )
    assert "give --source or --source-file, not both" in line
    missing = tmp_path / "missing.txt"
    assert "does not exist" in one_line_error(
        *generate(capsys, "--checkpoint", trained.path, "--source-file", missing)
    )


def test_encode_source_keeps_the_first_tokens_within_the_source_limit(trained):
    loaded = load_seq2seq(trained.path, command="test", instead="--prompt", device="cpu")
    ids = loaded.source_tokenizer.encode("abcdefgh")
    assert encode_source("abcdefgh", loaded) == (ids, 0)  # an RNN reads any length
    loaded.model.context_limit = 5  # as a Transformer's position table would bound it
    assert encode_source("abcdefgh", loaded) == (ids[:5], 3)
    assert isinstance(loaded.model, torch.nn.Module)


def test_beam_search_keeps_going_past_early_unlikely_ends(trained, capsys):
    """A confident model puts end-of-text among the top candidates at every step: stopping at
    num_beams finished hypotheses (HF's early_stopping=True) would return those early ends. The
    best beam must score at least as well as greedy decoding's target (score = logprob / length)."""
    for source in HELD_OUT[:5]:
        common = ["--checkpoint", trained.path, "--source", source]
        greedy = generate_json(capsys, *common, "--strategy", "greedy")["samples"][0]
        beams = generate_json(capsys, *common, "--strategy", "beam", "--num-beams", "4", "--num-samples", "4")
        best = beams["samples"][0]
        assert greedy["finish"] == best["finish"] == "eos"
        assert best["score"] >= greedy["logprob"] / (len(greedy["ids"]) + 1) - 1e-6
        assert best["text"] == greedy["text"] == source[::-1]
        assert [s["score"] for s in beams["samples"]] == sorted(
            (s["score"] for s in beams["samples"]), reverse=True
        )


class ConfidentDecoder(torch.nn.Module):
    """A fake encoder-decoder that writes 2, 3, 4 then ends (0), sure of each token, with
    end-of-text its runner-up: log p = 0 for the right token, -5 for the end, -30 for the rest."""

    lm_kind, decoding, context_limit, target_limit = "seq2seq", "encoder_decoder", None, None

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for generate()

    def encode(self, input_ids, attention_mask):
        return input_ids

    def start_decoding(self, memory, attention_mask, *, max_length):
        return torch.zeros(memory.shape[0], dtype=torch.long)  # tokens fed so far, per row

    def decode(self, decoder_input_ids, state):
        N, T = decoder_input_ids.shape
        logits = torch.full((N, T, 5), -30.0)
        for t in range(T):
            step = (state + t).clamp(max=3)
            right = torch.tensor([2, 3, 4, 0])[step]
            logits[:, t, 0] = -5.0
            logits[torch.arange(N), t, right] = 0.0
        return torch.log_softmax(logits, -1), state + T

    def reorder_decoding(self, state, index):
        return state[index]


def test_stopping_at_num_beams_finished_would_return_an_early_end():
    from lmforge.generate import GenerationConfig
    from lmforge.generate import generate as run_generation
    from lmforge.generate.seq2seq_step import EncoderDecoderStepModel

    step_model = EncoderDecoderStepModel(ConfidentDecoder(), torch.tensor([[7]]))
    config = GenerationConfig(strategy="beam", num_beams=2, max_new_tokens=6, eos_id=0)
    early = run_generation(step_model, [[1]], config)[0][0]
    assert early.ids == [2]  # two ends finished among the top candidates: the search stopped there
    from dataclasses import replace

    patient = run_generation(step_model, [[1]], replace(config, early_stopping=False))[0][0]
    assert patient.ids == [2, 3, 4] and patient.finish == "eos"


def test_the_command_decodes_beams_without_early_stopping(trained, monkeypatch, capsys):
    import lmforge.inference_seq2seq as inference_seq2seq

    seen = []
    real = inference_seq2seq.generate_targets

    def spy(loaded, sources, config, **kwargs):
        seen.append(config)
        return real(loaded, sources, config, **kwargs)

    monkeypatch.setattr(inference_seq2seq, "generate_targets", spy)
    generate_json(capsys, "--checkpoint", trained.path, "--source", "abc", "--strategy", "beam")
    assert [c.early_stopping for c in seen] == [False]


# --- the Transformer: a source limit, a target limit, padding through self-attention masks ---------
@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """seq2seq-nano at a small width, random weights: sources up to 16 tokens, decoder inputs up to 12."""
    return cached_run(
        tmp_path_factory.getbasetemp() / "seq2seq-runs", "seq2seq-nano", block_size=16, target_block_size=12
    )


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_transformer_batch_rows_equal_their_unbatched_outputs(transformer, strategy, tmp_path, capsys):
    sources = ["abcdefghabcd", "ab", "hgf", "d"]
    path = tmp_path / "sources.txt"
    path.write_text("\n".join(sources), encoding="utf-8")
    common = [
        "--checkpoint",
        transformer.path,
        "--strategy",
        strategy,
        "--max-new-tokens",
        "8",
        "--num-beams",
        "3",
    ]
    batched = generate_json(capsys, *common, "--source-file", path, "--batch-size", "4")["results"]
    for source, row in zip(sources, batched):
        alone = generate_json(capsys, *common, "--source", source)
        assert row["samples"][0]["ids"] == alone["samples"][0]["ids"]
        assert row["samples"][0]["logprob"] == pytest.approx(alone["samples"][0]["logprob"], abs=1e-4)


def test_transformer_long_source_is_cut_and_max_new_tokens_lowered(transformer, capsys):
    tokenizer = transformer.load_tokenizer()
    source = "abcdefgh" * 3  # 24 tokens, the source limit is 16
    code, out, err = generate(
        capsys, "--checkpoint", transformer.path, "--source", source, "--strategy", "greedy", "--json",
        "--min-new-tokens", "200",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["source_ids"] == tokenizer.encode(source)[:16]
    assert (
        "warning: the source has 24 tokens; keeping its first 16 (the model's source limit), 8 dropped" in err
    )
    assert "--max-new-tokens 200 is past the model's target limit of 12 tokens" in err
    (sample,) = result["samples"]
    assert len(sample["ids"]) == 11 and sample["finish"] == "length"  # start + 11 fill the 12 positions


def test_transformer_generated_logprob_is_the_one_forward_score(transformer, capsys):
    result = generate_json(
        capsys,
        "--checkpoint",
        transformer.path,
        "--source",
        "hecbad",
        "--strategy",
        "greedy",
        "--max-new-tokens",
        "9",
    )
    (sample,) = result["samples"]
    loaded = load_seq2seq(transformer.path, command="test", instead="--prompt", device="cpu")
    scores = score_target(loaded, result["source_ids"], sample["ids"])
    expected = scores.logprobs if sample["finish"] == "eos" else scores.logprobs[:-1]
    assert sample["logprob"] == pytest.approx(sum(expected), abs=1e-4)


def test_bf16_decodes_the_same_reversal(trained, capsys):
    code, out, err = generate(
        capsys, "--checkpoint", trained.path, "--source", "abcdefg", "--strategy", "greedy", "--dtype", "bf16",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0 and out == "gfedcba\n", err
    assert "bf16 on cpu" in err

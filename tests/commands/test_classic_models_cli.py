"""window, rnn, lstm and gru through the same commands as GPT: pretrain, evaluate, generate, score."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from lmforge.cli import main
from lmforge.run import Run
from tests.commands.test_pretrain_cli import TEXT

FAMILIES = ["window", "rnn", "lstm", "gru"]
SMALL = ["--n-embd", "16", "--hidden-size", "32", "--block-size", "16", "--batch-size", "8"]
SCHEDULE = ["--lr", "1e-2", "--warmup-steps", "5", "--eval-every", "40", "--eval-batches", "4"]


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("classic")
    corpus = root / "austen.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(root / "data")]) == 0
    return root


@pytest.fixture(scope="module")
def runs(char_data):
    """One trained run per family: {family: (run directory, pretrain summary)}."""
    trained = {}
    for family in FAMILIES:
        run = char_data / f"run-{family}"
        args = ["pretrain", "--data", str(char_data / "data"), "--out", str(run), "--model", family]
        args += [*SMALL, *SCHEDULE, "--max-steps", "120", "--no-progress", "--json"]
        with _captured() as out:
            assert main(args) == 0
        trained[family] = (run, json.loads(out.getvalue().strip().splitlines()[-1]))
    return trained


class _captured:
    """Capture stdout without pytest's capsys (module-scoped fixtures cannot take it)."""

    def __enter__(self):
        import contextlib
        import io

        self.buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self.buffer)
        self._redirect.__enter__()
        return self.buffer

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrain_lowers_the_loss_and_writes_a_run(runs, family):
    run, summary = runs[family]
    assert summary["steps"] == 120
    assert summary["val_loss"] < summary["first_val_loss"] - 0.7  # from about ln(vocab) = 3.3
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == family and config["model"]["block_size"] == 16
    assert {"model.safetensors", "best", "train_state.pt", "metrics.jsonl", "loss.png", "tokenizer"} <= {
        p.name for p in run.iterdir()
    }
    if family != "window":  # recurrent runs keep where each stream's hidden state ended
        state = torch.load(run / "train_state.pt", weights_only=True)
        assert state["data"]["window"] >= 0 and len(state["carried_state"]) == (2 if family == "lstm" else 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_scores_every_token_and_longer_windows_help(runs, char_data, family, capsys):
    run, _ = runs[family]
    data = str(char_data / "data")
    assert main(["evaluate", "--checkpoint", str(run), "--data", data, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    meta = json.loads((char_data / "data" / "meta.json").read_text())
    assert plain["tokens"] == meta["val_tokens"] - 1 and plain["loss"] < math.log(
        meta["tokenizer"]["vocab_size"]
    )
    # no context limit: windows longer than the training window are allowed
    assert main(["evaluate", "--checkpoint", str(run), "--data", data, "--block-size", "64", "--json"]) == 0
    longer = json.loads(capsys.readouterr().out)
    assert longer["tokens"] == plain["tokens"] and math.isfinite(longer["loss"])


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_greedy_equals_recomputing_and_every_strategy_runs(runs, family, capsys):
    run, _ = runs[family]
    base = ["generate", "--checkpoint", str(run), "--prompt", "It is a", "--max-new-tokens", "12", "--json"]
    assert main([*base, "--strategy", "greedy"]) == 0
    greedy = json.loads(capsys.readouterr().out)["samples"][0]
    model, tokenizer = Run(run).load_model(), Run(run).load_tokenizer()
    ids = torch.tensor([tokenizer.encode("It is a")])
    with torch.no_grad():
        for _ in range(len(greedy["ids"])):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert greedy["ids"] == ids[0, 7:].tolist()
    for extra in (["--strategy", "sample", "--seed", "3"], ["--strategy", "beam", "--num-samples", "2"]):
        assert main([*base, *extra]) == 0
        samples = json.loads(capsys.readouterr().out)["samples"]
        assert all(len(s["ids"]) <= 12 and math.isfinite(s["logprob"]) for s in samples)


@pytest.mark.parametrize("family", FAMILIES)
def test_score_is_the_chain_rule_over_the_whole_text(runs, family, capsys):
    run, _ = runs[family]
    text = "It is a truth universally acknowledged"  # longer than the 16-token training window
    # on the CPU, as the reference below (a GPU's cuDNN RNNs round differently)
    assert main(["score", "--checkpoint", str(run), "--text", text, "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model, tokenizer = Run(run).load_model(), Run(run).load_tokenizer()
    ids = [tokenizer.document_separator_id, *tokenizer.encode(text)]
    with torch.no_grad():
        log_probs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    expected = sum(log_probs[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    assert result["logprob"] == pytest.approx(expected, abs=1e-4)
    assert len(result["tokens"]) == len(text)


def test_resume_continues_a_recurrent_run_exactly(char_data, tmp_path, capsys):
    data = str(char_data / "data")
    # a constant learning rate, so that a 10-step budget and a 20-step one share their first 10 steps
    constant = ["--lr", "1e-2", "--min-lr", "1e-2", "--warmup-steps", "0", "--eval-every", "40"]
    train = ["--batch-size", "8", *constant, "--no-progress", "--json"]  # --resume takes these again
    model = [
        "--model",
        "lstm",
        "--n-embd",
        "16",
        "--hidden-size",
        "32",
        "--block-size",
        "16",
        "--dropout",
        "0.1",
    ]
    for run, steps in (("straight", "20"), ("split", "10")):
        assert (
            main(
                [
                    "pretrain",
                    "--data",
                    data,
                    "--out",
                    str(tmp_path / run),
                    "--max-steps",
                    steps,
                    *model,
                    *train,
                ]
            )
            == 0
        )
    assert main(["pretrain", "--resume", str(tmp_path / "split"), "--max-steps", "20", *train]) == 0
    capsys.readouterr()

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["train_loss"] for r in map(json.loads, lines) if "train_loss" in r]

    # the carried hidden state is saved with the data position, so window 11 continues window 10
    assert losses("split") == losses("straight")


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("lstm", ["--pos-encoding", "rope"], "--pos-encoding does not apply to --model lstm"),
        ("window", ["--n-layer", "2"], "--n-layer does not apply to --model window"),
        ("gru", ["--activation", "relu"], "--activation does not apply to --model gru"),
        ("gpt-nano", ["--context", "5"], "--context does not apply to --model gpt-nano"),
        ("rnn", ["--n-embd", "8", "--hidden-size", "16", "--tie-embeddings"], "n_embd == hidden_size"),
    ],
)
def test_a_flag_of_another_family_is_one_clear_line(char_data, tmp_path, model, extra, message, capsys):
    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(tmp_path / "run"), "--model", model]
    assert main([*args, "--max-steps", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_attention_maps_are_refused_for_a_recurrent_run(runs, tmp_path, capsys):
    run, _ = runs["lstm"]
    out = tmp_path / "a.png"
    assert main(["attention", "--checkpoint", str(run), "--text", "It is", "--out", str(out)]) == 2
    assert "no attention" in capsys.readouterr().err and not out.exists()


def test_pretrain_help_says_which_flags_apply_to_which_family(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "window (fixed-window",
        "rnn (Elman RNN)",
        "[window] how many previous tokens",
        "[rnn] sigma",
    ):
        assert needle in text


def test_copied_run_still_loads(runs, tmp_path):
    # a run directory is self-contained: the family comes from config.json
    copy = tmp_path / "copy"
    shutil.copytree(runs["gru"][0], copy)
    assert Run.open(copy).load_model().family == "gru"


def test_lstm_pretrains_in_bf16_on_every_cpu(char_data, tmp_path, capsys, cpu_capability):
    """The issue's `lmforge pretrain --model lstm --precision bf16` on a CPU without AVX-512 (forced
    as 'avx2'): it trains, with one warning line where bf16 is emulated, and no traceback."""
    from lmforge.hardware import bf16_is_emulated

    args = ["pretrain", "--data", str(char_data / "data"), "--out", str(tmp_path / "run"), "--model", "lstm"]
    args += [*SMALL, "--max-steps", "3", "--eval-every", "3", "--eval-batches", "1", "--precision", "bf16"]
    args += ["--device", "cpu"]  # a CPU's bf16, also where a GPU is visible
    assert main([*args, "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and math.isfinite(summary["val_loss"])
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == (1 if bf16_is_emulated("cpu") else 0)
    if cpu_capability == "avx2":
        assert "bf16 is emulated" in warnings[0] and "slower than --precision fp32" in warnings[0]

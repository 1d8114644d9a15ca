"""``lmforge generate`` end to end on a tiny trained run: output shapes, batching, streaming, bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from lmforge.run import Run

DOCUMENTS = [
    "It is a truth universally acknowledged, that a single man must be in want of a wife.",
    "However little known the feelings or views of such a man may be.",
    "This truth is so well fixed in the minds of the surrounding families.",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    corpus = root / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in DOCUMENTS * 20) + "\n", encoding="utf-8")
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(root / "data")]) == 0
    args = ["pretrain", "--data", str(root / "data"), "--out", str(root / "run"), "--max-steps", "60"]
    args += ["--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "8"]
    args += ["--lr", "1e-2", "--warmup-steps", "5", "--eval-every", "60", "--eval-batches", "2"]
    assert main(args) == 0
    return root / "run"


def run_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["generate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_shape(run_dir, capsys):
    tokenizer = Run(run_dir).load_tokenizer()
    result = run_json(
        capsys,
        "--checkpoint",
        str(run_dir),
        "--prompt",
        "It is",
        "--max-new-tokens",
        "20",
        "--num-samples",
        "3",
        "--seed",
        "3",
    )
    assert set(result) == {"prompt", "prompt_ids", "samples"}
    assert result["prompt_ids"] == tokenizer.encode("It is")
    assert len(result["samples"]) == 3
    for sample in result["samples"]:
        assert set(sample) == {"text", "ids", "logprob", "finish"}
        assert len(sample["ids"]) <= 20 and sample["text"] == tokenizer.decode(sample["ids"])
        assert sample["logprob"] < 0 and sample["finish"] in ("eos", "length")
        assert tokenizer.document_separator_id not in sample["ids"]


def test_empty_prompt_starts_a_document(run_dir, capsys):
    tokenizer = Run(run_dir).load_tokenizer()
    result = run_json(capsys, "--checkpoint", str(run_dir), "--max-new-tokens", "5")
    assert result["prompt_ids"] == [tokenizer.document_separator_id]


def test_prompt_file_batches_equal_one_prompt_at_a_time(run_dir, tmp_path, capsys):
    prompts = ["It is a", "", "However little", "This"]  # + 18 new tokens fit the 32-token context
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    greedy = ["--checkpoint", str(run_dir), "--strategy", "greedy", "--max-new-tokens", "18"]
    batched = run_json(capsys, *greedy, "--prompt-file", str(path), "--batch-size", "3")
    assert [r["prompt"] for r in batched["results"]] == prompts
    for prompt, result in zip(prompts, batched["results"]):
        alone = run_json(capsys, *greedy, "--prompt", prompt)
        for ours, single in zip(result["samples"], alone["samples"]):
            assert ours["ids"] == single["ids"] and ours["text"] == single["text"]
            assert ours["logprob"] == pytest.approx(single["logprob"], abs=1e-4)


def test_stream_prints_the_same_text(run_dir, capsys):
    args = ["--checkpoint", str(run_dir), "--prompt", "It is a", "--max-new-tokens", "40", "--seed", "7"]
    expected = run_json(capsys, *args)["samples"][0]["text"]
    assert main(["generate", *args, "--stream"]) == 0
    assert capsys.readouterr().out == "It is a" + expected + "\n"


def test_stop_string_cuts_the_text(run_dir, capsys):
    args = [
        "--checkpoint",
        str(run_dir),
        "--prompt",
        "It is a",
        "--strategy",
        "greedy",
        "--max-new-tokens",
        "40",
    ]
    full = run_json(capsys, *args)["samples"][0]["text"]
    stop = full[5:8]
    cut = run_json(capsys, *args, "--stop", stop, "never-there")["samples"][0]
    assert cut["text"] == full[: full.index(stop)] and cut["finish"] == "stop"
    assert main(["generate", *args, "--stop", stop, "--stream"]) == 0
    assert capsys.readouterr().out == "It is a" + cut["text"] + "\n"
    missing = run_json(capsys, *args, "--stop", "zzz")["samples"][0]
    assert missing["text"] == full


def test_show_probs(run_dir, capsys):
    args = [
        "--checkpoint",
        str(run_dir),
        "--prompt",
        "It is",
        "--strategy",
        "greedy",
        "--max-new-tokens",
        "6",
    ]
    sample = run_json(capsys, *args, "--show-probs")["samples"][0]
    assert [t["id"] for t in sample["tokens"]][: len(sample["ids"])] == sample["ids"]
    for token in sample["tokens"]:
        probs = [t["prob"] for t in token["top"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 5
        assert token["id"] == token["top"][0]["id"] and 0 < token["prob"] <= 1  # greedy: the likeliest
    capsys.readouterr()
    assert main(["generate", *args, "--show-probs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "It is" + sample["text"] and len(out) == 1 + len(sample["tokens"]) and "top:" in out[1]


def test_beam_search_returns_ranked_beams(run_dir, capsys):
    result = run_json(
        capsys,
        "--checkpoint",
        str(run_dir),
        "--prompt",
        "It is",
        "--strategy",
        "beam",
        "--num-beams",
        "3",
        "--num-samples",
        "2",
        "--max-new-tokens",
        "12",
    )
    scores = [s["score"] for s in result["samples"]]
    assert len(scores) == 2 and scores[0] >= scores[1]


def test_bf16_and_a_prompt_longer_than_the_context(run_dir, capsys):
    long_prompt = "It is a truth universally acknowledged, that a single man"  # > 32 characters
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(run_dir),
                "--prompt",
                long_prompt,
                "--dtype",
                "bf16",
                "--max-new-tokens",
                "50",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "keeping its last 32" in captured.err
    result = json.loads(captured.out)
    assert len(result["prompt_ids"]) == 32 and len(result["samples"][0]["ids"]) <= 50


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "-1"], "--top-k"),
        (["--temperature", "-0.5"], "--temperature"),
        (["--strategy", "beam", "--num-beams", "0"], "--num-beams"),
        (["--strategy", "beam", "--num-beams", "2", "--num-samples", "3"], "--num-samples"),
        (["--strategy", "greedy", "--num-samples", "2"], "--num-samples 1"),
        (["--max-new-tokens", "-1"], "--max-new-tokens"),
        (["--batch-size", "0"], "--batch-size"),
        (["--strategy", "beam", "--stream"], "--stream"),
        (["--num-samples", "2", "--stream"], "--stream"),
        (["--strategy", "beam", "--show-probs"], "--show-probs"),
        (["--prompt-file", "missing.txt"], "--prompt-file missing.txt does not exist"),
        (["--prompt-file", __file__], "not both"),
        (["--stop", ""], "--stop"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_dir, capsys, extra, message):
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(run_dir), "--prompt", "It", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_missing_prompt_file_exits_2(run_dir, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(run_dir), "--prompt-file", str(tmp_path / "nope.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bf16_generates_on_every_cpu(run_dir, capsys, cpu_capability):
    """`generate --dtype bf16` where oneDNN has no bf16 (forced as 'avx2'): plain bf16 layers, the
    same greedy text as fp32 for this short continuation, and one note that bf16 is emulated."""
    from lmforge.hardware import bf16_is_emulated

    outputs = {}
    for dtype in ("fp32", "bf16"):
        capsys.readouterr()
        args = ["generate", "--checkpoint", str(run_dir), "--prompt", "It is", "--max-new-tokens", "5"]
        assert main([*args, "--strategy", "greedy", "--dtype", dtype, "--device", "cpu", "--json"]) == 0
        captured = capsys.readouterr()
        outputs[dtype] = json.loads(captured.out)["samples"][0]["ids"]
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == (1 if bf16_is_emulated("cpu") else 0)
    if cpu_capability == "avx2":
        assert "bf16 is emulated" in notes[0]
    assert len(outputs["bf16"]) == len(outputs["fp32"]) == 5

"""``lmforge tokenizer train | encode | decode`` end to end through ``lmforge.cli.main``."""

from __future__ import annotations

import json

import pytest
import tokenizers

from lmforge import cli
from lmforge.tokenizers import load_tokenizer

TEXT = (
    "Henry is giving a lecture on transformers.\n"
    "The lecture on transformers is long, and the students take notes.\n"
    "It's a good lecture; Henry answers every question.\n"
) * 20
LECTURE = "Henry is givin' a lectrue on transformers"


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run(capsys, command: str, *args: object) -> tuple[int, str, str]:
    """``lmforge`` + the words of ``command`` + ``args`` (paths and texts kept whole): (exit code, stdout, stderr)."""
    code = cli.main(command.split() + [str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_encode_decode_word(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    code, stdout, _ = run(capsys, "tokenizer train --kind word --lowercase --data", corpus_file, "--out", out)
    assert code == 0
    assert "trained a word tokenizer" in stdout and str(out) in stdout
    assert (out / "tokenizer.json").is_file() and (out / "lmforge_tokenizer.json").is_file()

    code, stdout, _ = run(capsys, "tokenizer encode --json --tokenizer", out, LECTURE)
    assert code == 0
    result = json.loads(stdout)
    assert set(result) == {"ids", "tokens"}
    assert result["tokens"] == ["henry", "is", "<unk>", "'", "a", "<unk>", "on", "transformers"]
    ids = result["ids"]
    assert ids == load_tokenizer(out).encode(LECTURE)

    code, stdout, _ = run(capsys, "tokenizer encode --tokenizer", out, "Henry is givin'")
    assert code == 0
    assert stdout.splitlines()[0] == f"henry({ids[0]}) is({ids[1]}) <unk>({ids[2]}) '({ids[3]})"
    assert "4 tokens, 1 unknown (word tokenizer" in stdout

    code, stdout, _ = run(capsys, "tokenizer decode --tokenizer", out, *ids)
    assert code == 0 and stdout == "henry is <unk> ' a <unk> on transformers\n"
    code, stdout, _ = run(capsys, "tokenizer decode --json --tokenizer", out, *ids[:2])
    assert json.loads(stdout) == {"text": "henry is"}


def test_train_bpe_json_with_special_override(tmp_path, corpus_file, capsys):
    out = tmp_path / "bpe"
    argv = ("--data", corpus_file, "--out", out, "--special", "pad=<pad>", "--json")
    code, stdout, _ = run(capsys, "tokenizer train --kind bpe --vocab-size 300", *argv)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["kind"] == "bpe" and summary["vocab_size"] == 300
    assert summary["special_tokens"] == {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<pad>"}
    assert summary["special_ids"] == {"bos": 0, "eos": 0, "pad": 1}
    assert summary["characters"] == len(TEXT)

    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    text = LECTURE + " ✓"
    code, stdout, _ = run(capsys, "tokenizer encode --json --tokenizer", out, text)
    assert json.loads(stdout)["ids"] == hf.encode(text).ids
    code, stdout, _ = run(capsys, "tokenizer decode --tokenizer", out, *hf.encode(text).ids)
    assert stdout == text + "\n"


def test_existing_out_is_refused_and_left_untouched(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, stdout, err = run(capsys, "tokenizer train --kind char --data", corpus_file, "--out", out)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and "not a tokenizer (keep.txt)" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "tokenizer train --kind char --overwrite --data", corpus_file, "--out", out)
    assert code == 2 and "lmforge will not delete them" in err  # --overwrite or not
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"

    ours = tmp_path / "ours"
    assert run(capsys, "tokenizer train --kind word --data", corpus_file, "--out", ours)[0] == 0
    code, _, err = run(capsys, "tokenizer train --kind char --data", corpus_file, "--out", ours)
    assert code == 2 and "--overwrite" in err
    code, _, _ = run(capsys, "tokenizer train --kind char --overwrite --data", corpus_file, "--out", ours)
    assert code == 0 and load_tokenizer(ours).kind == "char"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "--kind bpe --vocab-size 100",
            "byte-level BPE needs at least 256 byte tokens + 1 special token = 257",
        ),
        ("--kind bpe --special start=<s>", "unknown special-token name 'start'"),
        ("--kind bpe --special eos", "--special expects NAME=TOKEN"),
        ("--kind bpe --no-byte-fallback", "--no-byte-fallback does not apply"),
        ("--kind word --byte-fallback", "--byte-fallback is not available for word"),
        ("--kind unigram --min-frequency 2", "--min-frequency does not apply to unigram"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, corpus_file, capsys, options, message):
    out = tmp_path / "tok"
    code, _, err = run(capsys, f"tokenizer train {options} --data", corpus_file, "--out", out)
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_empty_data_and_missing_tokenizer_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(capsys, "tokenizer train --kind char --data", empty, "--out", tmp_path / "tok")
    assert code == 2 and err.startswith("error: ") and not (tmp_path / "tok").exists()
    code, _, err = run(capsys, "tokenizer encode --tokenizer", tmp_path / "missing", "hello")
    assert code == 2 and "--tokenizer" in err and "does not exist" in err


def test_decode_of_an_id_outside_the_vocabulary_exits_2(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    assert run(capsys, "tokenizer train --kind char --data", corpus_file, "--out", out)[0] == 0
    code, _, err = run(capsys, "tokenizer decode --tokenizer", out, 0, 99999)
    assert code == 2 and "token id 99999 is outside" in err


@pytest.mark.parametrize(
    "command", ["tokenizer train --kind bpe --vocab-size 300", "prepare --tokenizer bpe --vocab-size 300"]
)
def test_a_special_token_that_swallows_text_is_refused_before_anything_is_written(
    tmp_path, corpus_file, capsys, command
):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, command, "--data", corpus_file, "--out", out, "--special", "eos=a")
    assert code == 2 and stdout == ""
    assert err.splitlines() == [
        "error: --special eos='a' is a single character: a special token is cut out of every text, so "
        "each 'a' would become eos; use a string no text holds, such as --special eos=<|eos|>"
    ]
    code, _, err = run(capsys, command, "--data", corpus_file, "--out", out, "--special", "eos=Henry")
    assert code == 2
    assert err.startswith("error: --special eos='Henry' occurs 40 times in the training text")
    assert not out.exists()
    code, _, _ = run(capsys, command, "--data", corpus_file, "--out", out, "--special", "eos=<|eos|>")
    assert code == 0

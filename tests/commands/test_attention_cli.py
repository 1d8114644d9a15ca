"""``lmforge attention`` end to end: a PNG of one map or of every layer x head, and bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main
from lmforge.commands.attention import token_label
from tests.tiny_run import make_run

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("attention") / "run")


def attention(capsys, *args) -> tuple[int, str, str]:
    code = main(["attention", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_one_map_is_a_png_and_its_json_rows_are_causal(run, tmp_path, capsys):
    out = tmp_path / "map.png"
    code, stdout, _ = attention(
        capsys,
        "--checkpoint",
        run.path,
        "--text",
        "Speak, speak.",
        "--layer",
        1,
        "--head",
        1,
        "--out",
        out,
        "--json",
    )
    assert code == 0 and out.read_bytes()[:8] == PNG_SIGNATURE
    result = json.loads(stdout)
    assert result["tokens"] == ["<|endoftext|>", *"Speak, speak."]
    (drawn,) = result["maps"]
    assert (drawn["layer"], drawn["head"]) == (1, 1)
    for t, row in enumerate(drawn["weights"]):
        assert sum(row) == pytest.approx(1.0, abs=1e-5) and all(w == 0 for w in row[t + 1 :])


def test_all_draws_every_layer_and_head(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, _ = attention(
        capsys, "--checkpoint", run.path, "--text", "All:\nSpeak", "--all", "--out", out
    )
    assert code == 0 and out.read_bytes()[:8] == PNG_SIGNATURE
    assert "every layer x head (4 maps)" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "2"], "--layer 2 does not exist: this model has layers 0..1"),
        (["--head", "5"], "--head 5 does not exist: this model has heads 0..1 per layer"),
        (["--all", "--layer", "0"], "leave out --layer and --head"),
        (["--text", ""], "--text is empty"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, args, message):
    out = tmp_path / "map.png"
    code, stdout, err = attention(capsys, "--checkpoint", run.path, "--text", "hi", *args, "--out", out)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_existing_png_is_kept_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "map.png"
    out.write_bytes(b"mine")
    code, _, err = attention(capsys, "--checkpoint", run.path, "--text", "hi", "--out", out)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"mine"
    assert attention(capsys, "--checkpoint", run.path, "--text", "hi", "--out", out, "--overwrite")[0] == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_labels_show_whitespace_and_escape_matplotlib_math():
    assert [token_label(t) for t in (" ", "\n", "\t", "$x", "", "Ġ")] == ["␣", "↵", "⇥", r"\$x", "∅", "Ġ"]
    assert token_label("<|endoftext|>") == "<|endoftext|>" and token_label("x" * 20) == "x" * 13 + "…"


def test_cjk_text_and_run_name_draw_without_missing_glyphs(tmp_path, capsys):
    import warnings

    run = make_run(tmp_path / "运行", kind="char")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, _ = attention(
            capsys, "--checkpoint", run.path, "--text", "中文 text", "--out", tmp_path / "a.png"
        )
    assert code == 0 and (tmp_path / "a.png").read_bytes()[:8] == PNG_SIGNATURE
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []

"""Text of any script in plots: drawn with an installed font that has it, else written as U+XXXX,
never an empty box with a "missing from font" warning."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib import font_manager  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402

from lmforge.fonts import readable  # noqa: E402

STIX_ONLY = "\u1d81"  # LATIN SMALL LETTER D WITH PALATAL HOOK: in STIXGeneral, not in DejaVu Sans


@pytest.fixture
def bundled_fonts_only(monkeypatch):
    """The fonts every matplotlib ships (DejaVu, STIX, Computer Modern, Last Resort), none with CJK."""
    bundled = [e for e in font_manager.fontManager.ttflist if "mpl-data" in e.fname]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", bundled)


def covers(family: str, char: str) -> bool:
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    return ord(char) in FT2Font(path).get_charmap()


@pytest.fixture
def no_glyph_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []


def test_the_test_characters_are_what_they_claim(bundled_fonts_only):
    assert not covers("DejaVu Sans", STIX_ONLY) and covers("STIXGeneral", STIX_ONLY)
    assert not any(covers(f, "中") for f in ("DejaVu Sans", "STIXGeneral"))


def test_a_glyph_no_font_has_is_written_as_its_code_point(bundled_fonts_only):
    assert readable(["中文 text", "plain", "a\nb"]) == (
        ["U+4E2DU+6587 text", "plain", "a\nb"],
        ["DejaVu Sans"],
    )
    assert readable(["plain"]) == (["plain"], ["DejaVu Sans"])


def test_a_glyph_another_font_has_adds_that_font(bundled_fonts_only):
    # not the Last Resort font, whose "glyph" for any character is a box naming its block
    assert readable([f"x{STIX_ONLY}", "中"]) == ([f"x{STIX_ONLY}", "U+4E2D"], ["DejaVu Sans", "STIXGeneral"])


def test_attention_plot_labels_are_readable_and_nothing_warns(
    bundled_fonts_only, tmp_path, monkeypatch, no_glyph_warnings
):
    import matplotlib.pyplot as plt

    from lmforge.models.attention_maps import draw_attention

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    weights = torch.full((1, 1, 3, 3), 1 / 3)
    draw_attention(weights, ["中", STIX_ONLY, "t"], [(0, 0)], tmp_path / "a.png", "运行: attention")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    (figure,) = figures
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["U+4E2D", STIX_ONLY, "t"]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["U+4E2D", STIX_ONLY, "t"]
    assert figure.get_suptitle() == "U+8FD0U+884C: attention"


def test_loss_plot_title_is_readable_and_nothing_warns(
    bundled_fonts_only, tmp_path, monkeypatch, no_glyph_warnings
):
    import json

    import matplotlib.pyplot as plt

    from lmforge.train.metrics import plot_losses

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(json.dumps({"step": s, "train_loss": 3.0 - s / 10}) + "\n" for s in range(1, 5))
    )
    plot_losses(metrics, tmp_path / "loss.png", title="运行: gpt")
    assert figures[0].axes[0].get_title() == "U+8FD0U+884C: gpt"

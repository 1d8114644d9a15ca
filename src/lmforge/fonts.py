"""Text in plots that a reader can read, whatever script it is in.

matplotlib draws with one font (DejaVu Sans) unless told otherwise; a character it lacks, such as
the 中 of a Chinese prompt, comes out as an empty box with a "Glyph missing from font" warning.
``readable`` finds, among the installed fonts, ones that have the missing characters and returns
the font family list matplotlib (>= 3.6) falls back through, character by character; what no
installed font has is written as its code point instead, so the label still says which character
it was and nothing warns:

    readable(["中文", "text"])  ->  (["中文", "text"], ["DejaVu Sans", "Noto Sans CJK JP"])   # with Noto CJK
    readable(["中文", "text"])  ->  (["U+4E2DU+6587", "text"], ["DejaVu Sans"])              # without

    texts, families = readable([*labels, title])
    with matplotlib.rc_context({"font.family": families}):
        ...  # draw and save with texts
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

# fonts whose code points are not the characters they draw (TeX encodings, size variants), and
# matplotlib's Last Resort font, whose glyphs are boxes that only name a Unicode block
_NOT_TEXT_FONTS = re.compile(r"^(cm\w*10|STIXNonUnicode.*|STIXSize.*|Last Resort.*|DejaVu Math.*)$")
_LAYOUT = {"\n"}  # characters matplotlib lays out rather than draws


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read
        return frozenset()


@functools.cache
def _default_font() -> tuple[str, frozenset[int]]:
    """(family name, characters) of the font matplotlib draws text with by default."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties())
    return FT2Font(path).family_name, _charmap(path)


def _fallbacks(needed: set[int]) -> tuple[list[str], set[int]]:
    """(families that draw some of ``needed``, most characters first; the characters none draws)."""
    from matplotlib import font_manager

    fonts = sorted({(entry.name, entry.fname) for entry in font_manager.fontManager.ttflist})
    candidates = [(name, _charmap(path)) for name, path in fonts if not _NOT_TEXT_FONTS.match(name)]
    chosen: list[str] = []
    while needed:
        name, covers = max(candidates, key=lambda c: len(needed & c[1]), default=("", frozenset()))
        if not needed & covers:
            break
        chosen.append(name)
        needed = needed - covers
    return chosen, needed


def readable(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(``texts`` with every character no installed font draws written as U+XXXX, the font
    families to draw them with: matplotlib's default first, then fallbacks for the rest)."""
    default, covered = _default_font()
    needed = {ord(ch) for text in texts for ch in text if ch not in _LAYOUT} - covered
    if not needed:
        return list(texts), [default]
    families, missing = _fallbacks(needed)
    shown = ["".join(f"U+{ord(ch):04X}" if ord(ch) in missing else ch for ch in text) for text in texts]
    return shown, [default, *dict.fromkeys(families)]

"""What each flag allows, declared with the flag and checked before any work: one line naming the
flag, the value and what is allowed (``--temperature must be a finite number; got nan``).

Commands declare a rule in their signature, ``temperature: Annotated[float, Bounds(non_negative=True)]``,
and dataclass settings in their field metadata (``train/config.py``'s ``setting``);
``commands/_args.py`` checks both the same way, for flags on the command line and keys of a
``--config`` recipe alike. The fuzzing harness (``tests/cli/test_fuzz.py``) reads the same rules
to draw each flag's bad values, so a new command is fuzzed by declaring its flags.

The kinds of rule:

- ``Bounds``: a number, finite, with optional sign and range (``at_most`` doubles as a resource
  guard: the largest value that makes sense);
- ``InputPath``: a file or directory that must exist, of the right kind;
- ``OutputPath``: where a command writes; must not be an existing thing of the other kind;
- ``Text``: a string, non-empty unless declared free (a prompt may be empty);
- ``Named``: one of a set of names known only at run time (model presets, devices), with a
  did-you-mean.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.errors import UserInputError


def _number(value: float) -> str:
    # beyond 1e16 a float's digits are noise: 1e30 reads better than 1,000,000,000,000,000,019,884,...
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) <= 1e16 else f"{value:g}"


@dataclass(frozen=True)
class Bounds:
    positive: bool = False
    non_negative: bool = False
    at_most: float | None = None  # a resource guard: the largest value that makes sense
    below: float | None = None  # an exclusive upper bound: a fraction that must leave something

    def check(self, flag: str, value: object) -> None:
        """Every number must be finite; then the bounds. None (not given) and non-numbers pass."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):
            raise UserInputError(f"{flag} must be a finite number; got {value}")
        if self.positive and self.below is not None and not 0 < value < self.below:
            raise UserInputError(f"{flag} must be strictly between 0 and {_number(self.below)}; got {value}")
        if self.positive and value <= 0:
            raise UserInputError(f"{flag} must be positive; got {value}")
        if self.non_negative and value < 0:
            raise UserInputError(f"{flag} must be zero or more; got {value}")
        if self.at_most is not None and value > self.at_most:
            raise UserInputError(f"{flag} must be at most {_number(self.at_most)}; got {_number(value)}")
        if self.below is not None and value >= self.below:
            raise UserInputError(f"{flag} must be below {_number(self.below)}; got {_number(value)}")


@dataclass(frozen=True)
class InputPath:
    """A path the command reads: it must exist and be a ``kind`` ("file", "dir" or "any")."""

    kind: Literal["file", "dir", "any"]
    what: str  # how the help and the errors name it: "a run directory written by `lmforge pretrain`"
    noun: str = "directory"  # "run directory": what a file given here is not
    marker: str | None = None  # a file that marks such a directory: a file inside one names it

    def check(self, flag: str, value: object) -> None:
        if value is None:
            return
        path = Path(value)  # type: ignore[arg-type]
        if str(value) == "":
            raise UserInputError(f"{flag} is empty; give {self.what}")
        if not path.exists():
            raise UserInputError(f"{flag} {path} does not exist; give {self.what}")
        if self.kind == "dir" and not path.is_dir():
            inside = self.marker is not None and (path.parent / self.marker).is_file()
            hint = (
                f"give the {self.noun} that holds it, {flag} {path.parent}" if inside else f"give {self.what}"
            )
            raise UserInputError(f"{flag} {path} is a file, not a {self.noun}; {hint}")
        if self.kind == "file" and path.is_dir():
            raise UserInputError(f"{flag} {path} is a directory, not a file; give {self.what}")


@dataclass(frozen=True)
class OutputPath:
    """A path the command writes: a directory (``kind="dir"``) or one file. Whether an existing
    output may be replaced is the command's call (``fileio.replace_previous_output``)."""

    kind: Literal["file", "dir"]

    def check(self, flag: str, value: object) -> None:
        if value is None:
            return
        path = Path(value)  # type: ignore[arg-type]
        if str(value) == "":
            raise UserInputError(
                f"{flag} is empty; give a {'directory' if self.kind == 'dir' else 'file'} to write"
            )
        if self.kind == "dir" and path.exists() and not path.is_dir():
            raise UserInputError(f"{flag} {path} is a file; give a directory to write the output into")
        if self.kind == "file" and path.is_dir():
            raise UserInputError(f"{flag} {path} is a directory; give a file name to write")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise UserInputError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")


@dataclass(frozen=True)
class Text:
    """A string. ``free`` text (a prompt) may be anything, the empty string included."""

    free: bool = False
    what: str = "a value"

    def check(self, flag: str, value: object) -> None:
        if self.free or value is None:
            return
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, str) and not item.strip():
                raise UserInputError(f"{flag} is empty; give {self.what}")


@dataclass(frozen=True)
class Named:
    """One of the names ``names()`` lists (read when checked: presets, devices), or a form
    ``accepts`` allows (``cuda:1``)."""

    names: Callable[[], Iterable[str]]
    what: str = "name"
    accepts: Callable[[str], bool] | None = None

    def check(self, flag: str, value: object) -> None:
        if value is None or not isinstance(value, str):
            return
        known = list(self.names())
        if value in known or (self.accepts is not None and self.accepts(value)):
            return
        close = difflib.get_close_matches(value, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserInputError(
            f"{flag} {value!r} is not a known {self.what}; choose from {', '.join(known)}{hint}"
        )


_WEIGHT = re.compile(r"^(?P<path>.+):(?P<weight>[^:/\\]+)$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def split_weight(spec: str) -> tuple[str, str | None]:
    """``"a/b:0.3"`` -> ``("a/b", "0.3")``; ``"a/b"`` -> ``("a/b", None)``. A trailing ``:<number>``
    (anything Python's ``float`` reads, nan and inf included, so that they are refused as weights
    rather than taken for paths) is a weight; a directory whose name ends so is written ``run:3/``."""
    match = _WEIGHT.match(spec)
    if match is None:
        return spec, None
    try:
        float(match["weight"])
    except ValueError:
        return spec, None
    return match["path"], match["weight"]


@dataclass(frozen=True)
class MixturePaths(InputPath):
    """Directories, each optionally followed by ``:WEIGHT`` (``--data a/:0.7 b/:0.3``): the path of
    each entry must be a directory; the weights are checked where the mixture is read."""

    def check(self, flag: str, value: object) -> None:
        if value is None:
            return
        for item in [value] if isinstance(value, (str, Path)) else value:  # type: ignore[union-attr]
            path, _ = split_weight(str(item))
            if _SCHEME.match(path) and not Path(path).exists() and len(path.split(":", 1)[0]) > 1:
                raise UserInputError(
                    f"{flag} {path} is a text source, not a prepared dataset; a mixture mixes datasets that "
                    f"share one tokenizer: prepare it first (lmforge prepare --data {path} --tokenizer "
                    "OTHER_DATASET/tokenizer --out DIR) and give DIR:WEIGHT"
                )
            super().check(flag, path)


Rule = Bounds | InputPath | OutputPath | Text | Named

FINITE = Bounds()
POSITIVE = Bounds(positive=True)
NON_NEGATIVE = Bounds(non_negative=True)
PROBABILITY = Bounds(non_negative=True, at_most=1.0)
SEED = Bounds(non_negative=True, at_most=2**32 - 1)  # what numpy's and every RNG's seeding accepts
FREE_TEXT = Text(free=True)
RUN_DIR = InputPath("dir", "a run directory written by `lmforge pretrain`", "run directory", "config.json")
TOKENIZER_DIR = InputPath("dir", "a tokenizer directory written by `lmforge tokenizer train`")
OUT_DIR = OutputPath("dir")


def _device_form(value: str) -> bool:
    kind, _, index = value.partition(":")
    return kind in ("cuda", "mps", "xpu") and (index == "" or index.isdigit())


DEVICE = Named(lambda: ("auto", "cpu", "cuda", "mps"), "device (cuda:N picks a GPU)", _device_form)
SOURCES = Text(
    what="a text source: a file, a directory, a glob, a corpus name, builtin:NAME, a URL or hf:NAME"
)
PREPARED_DIR = InputPath("dir", "a dataset directory written by `lmforge prepare`")
PREPARED_MIXTURE = MixturePaths(
    "dir", "a dataset directory written by `lmforge prepare` (or several, each DIR:WEIGHT)"
)

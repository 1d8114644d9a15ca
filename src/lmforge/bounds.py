"""Bounds on a numeric flag, checked before any work: one line naming the flag, the value and what
is allowed (``--temperature must be a finite number; got nan``).

Commands declare them in their signature, ``temperature: Annotated[float, Bounds(non_negative=True)]``,
and dataclass settings in their field metadata (``train/config.py``); ``commands/_args.py`` checks
both the same way, for flags on the command line and keys of a ``--config`` recipe alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmforge.errors import UserInputError


@dataclass(frozen=True)
class Bounds:
    positive: bool = False
    non_negative: bool = False
    at_most: float | None = None  # a resource guard: the largest value that makes sense

    def check(self, flag: str, value: object) -> None:
        """Every number must be finite; then the bounds. None (not given) and non-numbers pass."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):
            raise UserInputError(f"{flag} must be a finite number; got {value}")
        if self.positive and value <= 0:
            raise UserInputError(f"{flag} must be positive; got {value}")
        if self.non_negative and value < 0:
            raise UserInputError(f"{flag} must be zero or more; got {value}")
        if self.at_most is not None and value > self.at_most:
            raise UserInputError(f"{flag} must be at most {self.at_most:,.0f}; got {value:,}")


FINITE = Bounds()
POSITIVE = Bounds(positive=True)
NON_NEGATIVE = Bounds(non_negative=True)

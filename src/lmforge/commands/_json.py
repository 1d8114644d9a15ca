"""``--json`` output that every JSON parser reads: no NaN or Infinity, which ``json.dumps`` writes
by default and ``JSON.parse`` (and strict parsers) refuse.

A number that is not finite (a loss that diverged, the perplexity of an unsmoothed n-gram model on
an unseen word) becomes ``null``, and the top-level ``"non_finite"`` lists where, with the value it
had: ``{"val_loss": null, "non_finite": {"val_loss": "inf"}}``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _clean(value: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(value, dict):
        return {k: _clean(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def to_json(obj: dict[str, Any]) -> str:
    """One line of strict JSON for ``obj`` (non-finite numbers as null, listed under non_finite)."""
    found: dict[str, str] = {}
    cleaned = _clean(obj, "", found)
    if found:
        cleaned["non_finite"] = found
    return json.dumps(cleaned, ensure_ascii=False, allow_nan=False)


def print_json(obj: dict[str, Any]) -> None:
    print(to_json(obj))

"""Stop strings: end a continuation when its decoded text contains one, and cut the text before it.

    stop = StopStrings(tokenizer, ["\\n\\n", "THE END"])
    generated ids -> "Exeunt.\\n\\nACT II" contains "\\n\\n" -> the row is finished
    stop.cut(ids) -> (ids of "Exeunt.", "Exeunt.", True)

Stop strings are matched on text, not ids, because one string has many tokenizations ("\\n\\n" may be
one token or two). Each step decodes only the tail of a row: a stop string of b UTF-8 bytes spans
at most b tokens (every token stands for at least one byte or character), so the last b + 2 tokens
hold any match that the newest token completed, and checking costs the same at token 10 and token
10,000. The final cut decodes the whole continuation once; the ids kept are the longest prefix
whose text lies before the stop string.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StopStrings:
    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.window = max(len(s.encode("utf-8")) for s in self.stops) + 2 if self.stops else 0

    def __bool__(self) -> bool:
        return bool(self.stops)

    def hits(self, new_ids: torch.Tensor, check: torch.Tensor) -> torch.Tensor:
        """(N,) True where a row in ``check`` (N,) bool has a stop string in its newest tokens.

        new_ids (N, t): the tokens generated so far."""
        hit = torch.zeros_like(check)
        rows = check.nonzero().flatten().tolist()
        if not rows:
            return hit
        tails = new_ids[rows, -self.window :].tolist()
        for row, tail in zip(rows, tails):
            text = self.tokenizer.decode(tail)
            if any(stop in text for stop in self.stops):
                hit[row] = True
        return hit

    def cut(self, ids: Sequence[int]) -> tuple[list[int], str, bool]:
        """(ids kept, text before the first stop string, whether one was found)."""
        ids = list(ids)
        text = self.tokenizer.decode(ids)
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if not found:
            return ids, text, False
        text = text[: min(found)]
        keep = len(ids)
        while keep > 0 and not text.startswith(self.tokenizer.decode(ids[:keep])):
            keep -= 1
        return ids[:keep], text, True

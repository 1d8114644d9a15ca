"""Stop strings: matched on decoded text, the continuation cut before them, whatever the tokenization."""

from __future__ import annotations

import pytest
import torch

from lmforge.generate import GenerationConfig, generate
from lmforge.generate.stopping import StopStrings
from lmforge.tokenizers import train_tokenizer

TEXT = "hello world\n\nTHE END."


class Scripted:
    """A step model that always predicts the next token of a script (then repeats its last)."""

    block_size = None

    def __init__(self, script: list[int], vocab_size: int) -> None:
        self.script, self.vocab_size = script, vocab_size

    def _logits(self, positions: torch.Tensor) -> torch.Tensor:
        index = torch.tensor(self.script)[positions.clamp(max=len(self.script) - 1)]
        return torch.nn.functional.one_hot(index, self.vocab_size).float() * 10

    def start(self, input_ids, attention_mask, *, max_new_tokens, copies=1):
        position = torch.zeros(input_ids.shape[0] * copies, dtype=torch.long)
        return self._logits(position), position

    def step(self, next_ids, position):
        position = position + 1
        return self._logits(position), position

    def reorder(self, position, index):
        return position[index]


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", [TEXT])


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_stops_at_the_string_and_cuts_before_it(char_tokenizer, strategy):
    model = Scripted(char_tokenizer.encode(TEXT), char_tokenizer.vocab_size)
    config = GenerationConfig(strategy=strategy, max_new_tokens=30, stop=("\n\n",), num_beams=2)
    (result,) = generate(model, [[1]], config, tokenizer=char_tokenizer, generator=torch.Generator())[0]
    assert result.text == "hello world" and result.finish == "stop"
    assert result.ids == char_tokenizer.encode("hello world")


def test_the_first_of_several_stop_strings_wins(char_tokenizer):
    model = Scripted(char_tokenizer.encode(TEXT), char_tokenizer.vocab_size)
    config = GenerationConfig(strategy="greedy", max_new_tokens=30, stop=("END", "wor"))
    (result,) = generate(model, [[1]], config, tokenizer=char_tokenizer)[0]
    assert result.text == "hello "


def test_a_stop_string_that_never_occurs_runs_to_the_limit(char_tokenizer):
    model = Scripted(char_tokenizer.encode(TEXT), char_tokenizer.vocab_size)
    config = GenerationConfig(strategy="greedy", max_new_tokens=8, stop=("zebra",))
    (result,) = generate(model, [[1]], config, tokenizer=char_tokenizer)[0]
    assert result.text == "hello wo" and result.finish == "length" and len(result.ids) == 8


def test_cut_keeps_the_ids_whose_text_lies_before_the_stop():
    bpe = train_tokenizer("bpe", ["the end. the end. hello world\n\n"] * 50, vocab_size=300)
    ids = bpe.encode("hello the end. more")  # ... 'Ġthe', 'Ġend', '.' ...
    stop = StopStrings(bpe, ["e en"])  # starts inside the token 'Ġthe'
    kept, text, found = stop.cut(ids)
    assert found and text == "hello th"
    assert bpe.decode(kept) == "hello" and text.startswith(bpe.decode(kept))
    assert stop.cut(ids[:2]) == (ids[:2], "hello", False)


def test_hits_checks_only_the_tail_window():
    tokenizer = train_tokenizer("char", ["abcxyz"])
    stop = StopStrings(tokenizer, ["xy"])
    rows = torch.tensor([tokenizer.encode("abcxy"), tokenizer.encode("xyabc"), tokenizer.encode("aaaxy")])
    assert stop.window == 4  # 2 bytes + 2
    hit = stop.hits(rows, torch.tensor([True, True, False]))
    # row 1's match left the window long ago (it would have stopped then); row 2 was not asked
    assert hit.tolist() == [True, False, False]

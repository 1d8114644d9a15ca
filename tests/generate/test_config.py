"""Settings that cannot work are refused with the flag to fix; the rest choose the right processors."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.generate import GenerationConfig
from lmforge.generate.processors import MinNewTokens, RepetitionPenalty, Temperature, TopK, TopP


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": -1}, "--temperature"),
        ({"top_k": -1}, "--top-k"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": 1.01}, "--top-p"),
        ({"repetition_penalty": 0.0}, "--repetition-penalty"),
        ({"strategy": "beam", "num_beams": 0}, "--num-beams"),
        ({"strategy": "beam", "num_beams": 2, "num_return_sequences": 3}, "--num-samples"),
        ({"strategy": "greedy", "num_return_sequences": 2}, "--num-samples 1"),
        ({"max_new_tokens": -1}, "--max-new-tokens"),
        ({"stop": ("",)}, "--stop"),
        ({"strategy": "nucleus"}, "strategy"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(UserInputError, match=message):
        GenerationConfig(**settings)


def test_sampling_settings_become_processors_in_hf_order():
    config = GenerationConfig(
        temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2, min_new_tokens=3, eos_id=0
    )
    assert config.processors(prompt_length=4) == [
        RepetitionPenalty(1.2),
        MinNewTokens(4, 3, 0),
        Temperature(0.7),
        TopK(5),
        TopP(0.9),
    ]


def test_temperature_zero_is_greedy_and_drops_the_warpers():
    config = GenerationConfig(temperature=0, top_k=5)
    assert config.greedy and config.processors(prompt_length=4) == []

"""``lmforge reward``: score responses to a prompt with a trained reward model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from lmforge.bounds import DEVICE, FREE_TEXT, RUN_DIR, Text
from lmforge.commands._json import print_json


def reward(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    prompt: Annotated[str, FREE_TEXT],
    response: Annotated[list[str], Text(free=True, what="a response to score")],
    device: Annotated[str, DEVICE] = "auto",
    as_json: bool = False,
) -> dict:
    """The reward a trained reward model gives each response to a prompt, best first.

    The prompt and each response are rendered by the run's chat template as a one-turn chat (user,
    then assistant), as `lmforge align reward` trained on them. Only differences between rewards of
    the same model mean anything: P(a preferred to b) = sigmoid(r_a - r_b), which is printed for
    each response against the best one.

    Args:
        checkpoint: a run written by `lmforge align reward`.
        prompt: the prompt, as a user would type it.
        response: one or more responses to score (several may follow one --response).
        device: auto, cpu, cuda.

    Examples:
        lmforge reward --checkpoint my_reward_model --prompt 'Explain what `len(obj)` does.' --response "Return the number of items in a container." "Sleep for a while."
        lmforge reward --checkpoint my_reward_model --prompt 'Explain what `abs(x)` does.' --response "Return the absolute value of the argument." --json
    """
    import math

    from lmforge.align.reward_model import load_reward_model

    model = load_reward_model(checkpoint, device=device)
    rewards = model.score([prompt] * len(response), list(response))
    ranked = sorted(zip(response, rewards), key=lambda pair: -pair[1])
    best = ranked[0][1]
    result = {
        "prompt": prompt,
        "responses": [
            {"response": text, "reward": value, "p_preferred_to_best": 1 / (1 + math.exp(best - value))}
            for text, value in ranked
        ],
    }
    if as_json:
        print_json(result)
        return result
    for entry in result["responses"]:
        text = entry["response"]
        shown = text if len(text) <= 70 else text[:67] + "..."
        versus = "" if entry["reward"] == best else f"   P(over best) {entry['p_preferred_to_best']:.1%}"
        print(f"{entry['reward']:+9.4f}  {shown}{versus}")
    return result

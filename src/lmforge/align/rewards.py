"""``--reward``: the function that scores each sampled response, from a spec a user types.

    resolve_reward("builtin:arith")            -> lmforge.data.instruct.arith_reward (1.0 for the right sum)
    resolve_reward("mypkg.rewards:brevity")    -> mypkg.rewards.brevity, imported
    resolve_reward("rewards.py:brevity")       -> the function ``brevity`` of that file
    resolve_reward("runs/rm")                  -> a trained reward model (lmforge align reward) as a function

A reward function takes (prompts, completions), two lists of decoded text, and returns one number
per completion. ``score`` calls it and checks what comes back, so a user's function that returns the
wrong number of values, or something that is not a number, is one clear line, not a shape error
deep inside the loss.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.errors import UserInputError

RewardFunction = Callable[[list[str], list[str]], list[float]]
BUILTIN_REWARDS = {"builtin:arith": ("lmforge.data.instruct", "arith_reward")}
_FORMS = (
    "a run directory of `lmforge align reward`, module:function, path/to/file.py:function or builtin:arith"
)


def resolve_reward(spec: str, device: str | torch.device = "cpu") -> RewardFunction:
    """The reward function ``spec`` names (see the module docstring for the forms)."""
    if spec in BUILTIN_REWARDS:
        module, name = BUILTIN_REWARDS[spec]
        return getattr(importlib.import_module(module), name)
    if spec.startswith("builtin:"):
        raise UserInputError(f"unknown built-in reward {spec!r}; the built-in one is builtin:arith")
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserInputError(f"--reward {spec} is a directory but not a run directory; give {_FORMS}")
        from lmforge.align.reward_model import reward_function_from_run

        return reward_function_from_run(path, device=str(device))
    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise UserInputError(f"--reward {spec!r} is not a reward: give {_FORMS}")
    module = _import(module_name, spec)
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        raise UserInputError(
            f"--reward {spec}: {module_name} has no function {function_name!r}"
            + (" (it is not callable)" if function is not None else "")
        )
    return function


def _import(module_name: str, spec: str):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UserInputError(f"--reward {spec}: {path} does not exist")
        name = f"lmforge_reward_{path.stem}"
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - the user's file: say which and why
            raise UserInputError(
                f"--reward {spec}: {path} failed to import ({type(error).__name__}: {error})"
            ) from None
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise UserInputError(
            f"--reward {spec}: cannot import {module_name!r} ({error}); is it on PYTHONPATH? "
            "(or give the file: path/to/file.py:function)"
        ) from None


def score(
    reward: RewardFunction, prompts: list[str], completions: list[str], name: str = "--reward"
) -> torch.Tensor:
    """The rewards (N,) float32 of ``completions``, checked: one finite number per completion."""
    values = reward(list(prompts), list(completions))
    if isinstance(values, torch.Tensor):
        values = values.detach().flatten().tolist()
    try:
        values = list(values)
    except TypeError:
        raise UserInputError(
            f"{name} returned {type(values).__name__}, not a list of numbers (one per completion)"
        ) from None
    if len(values) != len(completions):
        raise UserInputError(
            f"{name} returned {len(values)} values for {len(completions)} completions; it must return one "
            "number per completion"
        )
    numbers = []
    for value in values:
        if isinstance(value, str) or not hasattr(value, "__float__"):
            raise UserInputError(
                f"{name} returned {value!r} ({type(value).__name__}); rewards must be numbers"
            )
        number = float(value)
        if not math.isfinite(number):
            raise UserInputError(f"{name} returned {number}; rewards must be finite numbers")
        numbers.append(number)
    return torch.tensor(numbers, dtype=torch.float32)

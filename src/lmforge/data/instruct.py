"""Built-in post-training data every Python installation can make: instructions, preferences and
arithmetic with a checker, so SFT, a reward model, DPO, PPO and GRPO run without a download.

    builtin:stdlib-instruct   {"prompt": "Explain what `json.dumps(obj, *, skipkeys=False, ...)` does.",
                               "completion": "Serialize ``obj`` to a JSON formatted ``str``."}
    builtin:stdlib-prefs      {"prompt": <the same>, "chosen": <its own summary>,
                               "rejected": <another function's summary>}
    builtin:arith             {"prompt": "12+35=", "answer": "47"}      (arith_reward checks answers)

The instructions pair each documented public function of the standard library (the functions
``builtin:stdlib-signatures`` pairs, data/seq2seq_tasks.py) with the first paragraph of its
docstring. Whole modules go to one split (a stable hash of the module name, about one in ten to
validation), so validation asks about modules the model never saw. Preferences reuse the
instructions: the chosen answer is the function's own summary, the rejected one the summary of a
function drawn (fixed seed) from the same split: a reward model must learn which description fits
the signature, not which text reads better.

Arithmetic draws ``a+b=`` with ``digits``-digit operands from ``random.Random(seed)``; validation
uses pairs the training split does not contain. Options follow the name as in the seq2seq tasks::

    builtin:arith?digits=1,size=500      one-digit sums, 500 prompts per split
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence

from lmforge.data.seq2seq_tasks import cached_triples, extract_stdlib_signatures
from lmforge.errors import DataError

INSTRUCT = "builtin:stdlib-instruct"
PREFS = "builtin:stdlib-prefs"
ARITH = "builtin:arith"
NAMES = (INSTRUCT, PREFS, ARITH)
SPLITS = ("train", "val")
VAL_BUCKETS = 10  # one module in VAL_BUCKETS (by hash) is held out
MAX_SIGNATURE_CHARS = 160  # longer signatures make prompts that are mostly argument lists
MAX_ANSWER_CHARS = 400  # a first paragraph longer than this is a page, not a summary
ARITH_DEFAULTS = {"digits": 2, "size": 2000, "seed": 0}
ARITH_LIMITS = {"digits": (1, 6), "size": (1, 1_000_000), "seed": (0, 2**31 - 1)}
_SUM = re.compile(r"(\d+)\s*\+\s*(\d+)\s*=")
_LEADING_INTEGER = re.compile(r"\s*(-?\d+)")


def first_paragraph(docstring: str) -> str:
    """The docstring's text up to its first blank line, on one line ("" when too long to be a summary)."""
    lines = []
    for line in docstring.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    text = " ".join(lines)
    return text if len(text) <= MAX_ANSWER_CHARS else ""


def _extract() -> list[tuple[str, str, str]]:
    return extract_stdlib_signatures(summary=first_paragraph)


def split_of(module: str) -> str:
    """A module's split, stable across machines and Python runs (crc32, not ``hash``)."""
    return "val" if zlib.crc32(module.encode("utf-8")) % VAL_BUCKETS == 0 else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def instruct_examples(split: str) -> list[dict[str, str]]:
    """builtin:stdlib-instruct rows of one split: prompt, completion and the module they come from."""
    _check_split(split)
    rows, seen = [], set()
    for module, signature, paragraph in cached_triples("stdlib-instruct", _extract):
        if split_of(module) != split or len(signature) > MAX_SIGNATURE_CHARS:
            continue
        prompt = f"Explain what `{signature}` does."
        if prompt in seen:  # a method overridden with the same signature and no new module
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "completion": paragraph, "module": module})
    if not rows:
        raise DataError(f"{INSTRUCT} has no {split} examples on this Python")
    return rows


def preference_examples(split: str, seed: int = 0) -> list[dict[str, str]]:
    """builtin:stdlib-prefs rows of one split: each instruction with its own summary (chosen) and the
    summary of another function of the same split (rejected), never an identical text."""
    rows = instruct_examples(split)
    answers = [row["completion"] for row in rows]
    rng = random.Random(seed)
    pairs = []
    for row in rows:
        for _ in range(20):  # a handful of functions share a summary; redraw until the texts differ
            rejected = answers[rng.randrange(len(answers))]
            if rejected != row["completion"]:
                pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected})
                break
    return pairs


def parse_options(
    spec: str, name: str, defaults: dict[str, int], limits: dict[str, tuple[int, int]]
) -> dict[str, int]:
    """``name?key=value,key=value`` -> the options (defaults for the rest); one line for a bad one."""
    options = dict(defaults)
    _, _, query = spec.partition("?")
    for item in filter(None, re.split(r"[,&]", query)):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise DataError(f"{name}: unknown option {key!r}; the options are {', '.join(defaults)}")
        low, high = limits[key]
        if not value.strip().isdigit() or not low <= int(value) <= high:
            raise DataError(f"{name}: {key} must be a whole number from {low} to {high}, not {value!r}")
        options[key] = int(value)
    return options


def arith_examples(split: str, size: int = 2000, seed: int = 0, digits: int = 2) -> list[dict[str, str]]:
    """``size`` distinct "a+b=" prompts with their answers; val never repeats a train prompt."""
    _check_split(split)
    high = 10**digits
    possible = high * high
    train_size = min(size, possible)
    rng = random.Random(seed)
    # one draw for both splits: train takes the first size, val the next (distinct) ones
    wanted = train_size + min(size, max(possible - train_size, 0))
    order = rng.sample(range(possible), wanted)
    chosen = order[:train_size] if split == "train" else order[train_size:]
    if not chosen:
        raise DataError(f"{ARITH}: {digits}-digit sums leave no {split} prompts; ask for more digits")
    return [{"prompt": f"{n // high}+{n % high}=", "answer": str(n // high + n % high)} for n in chosen]


def arith_reward(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """1.0 where the completion starts with the sum the prompt asks for (its last ``a+b=``), else 0.0.

    The prompt may be wrapped in a chat template; only its last sum counts. Leading spaces are
    allowed, and anything after the number is ignored ("47 because..." is right, "4 7" is not).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        sums = _SUM.findall(prompt)
        if not sums:
            raise DataError(f"arith_reward: the prompt {prompt[-60:]!r} asks for no sum like 12+35=")
        a, b = sums[-1]
        answer = _LEADING_INTEGER.match(completion)
        rewards.append(1.0 if answer is not None and int(answer.group(1)) == int(a) + int(b) else 0.0)
    return rewards


def is_builtin(spec: str) -> bool:
    return spec.partition("?")[0] in NAMES


def builtin_rows(spec: str, split: str) -> list[dict[str, str]]:
    """The rows of a built-in post-training source (``builtin:arith?digits=1`` options included)."""
    name = spec.partition("?")[0]
    if name == ARITH:
        return arith_examples(split, **parse_options(spec, ARITH, ARITH_DEFAULTS, ARITH_LIMITS))
    if "?" in spec:
        raise DataError(f"{name} takes no options")
    if name == INSTRUCT:
        return instruct_examples(split)
    if name == PREFS:
        return preference_examples(split)
    raise DataError(
        f"unknown built-in post-training data {spec!r}; the built-in sources are {', '.join(NAMES)}"
    )

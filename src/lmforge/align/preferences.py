"""Preference pairs: read them, render their prompts as chats, and batch them as token rows.

    prefs.jsonl                  one object per line: {"prompt": "...", "chosen": "...", "rejected": "..."}
    builtin:stdlib-prefs         the built-in pairs (data/instruct.py); "@val" picks its held-out split

Each pair becomes two rows that share the prompt, rendered exactly as ``finetune sft`` trains a
one-turn chat (``finetune/chat_data.prompt_response_ids``: user = prompt, assistant = response, by
the run's chat template), so SFT, chat, the reward model, DPO and PPO all see the same tokens:

    prompt "Explain what `len(obj)` does."   chosen "Return the number of items."   rejected "Sleep."
    -> "User: Explain what `len(obj)` does.\\n\\nAssistant:" + " Return the number of items.\\n\\n" + <|endoftext|>
       "User: Explain what `len(obj)` does.\\n\\nAssistant:" + " Sleep.\\n\\n" + <|endoftext|>
       (the default template; the response ends with the template's end-of-turn token, else end-of-text)

The prompt and the response are encoded apart, so no token straddles them (TRL does the same).
A completion a policy generated (PPO's, GRPO's) is already in that form: ``completion_ids`` encodes
its text as it is and adds end-of-text, which gives the same ids for the same response.

A batch of B pairs holds 2B right-padded rows, **the B chosen rows first, then the B rejected
ones** (TRL's layout: ``torch.chunk(x, 2)`` splits them), each with

    input_ids       (2B, T)  prompt ids + response ids + end-of-text, then padding
    attention_mask  (2B, T)  1 on real tokens
    response_mask   (2B, T)  1 on the response tokens and its end-of-text: the ones whose log-probs count

Too long for the context: the response is cut at its end (its end-of-text too), the prompt kept
whole. A pair whose prompt leaves no room for one response token is left out of training (and
counted: the recipes print how many); a source where no pair fits is refused with one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.data.batching import EpochOrder, padded_width
from lmforge.errors import CheckpointError, DataError

BUILTIN_PREFS = "builtin:stdlib-prefs"
FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]  # response ids, end-of-text included unless cut
    rejected: list[int]


def is_builtin(source: str) -> bool:
    return str(source).split("@")[0] == BUILTIN_PREFS


def read_preferences(source: str | Path) -> list[PreferencePair]:
    """Every pair of ``source``; one clear ``DataError`` for the first thing wrong in it."""
    text = str(source)
    if is_builtin(text):
        return _builtin(text)
    path = Path(source)
    if not path.is_file():
        raise DataError(
            f"{path} does not exist or is not a file; give a .jsonl file of preference pairs "
            f'({{"prompt": ..., "chosen": ..., "rejected": ...}} per line) or {BUILTIN_PREFS}'
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            pairs.append(_pair(line, f"{path}:{number}"))
    if not pairs:
        raise DataError(f'{path} holds no pairs; give one per line ({{"prompt", "chosen", "rejected"}})')
    return pairs


def _pair(line: str, at: str) -> PreferencePair:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{at}: not a JSON object ({error.msg}); a .jsonl file holds one object per line"
        ) from None
    if not isinstance(row, dict):
        raise DataError(f"{at}: expected an object with {', '.join(FIELDS)}, got {row!r:.60}")
    values = []
    for name in FIELDS:
        value = row.get(name)
        if not isinstance(value, str):
            present = ", ".join(map(repr, row)) or "none"
            what = "no" if value is None else f"a {type(value).__name__} in its"
            raise DataError(
                f"{at}: {what} {name!r} field (fields: {present}); each pair needs the texts "
                f"{', '.join(map(repr, FIELDS))}"
            )
        values.append(value)
    if not values[1] and not values[2]:
        raise DataError(f"{at}: both responses are empty; a preference needs something to prefer")
    return PreferencePair(*values)


def _builtin(source: str) -> list[PreferencePair]:
    from lmforge.data.instruct import preference_examples

    name, _, split = source.partition("@")
    split = split or "train"
    if split not in ("train", "val"):
        raise DataError(f"{source}: no split {split!r}; {name} has {name}@train and {name}@val")
    return [
        PreferencePair(row["prompt"], row["chosen"], row["rejected"]) for row in preference_examples(split)
    ]


def validation_source(train: str, val: str | None) -> str:
    """``val``, or the built-in pairs' own held-out split; a file needs --val (one line why)."""
    if val is not None:
        return val
    if is_builtin(train):
        return f"{BUILTIN_PREFS}@val"
    from lmforge.errors import UserInputError

    raise UserInputError(
        f"give --val: a .jsonl file of pairs to evaluate on ({train} has no split of its own)"
    )


def check_causal_family(family: str, what: str) -> None:
    """Refuse a family that is not a GPT-like causal Transformer (decoded through a KV cache)."""
    from lmforge.models.registry import FAMILIES, model_class

    cls = model_class(family)
    if getattr(cls, "lm_kind", None) != "causal" or getattr(cls, "decoding", None) != "kv_cache":
        able = [
            n
            for n in FAMILIES
            if model_class(n).lm_kind == "causal" and model_class(n).decoding == "kv_cache"
        ]
        raise CheckpointError(
            f"{what} needs a causal Transformer run ({', '.join(able)}: lmforge pretrain --model gpt-nano, "
            f"or convert --from-hf of a GPT-2 or Llama), and this run holds a {family} model"
        )


class PairEncoder:
    """Turns prompts and responses into ids the way every align/ recipe and the reward model read them."""

    def __init__(self, tokenizer, tokenizer_dir: str | Path, limit: int) -> None:
        from lmforge.tokenizers.chat import ChatTemplate

        self.tokenizer = tokenizer
        self.template = ChatTemplate.for_tokenizer(tokenizer_dir, tokenizer)
        self.limit = limit
        end = tokenizer.document_separator_id
        self.end = [] if end is None else [end]

    def prompt_ids(self, prompt: str) -> list[int]:
        from lmforge.tokenizers.chat import encode_chat

        text = self.template.render([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return encode_chat(self.tokenizer, text)

    def pair_ids(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids with its end token) of a one-turn chat, as SFT trains it."""
        from lmforge.finetune.chat_data import prompt_response_ids

        try:
            return prompt_response_ids(self.tokenizer, self.template, prompt, response)
        except ValueError:  # the template rendered the response as nothing at all
            raise DataError(f"the chat template renders the response {response!r:.40} as no text") from None

    def completion_ids(self, completion: str) -> list[int]:
        """A generated continuation's ids as it stands after the prompt, then end-of-text."""
        from lmforge.tokenizers.chat import encode_chat

        return encode_chat(self.tokenizer, completion) + self.end

    def fit(self, prompt: list[int], response: list[int], at: str) -> tuple[list[int], bool]:
        """``response`` cut to the room the prompt leaves in the context; (ids, was it cut)."""
        room = self.limit - len(prompt)
        if room < 1:
            raise DataError(
                f"{at}: the prompt is {len(prompt)} tokens, and the model's context is {self.limit}: no room "
                "for a response; shorten the prompt or drop the pair"
            )
        return response[:room], len(response) > room

    def encode(self, pairs: Sequence[PreferencePair], where: str) -> EncodedSplit:
        """The pairs whose prompts fit, their responses cut to the context where they must."""
        encoded, cut, dropped, first_dropped = [], 0, 0, ""
        for index, pair in enumerate(pairs, start=1):
            prompt, chosen_ids = self.pair_ids(pair.prompt, pair.chosen)
            if len(prompt) >= self.limit:
                dropped += 1
                first_dropped = first_dropped or f"pair {index}'s prompt is {len(prompt)} tokens"
                continue
            at = f"{where} pair {index}"
            chosen, cut_chosen = self.fit(prompt, chosen_ids, at)
            rejected, cut_rejected = self.fit(prompt, self.pair_ids(pair.prompt, pair.rejected)[1], at)
            if not chosen or not rejected:
                raise DataError(f"{at}: a response encodes to no tokens and the tokenizer has no end-of-text")
            encoded.append(EncodedPair(prompt, chosen, rejected))
            cut += cut_chosen + cut_rejected
        if not encoded:
            raise DataError(
                f"{where} no pair fits the model's context of {self.limit} tokens ({first_dropped}, with no room "
                "left for a response); shorten the prompts or use a model with a longer context"
            )
        return EncodedSplit(encoded, cut, dropped)


@dataclass
class EncodedSplit:
    pairs: list[EncodedPair]
    cut: int  # responses cut to the context
    dropped: int  # pairs left out: their prompt alone fills the context


@dataclass
class PairData:
    """Both splits of a recipe's pairs, encoded for one run's tokenizer and context."""

    tokenizer: Any
    train: EncodedSplit
    val: EncodedSplit
    train_source: str
    val_source: str

    def describe(self, limit: int) -> list[str]:
        lines = [
            f"pairs: {len(self.train.pairs):,} training ({self.train_source}), {len(self.val.pairs):,} held out "
            f"({self.val_source})"
        ]
        cut, dropped = self.train.cut + self.val.cut, self.train.dropped + self.val.dropped
        if cut:
            lines.append(f"{cut:,} responses cut to the context of {limit} tokens (their ends are not read)")
        if dropped:
            lines.append(
                f"{dropped:,} pairs left out: their prompt alone fills the context of {limit} tokens"
            )
        return lines


def load_pairs(run, train: str, val: str | None, limit: int) -> PairData:
    """Read and encode both splits with ``run``'s tokenizer and chat template."""
    tokenizer = run.load_tokenizer()
    encoder = PairEncoder(tokenizer, run.tokenizer_dir, limit)
    val = validation_source(train, val)
    return PairData(
        tokenizer,
        encoder.encode(read_preferences(train), f"{train}:"),
        encoder.encode(read_preferences(val), f"{val}:"),
        str(train),
        val,
    )


def collate_rows(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int, context: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded (prompt, response) rows in the align/ layout (module docstring); with
    ``context``, as wide as the longest row rounded up to a multiple of 16 within it
    (``data/batching.padded_width``: bf16's compiled matmul shapes repeat)."""
    width = padded_width(max(len(p) + len(r) for p, r in rows), context)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width), dtype=torch.long)
    for index, (prompt, reply) in enumerate(rows):
        length = len(prompt) + len(reply)
        ids[index, :length] = torch.tensor(prompt + reply)
        mask[index, :length] = 1
        response[index, len(prompt) : length] = 1
    return {"input_ids": ids, "attention_mask": mask, "response_mask": response}


def collate_pairs(
    pairs: Sequence[EncodedPair], pad_id: int, context: int | None = None
) -> dict[str, torch.Tensor]:
    """2B rows: the chosen responses of the B pairs, then their rejected ones."""
    rows = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    return collate_rows(rows, pad_id, context)


class PairBatches:
    """Epochs of the pairs in a seeded random order, ``batch_size`` pairs (2B rows) at a time.

    ``extras`` are per-pair tensors (N,) put in each batch under their name, indexed like the pairs
    (DPO's cached reference log-probabilities). The state (epoch, position) resumes the order exactly:
    every epoch's permutation is drawn from (seed, epoch).
    """

    def __init__(
        self,
        pairs: Sequence[EncodedPair],
        batch_size: int,
        pad_id: int,
        seed: int,
        extras: Mapping[str, torch.Tensor] | None = None,
        context: int | None = None,
    ) -> None:
        self.pairs, self.batch_size, self.pad_id, self.seed = list(pairs), batch_size, pad_id, seed
        self.extras, self.context = dict(extras or {}), context
        self.order = EpochOrder(len(self.pairs), seed)

    def next_batch(self) -> dict[str, torch.Tensor]:
        chosen = self.order.take(self.batch_size)
        batch = collate_pairs([self.pairs[i] for i in chosen], self.pad_id, self.context)
        index = torch.tensor(chosen)
        for name, values in self.extras.items():
            batch[name] = values[index]
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


def in_batches(pairs: Sequence[EncodedPair], batch_size: int):
    """``pairs`` in order, ``batch_size`` at a time (evaluation and the reference pass)."""
    for start in range(0, len(pairs), batch_size):
        yield pairs[start : start + batch_size]

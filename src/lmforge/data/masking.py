"""Masked-LM inputs for BERT-style pretraining (Devlin et al. 2019, section 3.1).

Choose 15% of the ordinary tokens; of those, 80% become [MASK], 10% a random ordinary token and
10% stay as they are. The model must predict the original token at every chosen position, and
only there:

    [CLS] the cat sat [SEP] [PAD]          suppose "cat" and "sat" are chosen,
    -> [CLS] the [MASK] sat [SEP] [PAD]    "cat" -> [MASK] (the 80% case), "sat" kept (a 10% case)
       labels  -100 -100 cat sat -100 -100

Special tokens and padding are never chosen. The random and unchanged cases stop the model from
learning that only [MASK] positions matter, since fine-tuning inputs have no [MASK] at all.
Same semantics as Hugging Face's ``DataCollatorForLanguageModeling``, except that random
replacements come from the non-special vocabulary only (HF may put a [CLS] or [PAD] mid-sentence)
and every draw comes from the ``torch.Generator`` passed in.

Pretraining reads a prepared token stream, documents packed one after another with [SEP] between
them (what ``prepare`` writes for a WordPiece tokenizer), as RoBERTa's full-sentence inputs do:

    stream  ... fox . [SEP] a new document begins here [SEP] ...
    window of block_size - 2 tokens, wrapped:  [CLS] . [SEP] a new document begins [SEP]
    -> masked: [CLS] . [SEP] a [MASK] document begins [SEP],  labels -100 ... new ... -100

``MaskedWindowSampler`` draws such windows at random starts for training; ``masked_eval_batches``
cuts the validation split into consecutive windows masked by a fixed seed, the same masking for
every evaluation of every run, so masked-token losses and accuracies compare between runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge.data.batching import IGNORE_INDEX, Batch, _check_tokens, _to_device, random_windows
from lmforge.errors import TokenizerError, UserInputError

if TYPE_CHECKING:  # only the interface is used; importing it would load every tokenizer family
    from lmforge.tokenizers.base import Tokenizer


def mask_tokens(
    input_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    generator: torch.Generator,
    attention_mask: torch.Tensor | None = None,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels) for ``input_ids`` (B, T); the input is not modified.

    Each non-special, non-padding token is chosen with probability ``mlm_probability``; a
    chosen one becomes ``mask_id`` with probability ``mask_replace_prob``, a uniformly random
    non-special id with ``random_replace_prob``, else stays. Labels hold the original id at
    chosen positions and -100 elsewhere. ``attention_mask`` (1 real, 0 padding) excludes
    padding even when its id is not among ``special_ids``.
    """
    for name, p in (
        ("mlm_probability", mlm_probability),
        ("mask_replace_prob", mask_replace_prob),
        ("random_replace_prob", random_replace_prob),
    ):
        if not 0.0 <= p <= 1.0:
            raise UserInputError(f"{name} must be between 0 and 1; got {p}")
    if mask_replace_prob + random_replace_prob > 1.0:
        raise UserInputError(
            f"mask_replace_prob + random_replace_prob = {mask_replace_prob + random_replace_prob} "
            "exceeds 1; the rest (kept unchanged) cannot be negative"
        )
    device = input_ids.device
    special = torch.tensor(sorted(set(special_ids) | {mask_id}), dtype=input_ids.dtype, device=device)
    ordinary = torch.ones(vocab_size, dtype=torch.bool, device=device)
    ordinary[special[(special >= 0) & (special < vocab_size)]] = False
    candidates = ordinary.nonzero().squeeze(1)  # the ids a random replacement may take
    if len(candidates) == 0:
        raise TokenizerError(f"every one of the {vocab_size} ids is special; nothing to mask or sample")

    eligible = ~torch.isin(input_ids, special)
    if attention_mask is not None:
        eligible &= attention_mask.bool()

    # three draws of the full shape, so the generator advances the same way whatever the ids
    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=generator.device).to(device)

    chosen = (uniform() < mlm_probability) & eligible
    case = uniform()  # one draw splits the chosen: [0, m) mask, [m, m + r) random, rest kept
    to_mask = chosen & (case < mask_replace_prob)
    to_random = chosen & (case >= mask_replace_prob) & (case < mask_replace_prob + random_replace_prob)
    picks = torch.randint(len(candidates), input_ids.shape, generator=generator, device=generator.device)
    random_ids = candidates[picks.to(device)].to(input_ids.dtype)

    masked = input_ids.masked_fill(to_mask, mask_id)
    masked = torch.where(to_random, random_ids, masked)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    return masked, labels


def mask_batch(
    batch: Batch,
    tokenizer: Tokenizer,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> Batch:
    """A padded batch with masked-LM inputs and labels, using the tokenizer's special ids."""
    if tokenizer.mask_id is None:
        raise TokenizerError(
            f"this {tokenizer.kind} tokenizer has no mask token, which masked-LM pretraining needs; "
            "train a BERT-style tokenizer (with [MASK]) or add a mask special token"
        )
    input_ids, labels = mask_tokens(
        batch.input_ids,
        mask_id=tokenizer.mask_id,
        vocab_size=tokenizer.vocab_size,
        special_ids=tokenizer.all_special_ids,
        generator=generator,
        attention_mask=batch.attention_mask,
        mlm_probability=mlm_probability,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
    )
    return Batch(input_ids, batch.attention_mask, labels)


# --- pretraining batches -------------------------------------------------------------------------
EVAL_MASKING_SEED = 0  # one masking of the validation split for every run: figures compare


def _wrap(windows: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
    """(B, T - 2) stream windows -> (B, T) rows [CLS] window [SEP]."""
    B = windows.shape[0]
    cls = torch.full((B, 1), cls_id, dtype=windows.dtype)
    sep = torch.full((B, 1), sep_id, dtype=windows.dtype)
    return torch.cat([cls, windows, sep], dim=1)


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int, int]:
    """(mask, cls, sep) ids, or one line saying which the tokenizer lacks."""
    ids = {name: tokenizer.special_id(name) for name in ("mask", "cls", "sep")}
    missing = [f"[{name.upper()}]" for name, i in ids.items() if i is None]
    if missing:
        raise TokenizerError(
            f"masked-LM pretraining needs {', '.join(missing)} in the tokenizer, and this {tokenizer.kind} "
            "tokenizer has none; prepare the data with --tokenizer wordpiece (BERT's special tokens)"
        )
    return ids["mask"], ids["cls"], ids["sep"]


class MaskedWindowSampler:
    """The trainer's batch source for masked-LM pretraining: ``next_batch()`` -> {input_ids, labels},
    random windows of the stream wrapped as [CLS] ... [SEP] (``block_size`` in all) and masked.

    Window starts and masks come from one generator, so ``state_dict()`` resumes exactly. In DDP
    give each rank its own seed (e.g. ``seed + rank``).
    """

    def __init__(
        self,
        data: np.ndarray,
        tokenizer: Tokenizer,
        batch_size: int,
        block_size: int,
        seed: int = 0,
        device: torch.device | str | None = None,
        mlm_probability: float = 0.15,
    ) -> None:
        if block_size < 3:
            raise UserInputError(
                f"a masked-LM window needs block_size >= 3 ([CLS] x [SEP]); got {block_size}"
            )
        _check_tokens(data, block_size - 1, block_size - 2)
        self.mask_id, self.cls_id, self.sep_id = _special_ids(tokenizer)
        self.special_ids, self.vocab_size = tokenizer.all_special_ids, tokenizer.vocab_size
        self.data, self.batch_size, self.block_size, self.device = data, batch_size, block_size, device
        self.mlm_probability = mlm_probability
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict[str, torch.Tensor]:
        windows, _ = random_windows(self.data, self.batch_size, self.block_size - 2, self.generator)
        ids = _wrap(windows, self.cls_id, self.sep_id)
        input_ids, labels = mask_tokens(
            ids,
            self.mask_id,
            self.vocab_size,
            self.special_ids,
            self.generator,
            mlm_probability=self.mlm_probability,
        )
        return {"input_ids": _to_device(input_ids, self.device), "labels": _to_device(labels, self.device)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def masked_eval_batches(
    data: np.ndarray,
    tokenizer: Tokenizer,
    batch_size: int,
    block_size: int,
    num_batches: int,
    seed: int = EVAL_MASKING_SEED,
) -> list[dict[str, torch.Tensor]]:
    """Up to ``num_batches`` batches of consecutive windows from the start of ``data``, each wrapped
    [CLS] ... [SEP] and masked by a generator seeded with ``seed``: the same inputs and targets at
    every call, whatever run asks."""
    mask_id, cls_id, sep_id = _special_ids(tokenizer)
    width = block_size - 2
    _check_tokens(data, width, width)
    count = min(num_batches * batch_size, len(data) // width)
    windows = torch.from_numpy(np.asarray(data[: count * width], dtype=np.int64).reshape(count, width))
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for rows in windows.split(batch_size):
        input_ids, labels = mask_tokens(
            _wrap(rows, cls_id, sep_id), mask_id, tokenizer.vocab_size, tokenizer.all_special_ids, generator
        )
        batches.append({"input_ids": input_ids, "labels": labels})
    return batches

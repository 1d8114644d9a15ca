"""What a masked language model (BERT) says about a text with gaps, and candidate ranking for any model.

    loaded = load_for_inference("runs/bert", causal_for=None)
    require_masked(loaded.model, "runs/bert", "lmforge fill-mask")
    fills = fill_mask(loaded.model, loaded.tokenizer, "the quick brown [MASK] jumps", top_k=5)
        # one list per [MASK], best first: [Fill(token_id=..., token="fox", prob=0.41), ...]
    ranked = probe(loaded.model, loaded.tokenizer, "Paris is in ___.", ["France", "Peru"])
        # best first: [Candidate("France", logprob=-3.2, prob=0.93, tokens=1), ...]

A masked model scores the token *at* a position, seen on both sides, so a candidate of several
tokens gets its pseudo-log-likelihood (Salazar et al. 2020): each of its tokens masked in turn,
the others visible, log-probabilities summed. A causal model gives the exact log-probability of
the filled text (``inference.score_text``). The candidates' probabilities are a softmax over those
scores: the model's choice among them, which is also zero-shot classification.

``[MASK]`` in a text is always the model's mask token, whatever its tokenizer spells it; the text
is encoded piece by piece between the masks, and wrapped in [CLS] ... [SEP] when the tokenizer
has them, as pretraining wrapped its windows (data/masking.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.errors import UserInputError

MASK_LITERAL = "[MASK]"
BLANK = "___"  # where a probe's candidates go


@dataclass
class Fill:
    token_id: int
    token: str
    prob: float


@dataclass
class Candidate:
    text: str
    logprob: float  # natural log; PLL for a masked model
    prob: float  # softmax of the logprobs over the candidates
    tokens: int


def require_masked(model, run: str | Path, what: str) -> None:
    """Refuse a model that does not predict tokens in place, or a BERT without its masked-LM head."""
    if model.lm_kind != "masked":
        raise UserInputError(f"{what} needs a masked (BERT) model; {run} is causal: try `lmforge generate`")
    if not getattr(model.config, "mlm_head", True):
        raise UserInputError(
            f"{what} needs a masked-LM head, and {run} has none (converted from a BertModel): it gives "
            "embeddings (`lmforge embed`), not token predictions"
        )


def _wrap(tokenizer, ids: list[int]) -> tuple[list[int], int]:
    """([CLS] ids [SEP] when the tokenizer has both, else ids; the offset of ids[0])."""
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    if cls_id is None or sep_id is None:
        return list(ids), 0
    return [cls_id, *ids, sep_id], 1


def _check_fits(model, length: int, what: str) -> None:
    limit = model.context_limit
    if limit is not None and length > limit:
        raise UserInputError(
            f"the text is {length} tokens with its special tokens, longer than the model's context of "
            f"{limit}; shorten it ({what} reads the whole text at once)"
        )


def encode_with_masks(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """(ids wrapped as the model read in training, positions of the masks) for a text with [MASK]s."""
    mask_id = tokenizer.mask_id
    if mask_id is None:
        raise UserInputError("this run's tokenizer has no mask token, so it cannot fill a [MASK]")
    spellings = {MASK_LITERAL, tokenizer.id_to_token(mask_id)}
    pattern = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    pieces = re.split(pattern, text)
    if len(pieces) == 1:
        raise UserInputError(
            f"--text has no {MASK_LITERAL}; put {MASK_LITERAL} where a word should be filled in"
        )
    ids: list[int] = []
    for n, piece in enumerate(pieces):
        if n:
            ids.append(mask_id)
        if piece.strip():
            ids.extend(tokenizer.encode(piece))
    wrapped, offset = _wrap(tokenizer, ids)
    return wrapped, [offset + i for i, token in enumerate(ids) if token == mask_id]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[list[Fill]]:
    """The ``top_k`` most probable tokens at each [MASK] of ``text``, with their probabilities."""
    ids, positions = encode_with_masks(tokenizer, text)
    _check_fits(model, len(ids), "fill-mask")
    input_ids = torch.tensor([ids], device=_device(model))
    logits = model(input_ids).logits[0, positions].float()  # (masks, vocab)
    probs, tokens = torch.softmax(logits, dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return [
        [Fill(int(t), tokenizer.decode([int(t)]), float(p)) for p, t in zip(row_probs, row_tokens)]
        for row_probs, row_tokens in zip(probs, tokens)
    ]


@torch.no_grad()
def masked_pll(model, ids: list[int], positions: list[int], mask_id: int) -> float:
    """Pseudo-log-likelihood (Salazar et al. 2020) of the tokens at ``positions``: each masked in
    turn, every other token visible, ln p of the original token summed."""
    rows = torch.tensor([ids] * len(positions), device=_device(model))  # (P, T)
    index = torch.arange(len(positions))
    where = torch.tensor(positions)
    rows[index, where] = mask_id
    logits = model(rows).logits[index, where].float()  # (P, vocab)
    originals = torch.tensor([ids[i] for i in positions], device=logits.device)
    return float(torch.log_softmax(logits, dim=-1)[index, originals].sum())


def probe(model, tokenizer, text: str, candidates: list[str]) -> list[Candidate]:
    """``candidates`` ranked by the model's score of ``text`` with ``___`` filled by each, best first."""
    if text.count(BLANK) != 1:
        found = "no" if BLANK not in text else "more than one"
        raise UserInputError(f"--text has {found} {BLANK}; put exactly one {BLANK} where a candidate goes")
    candidates = [c.strip() for c in candidates if c.strip()]
    if len(set(candidates)) < 2:
        raise UserInputError("--candidates needs at least 2 different candidates, separated by commas")
    prefix, suffix = text.split(BLANK)
    scores, lengths = [], []
    for candidate in candidates:
        if model.lm_kind == "masked":
            score, length = _masked_score(model, tokenizer, prefix, candidate, suffix)
        else:
            score, length = _causal_score(model, tokenizer, prefix + candidate + suffix, candidate)
        scores.append(score)
        lengths.append(length)
    probs = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
    ranked = [Candidate(c, s, p, n) for c, s, p, n in zip(candidates, scores, probs, lengths)]
    return sorted(ranked, key=lambda c: c.logprob, reverse=True)


def _masked_score(model, tokenizer, prefix: str, candidate: str, suffix: str) -> tuple[float, int]:
    before = tokenizer.encode(prefix) if prefix.strip() else []
    middle = tokenizer.encode(candidate)
    after = tokenizer.encode(suffix) if suffix.strip() else []
    if not middle:
        raise UserInputError(f"the candidate {candidate!r} encodes to no tokens")
    ids, offset = _wrap(tokenizer, [*before, *middle, *after])
    _check_fits(model, len(ids), "probe")
    if tokenizer.mask_id is None:
        raise UserInputError("this run's tokenizer has no mask token, so it cannot score a masked candidate")
    start = offset + len(before)
    positions = list(range(start, start + len(middle)))
    return masked_pll(model, ids, positions, tokenizer.mask_id), len(middle)


def _causal_score(model, tokenizer, filled: str, candidate: str) -> tuple[float, int]:
    from lmforge.inference import score_text

    ids = tokenizer.encode(filled)
    start = tokenizer.document_start_id
    _check_fits(model, len(ids), "probe")  # the start token takes the place of the last
    if start is None and len(ids) < 2:
        raise UserInputError(
            "the filled text is one token and the tokenizer has no start token: nothing to score"
        )
    return score_text(model, ids, start_id=start).logprob, len(tokenizer.encode(candidate))

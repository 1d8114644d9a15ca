"""n-gram language models on token ids: count, smooth and score (the lecture's first LM).

    "cows eat corn" 4 times, "cows eat grass" 3, "cows eat hay" 2, "cows eat if" 1, "cows eat which" 1
    -> c(cows eat .) = 11, so the maximum-likelihood trigram says p(corn | cows eat) = 4/11,
       p(grass | cows eat) = 3/11, ... and p(oats | cows eat) = 0: never seen, never possible.
    -> sampling rolls an 11-sided die weighted 4, 3, 2, 1, 1; greedy decoding always says "corn".

    lm = NGramLM.fit(train_ids, NGramConfig(order=3, smoothing="modified-kn", eos_id=0))
    lm.logprobs(val_ids)             # (N,) natural-log p of every token given its context
    lm.perplexity(val_ids)           # exp(-mean log p)
    lm.next_distribution([5, 6])     # (V,) p(. | 5 6), sums to 1
    generate(lm, [[5, 6]], GenerationConfig(...))   # sampling, greedy, beam (lmforge.generate)
    lm.save(run_dir); NGramLM.load(run_dir)

Documents. Token arrays are streams of documents each ended by ``eos_id`` (what ``lmforge prepare``
writes). The end-of-text id is an ordinary token, predicted at the end of every document; a
context never reaches back across it: the first tokens of a document see contexts padded with a
pad id (= vocab_size, Jurafsky & Martin's <s>), which is never predicted. ``logprobs`` scores
every token of its input, the first with an all-pad context. Counting is in ``ngram_counts.py``.

Smoothing (h a context, h' = h without its farthest token, V the vocabulary size, N the tokens):
- ``mle``: p(w | h) = c(h w) / c(h .). A context never seen backs off to its longest seen suffix
  (at worst the unigram c(w) / N), so every context has a distribution. A token never seen after
  the context gets 0, and a text holding one has perplexity inf.
- ``add-k``: p(w | h) = (c(h w) + k) / (c(h .) + k V) (k = 1: Laplace); unseen contexts get 1/V.
- ``kn``: interpolated Kneser-Ney (Chen & Goodman 1998, section on Kneser-Ney smoothing):
      p_k(w | h) = max(c_k(h w) - D, 0) / c_k(h .) + gamma(h) p_{k-1}(w | h'),
      gamma(h) = D N1+(h .) / c_k(h .),  p_0(w) = 1 / V,
  with c_k the raw count at the highest order and the continuation count N1+(. h w) (how many
  distinct tokens precede h w) below it. A context never seen gives p_k(. | h) = p_{k-1}(. | h').
  Lower-order n-grams that start with the pad id get continuation counts too (always 1, as only
  the pad precedes the pad), where KenLM keeps their raw counts since nothing extends <s>.
  D per order: n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), n_r = how many k-grams have c_k = r.
- ``modified-kn``: the discount depends on the count, D(1), D(2), D(3+), and
      gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c_k(h .)
  estimated per order (Chen & Goodman 1998, modified Kneser-Ney): Y = n1 / (n1 + 2 n2),
  D1 = 1 - 2 Y n2 / n1, D2 = 2 - 3 Y n3 / n2, D3+ = 3 - 4 Y n4 / n3.
  Tiny corpora leave these undefined or outside (0, c] (n2 = 0, ...), which is where KenLM stops;
  here such a discount takes KenLM's ``--discount_fallback`` value (0.5, 1, 1.5; plain KN 0.5).
- ``stupid-backoff`` (Brants et al. 2007): S(w | h) = c(h w) / c(h .) if c(h w) > 0, else
  alpha S(w | h'); S(w) = c(w) / N. Cheap at scale, and not a distribution: a seen context's scores
  sum to 1 + alpha * (the lower-order scores of the tokens never seen after it), an unseen one's
  often to less than 1, and a token never seen at all scores 0. Sampling and decoding renormalise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.fileio import atomic_write_bytes
from lmforge.models.ngram_counts import (
    NGramCounts,
    as_stream,
    check_ids,
    context_ids,
    context_matrix,
    count,
    document_starts,
    lookup,
)

Smoothing = Literal["mle", "add-k", "kn", "modified-kn", "stupid-backoff"]
SMOOTHINGS = ("mle", "add-k", "kn", "modified-kn", "stupid-backoff")
WEIGHTS_FILE = "ngram.safetensors"
FORMAT_VERSION = 1
DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback, for D1, D2, D3+
SCORE_CHUNK = 1 << 20  # positions scored at once: bounds the memory of logprobs


@dataclass
class NGramConfig:
    order: int = 3
    smoothing: Smoothing = "modified-kn"
    vocab_size: int | None = None  # None: 1 + the largest id in the training data
    eos_id: int | None = None  # end-of-text: ends every document; contexts never cross it
    k: float = 1.0  # add-k pseudo-count (1: Laplace)
    discount: float | list[float] | None = None  # KN: None estimates per order; 3 values: D1 D2 D3+
    backoff_alpha: float = 0.4  # stupid backoff's penalty per order backed off

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or self.order < 1:
            raise UserInputError(f"n-gram order must be a positive integer; got {self.order!r}")
        if self.smoothing not in SMOOTHINGS:
            raise UserInputError(f"unknown smoothing {self.smoothing!r}; choose from {', '.join(SMOOTHINGS)}")
        if not (math.isfinite(self.k) and self.k > 0):
            raise UserInputError(f"add-k needs k > 0 (1 is Laplace); got k={self.k}")
        if not (math.isfinite(self.backoff_alpha) and self.backoff_alpha > 0):
            raise UserInputError(
                f"stupid backoff needs alpha > 0 (Brants et al. use 0.4); got {self.backoff_alpha}"
            )
        if self.vocab_size is not None and self.vocab_size < 1:
            raise UserInputError(f"vocab_size must be at least 1; got {self.vocab_size}")
        if self.eos_id is not None and (
            self.eos_id < 0 or (self.vocab_size and self.eos_id >= self.vocab_size)
        ):
            raise UserInputError(f"eos_id {self.eos_id} is not an id of a {self.vocab_size}-id vocabulary")
        if isinstance(self.discount, (tuple, list)):
            self.discount = [float(d) for d in self.discount]
        self._check_discount()

    def _check_discount(self) -> None:
        d = self.discount
        if d is None:
            return
        if isinstance(d, list):
            if self.smoothing != "modified-kn" or len(d) != 3:
                raise UserInputError("three discounts (D1 D2 D3+) go with modified-kn; kn takes one")
            if not all(0 <= x <= c for x, c in zip(d, (1, 2, 3))):
                raise UserInputError(f"discounts must satisfy 0 <= D1 <= 1, D2 <= 2, D3+ <= 3; got {d}")
        elif not 0 <= d <= 1:
            raise UserInputError(f"a Kneser-Ney discount must lie in [0, 1] (no count below 1); got {d}")

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_discounts(values: np.ndarray, modified: bool) -> np.ndarray:
    """(D1, D2, D3+) from the counts of one order (Chen & Goodman 1998); fallbacks where undefined."""
    n1, n2, n3, n4 = (int(np.count_nonzero(values == r)) for r in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else math.nan
    if not modified:
        return np.full(3, y if 0 < y <= 1 else DISCOUNT_FALLBACK[0])
    ratios = (n2 / n1 if n1 else math.nan, n3 / n2 if n2 else math.nan, n4 / n3 if n3 else math.nan)
    estimates = [c - (c + 1) * y * ratio for c, ratio in zip((1, 2, 3), ratios)]
    return np.array(
        [d if math.isfinite(d) and 0 < d <= c else fallback
         for c, d, fallback in zip((1, 2, 3), estimates, DISCOUNT_FALLBACK)]
    )  # fmt: skip


class NGramLM:
    """An n-gram model: count tables plus a smoothing rule, scoring whole arrays at once.

    It meets the model protocol (models/protocol.py) as a ``StreamScorer``: no forward pass, a
    stream scored by ``logprobs``, decoded through its contexts (generate/ngram_step.py)."""

    family = "ngram"
    config_class = NGramConfig
    context_limit = None  # reads any length; only the last order - 1 tokens matter
    carries_state = False
    decoding = "counts"
    has_attention_maps = False
    scores_whole_stream = True
    lm_kind = "causal"

    def __init__(self, config: NGramConfig, counts: NGramCounts) -> None:
        if config.vocab_size != counts.vocab_size or config.order != counts.order:
            raise CheckpointError("n-gram counts do not match their config (order or vocab_size)")
        self.config = config
        self.counts = counts
        self.discounts = self._discounts()  # (order, 3): D1, D2, D3+ per order; None without KN
        self._values, self._totals, self._gammas = [], [], []
        for k in range(1, config.order + 1):
            values = self._order_values(k)
            context = counts.gram_keys[k - 1] // counts.base
            R = counts.num_contexts(k - 1)
            total = np.bincount(context, weights=values, minlength=R)  # c_k(h .) per context id
            self._values.append(values)
            self._totals.append(total)
            if self.discounts is not None:  # gamma(h) = sum_c D(c) N_c(h .) / c_k(h .)
                table = np.concatenate(([0.0], self.discounts[k - 1]))
                removed = np.bincount(
                    context, weights=table[np.minimum(values, 3).astype(np.int64)], minlength=R
                )
                self._gammas.append(removed / total)

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def fit(cls, data: np.ndarray | Sequence[int] | Sequence[Sequence[int]], config: NGramConfig) -> NGramLM:
        """Count ``data``: a flat id array (documents ended by ``eos_id``) or a list of documents
        (each followed by ``eos_id`` when it is set; contexts restart at every document)."""
        tokens, starts = as_stream(data, config.eos_id)
        if len(tokens) == 0:
            raise DataError("no tokens to count: the training data is empty")
        vocab_size = config.vocab_size
        if vocab_size is None:
            vocab_size = max(int(tokens.max()), -1 if config.eos_id is None else config.eos_id) + 1
        config = replace(config, vocab_size=vocab_size)
        check_ids(tokens, vocab_size, DataError, "training data")
        doc_start = document_starts(tokens, config.eos_id, starts)
        return cls(config, count(tokens, doc_start, config.order, vocab_size))

    def _order_values(self, k: int) -> np.ndarray:
        """The counts order k smooths: continuation counts below the highest order for KN, else raw."""
        if self.config.smoothing in ("kn", "modified-kn") and k < self.config.order:
            return self.counts.continuation[k - 1].astype(np.float64)
        return self.counts.raw[k - 1].astype(np.float64)

    def _discounts(self) -> np.ndarray | None:
        smoothing, fixed = self.config.smoothing, self.config.discount
        if smoothing not in ("kn", "modified-kn"):
            return None
        if fixed is not None:
            return np.tile(np.broadcast_to(np.asarray(fixed, dtype=np.float64), (3,)), (self.order, 1))
        return np.stack(
            [
                estimate_discounts(self._order_values(k), smoothing == "modified-kn")
                for k in range(1, self.order + 1)
            ]
        )

    @property
    def order(self) -> int:
        return self.config.order

    @property
    def vocab_size(self) -> int:
        return self.counts.vocab_size

    @property
    def num_grams(self) -> list[int]:
        """Distinct k-grams counted, k = 1 .. order."""
        return [len(keys) for keys in self.counts.gram_keys]

    def describe(self) -> str:
        return f"{self.order}-gram, {self.config.smoothing}"

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """The stored n-grams, one count each: what the model learned (it has no embeddings)."""
        return int(sum(self.num_grams))

    # --- scoring -----------------------------------------------------------------------------
    def logprobs(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        """(N,) natural-log p of each token given its context (-inf where p = 0, e.g. MLE)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise UserInputError(f"logprobs takes a 1-D array of token ids; got shape {tokens.shape}")
        tokens = tokens.astype(np.int64)
        check_ids(tokens, self.vocab_size, DataError, "tokens to score")
        doc_start = document_starts(tokens, self.config.eos_id)
        out = np.empty(len(tokens))
        for begin in range(0, len(tokens), SCORE_CHUNK):
            positions = np.arange(begin, min(begin + SCORE_CHUNK, len(tokens)))
            contexts = context_matrix(tokens, doc_start, self.order, self.counts.pad_id, positions)
            out[positions] = self._probabilities(context_ids(self.counts, contexts), tokens[positions])
        with np.errstate(divide="ignore"):
            return np.log(out)

    def perplexity(self, tokens: np.ndarray | Sequence[int]) -> float:
        """exp(mean negative log p): inf when any token has probability 0 (MLE on unseen text)."""
        if len(tokens) == 0:
            raise UserInputError("perplexity of an empty text is undefined; give at least one token")
        return float(np.exp(-self.logprobs(tokens).mean()))

    def next_distribution(self, context: Sequence[int]) -> np.ndarray:
        """(V,) p(. | context); the last order - 1 ids count, cut at the last end-of-text.

        Sums to 1 except under stupid backoff, whose scores are returned as they are."""
        ids = np.asarray(context, dtype=np.int64).reshape(1, -1)
        return self.next_distributions(self.prompt_contexts(ids))[0]

    def next_distributions(self, contexts: np.ndarray) -> np.ndarray:
        """(M, V) for padded contexts (M, order - 1) as ``prompt_contexts`` makes them."""
        words = np.arange(self.vocab_size, dtype=np.int64)[None, :]
        return self._probabilities(context_ids(self.counts, contexts), words)

    def _probabilities(self, ids: list[np.ndarray], words: np.ndarray) -> np.ndarray:
        """p(word | context) for context ids per suffix length (M,) and words (M,) or (1, V)."""
        smoothing, V, base = self.config.smoothing, self.vocab_size, self.counts.base
        p = np.full(np.broadcast_shapes(ids[0].shape + (1,) * (words.ndim - 1), words.shape), 1.0 / V)
        for k in range(1 if smoothing != "add-k" else self.order, self.order + 1):
            cid = ids[k - 1].reshape(-1, *([1] * (words.ndim - 1)))  # (M,) or (M, 1)
            seen, safe = cid >= 0, np.maximum(cid, 0)
            gram = lookup(self.counts.gram_keys[k - 1], np.where(seen, safe * base + words, -1))
            c = np.where(gram >= 0, self._values[k - 1][gram], 0.0)
            total = np.where(seen, self._totals[k - 1][safe], 0.0)
            if smoothing == "add-k":
                p = (c + self.config.k) / (total + self.config.k * V)
            elif smoothing == "mle":  # the longest seen context wins
                p = np.where(seen, c / np.where(seen, total, 1.0), p)
            elif smoothing == "stupid-backoff":
                lower = p if k > 1 else 0.0
                p = np.where(c > 0, c / np.maximum(total, 1.0), self.config.backoff_alpha * lower)
            else:  # Kneser-Ney: discounted count + gamma(h) * lower order
                discount = np.concatenate(([0.0], self.discounts[k - 1]))[np.minimum(c, 3).astype(np.int64)]
                kept = np.maximum(c - discount, 0.0) / np.where(seen, total, 1.0)
                p = np.where(seen, kept + self._gammas[k - 1][safe] * p, p)
        return np.broadcast_to(p, np.broadcast_shapes(p.shape, words.shape)).copy()

    # --- contexts and decoding ---------------------------------------------------------------
    def prompt_contexts(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """(B, order - 1) contexts after left-padded prompts (B, P): masked columns, an end-of-text
        and everything before it become the pad id, as at the start of a document."""
        width, pad = self.order - 1, self.counts.pad_id
        ids = np.asarray(input_ids, dtype=np.int64)
        check_ids(ids, self.vocab_size, UserInputError, "context")
        real = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask) != 0
        if width == 0:
            return np.zeros((len(ids), 0), dtype=np.int64)
        short = max(0, width - ids.shape[1])  # prompts shorter than the context: pad on the left
        ids = np.pad(ids[:, ids.shape[1] - min(width, ids.shape[1]) :], ((0, 0), (short, 0)))
        real = np.pad(real[:, real.shape[1] - min(width, real.shape[1]) :], ((0, 0), (short, 0)))
        contexts = np.where(real, ids, pad)
        if self.config.eos_id is not None:
            is_eos = contexts == self.config.eos_id
            last = np.where(is_eos.any(axis=1), width - 1 - np.argmax(is_eos[:, ::-1], axis=1), -1)
            contexts[np.arange(width)[None, :] <= last[:, None]] = pad
        return contexts

    def advance(self, contexts: np.ndarray, next_ids: np.ndarray) -> np.ndarray:
        """Contexts after one more token per row; an end-of-text starts a fresh (padded) context."""
        if contexts.shape[1] == 0:
            return contexts
        out = np.concatenate([contexts[:, 1:], np.asarray(next_ids, dtype=np.int64)[:, None]], axis=1)
        if self.config.eos_id is not None:
            out[np.asarray(next_ids) == self.config.eos_id] = self.counts.pad_id
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The arrays that define the model (lower orders and discounts are derived from them)."""
        arrays = {
            f"context_keys.{length}": self.counts.context_keys[length] for length in range(1, self.order)
        }
        arrays["gram_keys"] = self.counts.gram_keys[-1]
        arrays["gram_counts"] = self.counts.raw[-1]
        return arrays

    @classmethod
    def from_state_dict(cls, config: NGramConfig, arrays: dict[str, np.ndarray]) -> NGramLM:
        names = [f"context_keys.{length}" for length in range(1, config.order)] + ["gram_keys", "gram_counts"]
        missing = [name for name in names if name not in arrays]
        if missing or config.vocab_size is None:
            raise CheckpointError(
                f"n-gram state lacks {', '.join(missing) or 'vocab_size'}; save the model again"
            )
        for name in names:
            array = arrays[name]
            if (
                array.dtype != np.int64
                or array.ndim != 1
                or (name != "gram_counts" and np.any(np.diff(array) <= 0))
            ):
                raise CheckpointError(
                    f"n-gram array {name} is damaged (not sorted int64 keys); save the model again"
                )
        context_keys = [np.zeros(1, dtype=np.int64)] + [arrays[name] for name in names[:-2]]
        counts = NGramCounts.from_highest(
            config.vocab_size, context_keys, arrays["gram_keys"], arrays["gram_counts"]
        )
        return cls(config, counts)

    def save(self, directory: str | Path, filename: str = WEIGHTS_FILE) -> Path:
        """Write ``directory/filename``: the arrays, with the config in the safetensors metadata."""
        from safetensors.numpy import save

        metadata = {"format": "lmforge-ngram", "format_version": str(FORMAT_VERSION)}
        metadata["config"] = json.dumps(self.config.to_dict())
        path = Path(directory) / filename
        atomic_write_bytes(path, save(self.state_dict(), metadata=metadata))
        return path

    @classmethod
    def load(cls, directory: str | Path, filename: str = WEIGHTS_FILE) -> NGramLM:
        """The model ``save`` wrote to ``directory/filename``; anything else is a ``CheckpointError``."""
        from safetensors import SafetensorError, safe_open

        path = Path(directory) / filename
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; train an n-gram model into {directory} first")
        try:
            with safe_open(str(path), framework="np") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{path} is not a readable n-gram model ({error}); train it again"
            ) from None
        if metadata.get("format") != "lmforge-ngram" or metadata.get("format_version") != str(FORMAT_VERSION):
            raise CheckpointError(f"{path} is not an lmforge n-gram model of format {FORMAT_VERSION}")
        try:
            config = NGramConfig(**json.loads(metadata["config"]))
        except (KeyError, TypeError, ValueError, UserInputError) as error:
            raise CheckpointError(f"{path} holds a damaged n-gram config ({error}); train it again") from None
        return cls.from_state_dict(config, arrays)

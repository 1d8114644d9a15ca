"""Counting n-grams of token ids with sorts, not Python loops: the tables ``ngram.py`` smooths.

A trigram model (order 3) on ids, vocabulary V = 10 and end-of-text id 9; ``P`` = V = 10 is the
padding id, which appears only in contexts and is never predicted:

    tokens   4 2 7 9 4 2 5 9             two documents, each ended by 9
    trigrams P P 4 | P 4 2 | 4 2 7 | 2 7 9 | P P 4 | P 4 2 | 4 2 5 | 2 5 9
             (every token is predicted once; a document's first contexts are padded with P
              and no context reaches back across an end-of-text)
    counts   (P P 4): 2   (P 4 2): 2   (4 2 7): 1   (4 2 5): 1   ...

so c(4 2 ·) = 2 and the maximum-likelihood p(7 | 4 2) = 1/2.

Representation. A context of length L is identified by an id, its row in the sorted table of
the length-L contexts seen in training; its key is ``id(suffix) * B + farthest token`` with
B = V + 1, where ``suffix`` drops the farthest token (length L - 1; the empty context has id 0).
A k-gram (context h of length k - 1, word w) has key ``id(h) * B + w``. Keys are int64, sorted,
and looked up with ``np.searchsorted``, so scoring a whole array is vectorised too. Every key stays
below (number of contexts) * B, so any order works with any vocabulary (no V^n overflow).

    context_keys[L]   sorted keys of the length-L contexts, L = 0 .. n-1 (context_keys[0] = [0])
    gram_keys[k-1]    sorted keys of the k-grams, k = 1 .. n: followers of a context are contiguous
    raw[k-1]          c(h w): how many times the k-gram occurred (lower orders: sums of suffixes)
    continuation[k-1] N1+(. h w): how many distinct tokens precede (h w) in a (k+1)-gram (k < n)

Because every token is predicted with a full (padded) context, the k-grams are exactly the
suffixes of the n-grams, so lower orders are derived from the n-gram table (a sort of the
distinct n-grams, not of the corpus). Counting the corpus costs one ``np.sort`` for a bigram or
trigram model (plus one ``argsort`` per further order) and O(N) gathers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmforge.errors import DataError

INT64_LIMIT = 2**63 - 1


@dataclass
class NGramCounts:
    vocab_size: int
    context_keys: list[np.ndarray]  # [L] for L = 0 .. order - 1
    gram_keys: list[np.ndarray]  # [k - 1] for k = 1 .. order
    raw: list[np.ndarray]  # [k - 1]: c(h w), int64
    continuation: list[np.ndarray | None]  # [k - 1]: N1+(. h w), None at the highest order

    @property
    def order(self) -> int:
        return len(self.gram_keys)

    @property
    def base(self) -> int:
        return self.vocab_size + 1

    @property
    def pad_id(self) -> int:
        return self.vocab_size

    def num_contexts(self, length: int) -> int:
        return len(self.context_keys[length])

    @classmethod
    def from_highest(
        cls, vocab_size: int, context_keys: list[np.ndarray], gram_keys: np.ndarray, counts: np.ndarray
    ) -> NGramCounts:
        """All orders from the n-gram table and the context tables (what ``save`` stores)."""
        base = vocab_size + 1
        order = len(context_keys)
        keys, raw, continuation = [gram_keys], [counts], [None]
        for k in range(order - 1, 0, -1):  # the k-grams are the suffixes of the (k+1)-grams
            upper = keys[0]
            parent = context_keys[k][upper // base] // base  # id of the context minus its farthest token
            suffix = parent * base + upper % base
            group, first = _group(suffix)
            keys.insert(0, suffix[group][first])
            raw.insert(0, np.add.reduceat(raw[0][group], first))
            continuation.insert(0, np.diff(np.append(first, len(suffix))))
        return cls(vocab_size, context_keys, keys, raw, continuation)


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order that sorts ``keys``, start of each run of equal keys in that order)."""
    order = np.argsort(keys)
    ordered = keys[order]
    first = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return order, first


def sorted_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys sorted, how many times each occurs): one sort, no hashing."""
    ordered = np.sort(keys)
    first = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[first], np.diff(np.append(first, len(ordered)))


def unique_inverse(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys sorted, rank of each key among them), for keys in [0, bound)."""
    if bound <= max(1 << 22, 2 * len(keys)):  # small key space: a presence table, O(N)
        present = np.zeros(bound, dtype=bool)
        present[keys] = True
        rank = np.cumsum(present) - 1
        return np.flatnonzero(present), rank[keys]
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def as_stream(data, eos_id: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(flat int64 ids, document-start marks or None) from an id array or a list of documents;
    each document of a list is followed by ``eos_id`` when it is set."""
    if isinstance(data, np.ndarray) or not len(data) or np.isscalar(data[0]):
        documents, flat = [np.asarray(data)], True
    else:
        documents, flat = [np.asarray(doc) for doc in data], False
    for doc in documents:
        if doc.ndim != 1 or (doc.size and doc.dtype.kind not in "iu"):
            raise DataError(
                f"token data must be 1-D arrays of integer ids; got {doc.dtype} of shape {doc.shape}"
            )
    if flat:
        return documents[0].astype(np.int64), None
    if eos_id is not None:
        documents = [np.append(doc, eos_id) for doc in documents]
    documents = [doc.astype(np.int64) for doc in documents if len(doc)]
    if not documents:
        return np.zeros(0, dtype=np.int64), None
    starts = np.zeros(sum(len(doc) for doc in documents), dtype=bool)
    starts[np.cumsum([0] + [len(doc) for doc in documents[:-1]])] = True
    return np.concatenate(documents), starts


def check_ids(ids: np.ndarray, vocab_size: int, error: type[Exception], what: str) -> None:
    """Raise ``error`` naming the first id outside [0, vocab_size), with its position."""
    if ids.size == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        where = int(np.flatnonzero(ids.reshape(-1) == bad)[0])
        raise error(
            f"{what}: token id {bad} (position {where}) is outside the model's {vocab_size}-id vocabulary; "
            "the ids come from another tokenizer than the model's"
        )


def document_starts(tokens: np.ndarray, eos_id: int | None, starts: np.ndarray | None = None) -> np.ndarray:
    """For each position, the index where its document begins (after the last end-of-text before it).

    ``starts`` optionally marks further document starts (True), e.g. where documents were joined.
    """
    n = len(tokens)
    begins = np.zeros(n, dtype=bool) if starts is None else starts.copy()
    if n:
        begins[0] = True
    if eos_id is not None and n > 1:
        begins[1:] |= tokens[:-1] == eos_id
    return np.maximum.accumulate(np.where(begins, np.arange(n), 0))


def far_tokens(
    tokens: np.ndarray, doc_start: np.ndarray, distance: int, pad_id: int, positions: np.ndarray | None = None
) -> np.ndarray:
    """The token ``distance`` before each of ``positions`` (default all), or the pad id before its document."""
    positions = np.arange(len(tokens)) if positions is None else positions
    source = positions - distance
    return np.where(source >= doc_start[positions], tokens[np.maximum(source, 0)], pad_id)


def context_matrix(
    tokens: np.ndarray, doc_start: np.ndarray, order: int, pad_id: int, positions: np.ndarray | None = None
) -> np.ndarray:
    """(len(positions), order - 1): the padded context of each position, oldest token first."""
    positions = np.arange(len(tokens)) if positions is None else positions
    columns = [far_tokens(tokens, doc_start, d, pad_id, positions) for d in range(order - 1, 0, -1)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(positions), 0), dtype=np.int64)


def count(tokens: np.ndarray, doc_start: np.ndarray, order: int, vocab_size: int) -> NGramCounts:
    """Count every n-gram of ``tokens`` (int64 ids < vocab_size), contexts cut at ``doc_start``."""
    base, pad = vocab_size + 1, vocab_size
    ids = np.zeros(len(tokens), dtype=np.int64)  # id of each position's context of length L
    context_keys = [np.zeros(1, dtype=np.int64)]
    for length in range(1, order):
        keys = ids * base + far_tokens(tokens, doc_start, length, pad)
        if length == order - 1 and len(context_keys[-1]) * base * base <= INT64_LIMIT:
            # the last context level needs no ranks per position: sort (context, word) keys at once
            grams, counts = sorted_counts(keys * base + tokens)
            top, rank = unique_inverse(grams // base, len(context_keys[-1]) * base)
            context_keys.append(top)
            return NGramCounts.from_highest(vocab_size, context_keys, rank * base + grams % base, counts)
        _check_fits(len(context_keys[-1]), base)
        table, ids = unique_inverse(keys, len(context_keys[-1]) * base)
        context_keys.append(table)
    _check_fits(len(context_keys[-1]), base)
    grams, counts = sorted_counts(ids * base + tokens)
    return NGramCounts.from_highest(vocab_size, context_keys, grams, counts)


def _check_fits(num_contexts: int, base: int) -> None:
    if num_contexts * base > INT64_LIMIT:
        raise DataError(
            f"{num_contexts:,} distinct contexts x {base:,} ids do not fit the int64 n-gram keys; "
            "count a smaller corpus or use a lower order"
        )


def lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query in the sorted ``keys``, or -1 where it is absent (any shape)."""
    if len(keys) == 0:
        return np.full(np.shape(query), -1, dtype=np.int64)
    index = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[index] == query, index, -1)


def context_ids(counts: NGramCounts, contexts: np.ndarray) -> list[np.ndarray]:
    """For contexts (M, order - 1), oldest first: the id of each suffix of length L = 0 .. order - 1.

    -1 marks a suffix never seen in training; every longer one is then unseen too.
    """
    ids = [np.zeros(len(contexts), dtype=np.int64)]
    width = contexts.shape[1]
    for length in range(1, counts.order):
        parent = ids[-1]
        query = np.where(parent >= 0, parent * counts.base + contexts[:, width - length], -1)
        ids.append(lookup(counts.context_keys[length], query))
    return ids

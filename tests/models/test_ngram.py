"""n-gram LM against independent truths: NLTK's nltk.lm, a dict-based reference, hand arithmetic.

How our definitions meet NLTK's (nltk/lm/models.py, smoothing.py), so the comparisons are exact:
- Padding. NLTK's ``padded_everygram_pipeline`` pads both ends of a sentence with n - 1 <s> and
  n - 1 </s>, so it predicts </s> after </s> and counts (<s>, <s>) as a bigram. We pad contexts
  only (with a pad id that is never predicted) and predict one end-of-text per document. The
  tests feed NLTK exactly our n-grams: at each predicted token, the n-gram ending there and its
  suffixes (so NLTK's lower-order tables are the suffix counts ours are).
- Vocabulary. NLTK's ``len(vocab)`` counts <UNK>; our vocabulary has an id for it too (never seen),
  and NLTK maps <s> to <UNK> in contexts, the role of our pad id.
- MLE in a context never seen: NLTK gives 0 to every token (not a distribution); ours backs off to
  the longest seen suffix, which is what NLTK's own ``generate`` does.
- Kneser-Ney: NLTK's recursion is interpolated KN with continuation counts below the highest order,
  unseen contexts backing off with weight 1, as ours; but it ends at the unsmoothed continuation
  unigram N1+(. w) / N1+(. .), which gives 0 to a token never seen after anything, where Chen &
  Goodman (and we) discount that level too and interpolate with the uniform 1 / V. So
      ours(w | h) = nltk(w | h) + Gamma(h) * (p1_ours(w) - p1_nltk(w)),
  Gamma(h) = the product of NLTK's own gamma over the backoff chain of h, and p1_ours by hand.
  NLTK's default discount is 0.1; both sides are given the same fixed one. Estimated discounts
  and modified KN (absent from NLTK) are checked by hand and against a dict-based recursion.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.generate.config import GenerationConfig
from lmforge.generate.decode import generate
from lmforge.models import ngram_counts
from lmforge.models.ngram import NGramConfig, NGramLM, estimate_discounts

SENTENCES = [
    line.split()
    for line in ("the cat sat on the mat", "the dog sat on the log", "a cat saw the dog", "the cat sat")
]
WORDS = sorted({w for s in SENTENCES for w in s}) + ["zebra", "</s>", "<UNK>"]  # zebra: never seen
ID = {w: i for i, w in enumerate(WORDS)}
EOS = ID["</s>"]
CONTEXT_WORDS = [w for w in WORDS if w not in ("</s>", "<UNK>")]


# --- NLTK fed our n-grams ----------------------------------------------------------------------
def nltk_model(cls, order: int, **kwargs):
    nltk_lm = pytest.importorskip("nltk.lm")
    text = []
    for sentence in SENTENCES:
        padded = ["<s>"] * (order - 1) + sentence + ["</s>"]
        text.append(
            [
                tuple(padded[i - k + 1 : i + 1])
                for i in range(order - 1, len(padded))
                for k in range(1, order + 1)
            ]
        )
    model = getattr(nltk_lm, cls)(order=order, **kwargs)
    model.fit(text, vocabulary_text=[w for w in WORDS if w != "<UNK>"])
    assert len(model.vocab) == len(WORDS)
    return model


def ours(order: int, **kwargs) -> NGramLM:
    docs = [[ID[w] for w in s] for s in SENTENCES]
    return NGramLM.fit(docs, NGramConfig(order=order, eos_id=EOS, vocab_size=len(WORDS), **kwargs))


def contexts(order: int) -> list[tuple[str, ...]]:
    """Every context of length order - 1: words, or <s> padding followed by words."""
    out = []
    for pads in range(order):
        for words in itertools.product(CONTEXT_WORDS, repeat=order - 1 - pads):
            out.append(("<s>",) * pads + words)
    return out


def our_distribution(lm: NGramLM, context: tuple[str, ...]) -> np.ndarray:
    return lm.next_distribution([ID[w] for w in context if w != "<s>"])  # short contexts are padded


def nltk_seen(model, context: tuple[str, ...]) -> bool:
    return bool(model.counts[model.vocab.lookup(context)]) if context else True


@pytest.mark.parametrize("order", [2, 3])
def test_mle_matches_nltk_on_seen_contexts(order):
    nltk, lm = nltk_model("MLE", order), ours(order, smoothing="mle")
    compared = 0
    for context in contexts(order):
        if not nltk_seen(nltk, context):
            continue
        compared += 1
        expected = [nltk.score(w, context) for w in WORDS]
        np.testing.assert_allclose(our_distribution(lm, context), expected, rtol=0, atol=1e-12)
    assert compared > 5


@pytest.mark.parametrize("order", [2, 3])
def test_mle_backs_off_where_nltk_gives_zero(order):
    nltk, lm = nltk_model("MLE", order), ours(order, smoothing="mle")
    for context in contexts(order):
        if nltk_seen(nltk, context):
            continue
        assert all(nltk.score(w, context) == 0 for w in WORDS)  # NLTK: not a distribution
        suffix = context
        while not nltk_seen(nltk, suffix):
            suffix = suffix[1:]
        expected = [nltk.score(w, suffix) for w in WORDS]
        np.testing.assert_allclose(our_distribution(lm, context), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize(("nltk_cls", "k"), [("Laplace", 1.0), ("Lidstone", 0.25)])
def test_add_k_matches_nltk_laplace_and_lidstone_everywhere(order, nltk_cls, k):
    kwargs = {"gamma": k} if nltk_cls == "Lidstone" else {}
    nltk, lm = nltk_model(nltk_cls, order, **kwargs), ours(order, smoothing="add-k", k=k)
    for context in contexts(order):  # unseen contexts included: both give 1 / V
        expected = [nltk.score(w, context) for w in WORDS]
        np.testing.assert_allclose(our_distribution(lm, context), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_stupid_backoff_matches_nltk_everywhere(order):
    nltk, lm = nltk_model("StupidBackoff", order, alpha=0.4), ours(order, smoothing="stupid-backoff")
    for context in contexts(order):
        expected = [nltk.score(w, context) for w in WORDS]
        np.testing.assert_allclose(our_distribution(lm, context), expected, rtol=0, atol=1e-12)


def nltk_gamma_product(model, context: tuple[str, ...]) -> float:
    """Gamma(h): what NLTK's recursion multiplies its unigram score by (gamma 1 at unseen contexts)."""
    product, context = 1.0, model.vocab.lookup(context)
    while context:
        if model.counts[context]:
            product *= model.estimator.alpha_gamma("the", context)[1]  # gamma does not depend on the word
        context = context[1:]
    return product


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("discount", [0.1, 0.75])
def test_kneser_ney_matches_nltk_up_to_its_unigram_base(order, discount):
    nltk = nltk_model("KneserNeyInterpolated", order, discount=discount)
    lm = ours(order, smoothing="kn", discount=discount)
    estimator, V = nltk.estimator, len(WORDS)
    continuation = {w: estimator._continuation_counts(w) for w in WORDS}  # (N1+(. w), N1+(. .))
    types = sum(1 for c, _ in continuation.values() if c > 0)
    ours_unigram = {  # Chen & Goodman: the unigram level discounted too, interpolated with 1 / V
        w: max(c - discount, 0) / total + discount * types / total / V
        for w, (c, total) in continuation.items()
    }
    for context in contexts(order):
        gamma = nltk_gamma_product(nltk, context)
        expected = [
            nltk.score(w, context) + gamma * (ours_unigram[w] - estimator.unigram_score(w)) for w in WORDS
        ]
        np.testing.assert_allclose(our_distribution(lm, context), expected, rtol=0, atol=1e-9)


# --- a dict-based reference, for Kneser-Ney with estimated and modified discounts ------------------
def reference_grams(docs, order: int, eos: int | None, pad: int) -> Counter:
    grams = Counter()
    for doc in docs:
        doc = list(doc) + ([eos] if eos is not None else [])
        padded = [pad] * (order - 1)
        for token in doc:
            grams[tuple(padded[len(padded) - order + 1 :]) + (token,) if order > 1 else (token,)] += 1
            padded.append(token)
            if token == eos:
                padded = [pad] * (order - 1)
    return grams


def reference_kn(docs, order: int, vocab_size: int, eos: int, modified: bool):
    """p(w | h) by the textbook recursion over Python dicts, and the discounts per order."""
    values = {order: reference_grams(docs, order, eos, vocab_size)}
    for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
        values[k] = Counter(gram[1:] for gram in values[k + 1])
    discounts = {}
    for k in range(1, order + 1):
        n = Counter(values[k].values())
        y = n[1] / (n[1] + 2 * n[2]) if n[1] + 2 * n[2] else math.nan
        if not modified:
            discounts[k] = [y if 0 < y <= 1 else 0.5] * 3
            continue
        raw = [
            1 - 2 * y * n[2] / n[1] if n[1] else math.nan,
            2 - 3 * y * n[3] / n[2] if n[2] else math.nan,
            3 - 4 * y * n[4] / n[3] if n[3] else math.nan,
        ]
        discounts[k] = [
            d if math.isfinite(d) and 0 < d <= c else f for c, d, f in zip((1, 2, 3), raw, (0.5, 1, 1.5))
        ]

    def prob(w: int, h: tuple[int, ...]) -> float:
        lower = prob(w, h[1:]) if h else 1 / vocab_size
        k = len(h) + 1
        followers = {gram[-1]: c for gram, c in values[k].items() if gram[:-1] == h}
        if not followers:
            return lower
        total, d, c = sum(followers.values()), discounts[k], followers.get(w, 0)
        kept = max(c - d[min(c, 3) - 1], 0) if c else 0
        gamma = sum(d[min(v, 3) - 1] for v in followers.values()) / total
        return kept / total + gamma * lower

    return prob, discounts


def padded_context(ids: list[int], order: int, eos: int, pad: int) -> tuple[int, ...]:
    if eos in ids:
        ids = ids[len(ids) - ids[::-1].index(eos) :]
    ids = [pad] * (order - 1) + list(ids)
    return tuple(ids[len(ids) - (order - 1) :]) if order > 1 else ()


def random_docs(rng: np.random.Generator, vocab: int, count: int, max_len: int) -> list[list[int]]:
    return [rng.integers(0, vocab, rng.integers(0, max_len + 1)).tolist() for _ in range(count)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing", ["kn", "modified-kn"])
@pytest.mark.parametrize("seed", [0, 1])
def test_kneser_ney_matches_dict_reference(order, smoothing, seed):
    rng = np.random.default_rng(seed)
    V, eos = 7, 6  # ids 0..4 appear; 5 never does
    docs = random_docs(rng, 5, 12, 8)
    lm = NGramLM.fit(docs, NGramConfig(order=order, smoothing=smoothing, eos_id=eos, vocab_size=V))
    prob, discounts = reference_kn(docs, order, V, eos, modified=smoothing == "modified-kn")
    np.testing.assert_allclose(lm.discounts, [discounts[k] for k in range(1, order + 1)], rtol=0, atol=1e-12)
    for context in itertools.product(range(V), repeat=order - 1):
        h = padded_context(list(context), order, eos, V)
        expected = [prob(w, h) for w in range(V)]
        np.testing.assert_allclose(lm.next_distribution(list(context)), expected, rtol=0, atol=1e-12)


def test_estimated_discounts_are_chen_goodman_by_hand():
    # trigram counts of the cows corpus below: 11 twice, then 4, 3, 2, 1, 1 and 4, 3, 2, 1, 1
    # -> n1 = 4, n2 = 2, n3 = 2, n4 = 2: Y = 4 / (4 + 2 * 2) = 1/2
    lm = NGramLM.fit(cows_docs(), NGramConfig(order=3, smoothing="modified-kn", eos_id=7, vocab_size=9))
    assert lm.discounts[2].tolist() == [1 - 2 * 0.5 * 2 / 4, 2 - 3 * 0.5 * 2 / 2, 3 - 4 * 0.5 * 2 / 2]
    plain = NGramLM.fit(cows_docs(), NGramConfig(order=3, smoothing="kn", eos_id=7, vocab_size=9))
    assert plain.discounts[2].tolist() == [0.5, 0.5, 0.5]  # D = n1 / (n1 + 2 n2)
    # bigram continuation counts N1+(. h w): (P cows) 1, (cows eat) 1, (eat x) 1 each, (x </s>) 1 each
    # -> every count is 1: n2 = 0, Y = 1, D1 = 1 - 0 = 1; D2, D3+ undefined -> fallbacks 1, 1.5
    assert lm.discounts[1].tolist() == [1.0, 1.0, 1.5]
    assert estimate_discounts(np.array([5.0, 7.0]), modified=True).tolist() == [0.5, 1.0, 1.5]  # no n1
    assert estimate_discounts(np.array([5.0, 7.0]), modified=False).tolist() == [0.5] * 3


# --- the lecture's worked example --------------------------------------------------------------
COWS = ["cows", "eat", "corn", "grass", "hay", "if", "which", "</s>", "oats"]


def cows_docs() -> list[list[int]]:
    counts = {"corn": 4, "grass": 3, "hay": 2, "if": 1, "which": 1}
    return [[0, 1, COWS.index(w)] for w, c in counts.items() for _ in range(c)]


def test_lecture_cows_eat_corn_is_four_elevenths():
    lm = NGramLM.fit(cows_docs(), NGramConfig(order=3, smoothing="mle", eos_id=7, vocab_size=9))
    p = lm.next_distribution([COWS.index("cows"), COWS.index("eat")])
    for word, count in {"corn": 4, "grass": 3, "hay": 2, "if": 1, "which": 1, "oats": 0}.items():
        assert p[COWS.index(word)] == count / 11
    greedy = generate(lm, [[0, 1]], GenerationConfig(strategy="greedy", max_new_tokens=1))
    assert greedy[0][0].ids == [COWS.index("corn")]
    rolls = GenerationConfig(strategy="sample", max_new_tokens=1, num_return_sequences=4400)
    draws = np.array(
        [c.ids[0] for c in generate(lm, [[0, 1]], rolls, generator=torch.Generator().manual_seed(0))[0]]
    )
    frequencies = np.bincount(draws, minlength=9)[2:7] / len(draws)
    np.testing.assert_allclose(frequencies, np.array([4, 3, 2, 1, 1]) / 11, atol=0.025)  # the weighted die


# --- every smoothed distribution sums to one --------------------------------------------------
corpora = st.lists(st.lists(st.integers(0, 5), max_size=8), min_size=1, max_size=6)
any_context = st.lists(st.integers(0, 7), max_size=5)


@settings(max_examples=60, deadline=None)
@given(corpora, any_context, st.integers(1, 4), st.sampled_from(["add-k", "kn", "modified-kn", "mle"]))
def test_distribution_sums_to_one_for_any_context(docs, context, order, smoothing):
    lm = NGramLM.fit(docs, NGramConfig(order=order, smoothing=smoothing, eos_id=6, vocab_size=8))
    p = lm.next_distribution(context)
    assert abs(p.sum() - 1) < 1e-9
    if smoothing != "mle":  # smoothing leaves no token impossible, 7 (never seen) included
        assert (p > 0).all()


@settings(max_examples=40, deadline=None)
@given(corpora, st.lists(st.integers(0, 7), min_size=1, max_size=12), st.integers(1, 4))
def test_logprobs_of_a_text_equal_its_next_distributions(docs, text, order):
    lm = NGramLM.fit(docs, NGramConfig(order=order, smoothing="modified-kn", eos_id=6, vocab_size=8))
    expected = [math.log(lm.next_distribution(text[:i])[token]) for i, token in enumerate(text)]
    np.testing.assert_allclose(lm.logprobs(np.array(text)), expected, rtol=0, atol=1e-12)


def test_stupid_backoff_is_not_normalised_and_follows_brants_by_hand():
    lm = NGramLM.fit(cows_docs(), NGramConfig(order=3, smoothing="stupid-backoff", eos_id=7, vocab_size=9))
    seen = lm.next_distribution([0, 1])  # c(cows eat .) = 11
    assert seen[2] == 4 / 11
    # cows never follows "cows eat": 0.4 * S(cows | eat) = 0.4 * 0.4 * c(cows) / N = 0.16 * 11 / 44
    assert seen[0] == pytest.approx(0.4 * 0.4 * 11 / 44, abs=1e-15)
    assert seen.sum() > 1 + 1e-3
    unseen = lm.next_distribution([2, 2])  # "corn corn": 0.4 * S(. | corn), S(</s> | corn) = 1
    assert unseen[7] == pytest.approx(0.4, abs=1e-15)
    assert unseen.sum() < 1 - 1e-3
    assert seen[8] == 0  # "oats" was never seen at all


# --- tiny corpora --------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", ["add-k", "kn", "modified-kn"])
@pytest.mark.parametrize("docs", [[[0, 1, 2]], [[0], [1, 2]], [[3, 1, 2], [2, 3], [0, 0, 0]]])
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_tiny_corpora_give_finite_probabilities(smoothing, docs, order):
    lm = NGramLM.fit(docs, NGramConfig(order=order, smoothing=smoothing, eos_id=4, vocab_size=10))
    for context in ([], [9], [9, 8, 7, 6], [0, 1], [4, 2]):
        p = lm.next_distribution(context)
        assert np.isfinite(p).all() and (p > 0).all() and abs(p.sum() - 1) < 1e-9
    text = np.array([9, 8, 0, 1, 2, 4, 7])  # tokens and contexts never seen
    assert np.isfinite(lm.logprobs(text)).all() and math.isfinite(lm.perplexity(text))


def test_mle_gives_zero_to_unseen_tokens_and_infinite_perplexity():
    lm = NGramLM.fit([[0, 1, 2]], NGramConfig(order=2, smoothing="mle", eos_id=4, vocab_size=10))
    assert lm.next_distribution([0])[2] == 0
    assert lm.next_distribution([]).tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # (P): 0 starts documents
    assert lm.next_distribution([9]).tolist() == [0.25, 0.25, 0.25, 0, 0.25, 0, 0, 0, 0, 0]  # unseen: unigram
    assert lm.next_distribution([2]).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # 2 </s>
    assert lm.logprobs([0, 1, 2, 4]).tolist() == [0, 0, 0, 0]
    assert lm.logprobs([0, 2])[1] == -math.inf
    assert lm.perplexity([0, 2]) == math.inf


# --- documents, input checks, save and load ------------------------------------------------------
def test_contexts_never_cross_end_of_text():
    flat = NGramLM.fit(np.array([0, 1, 4, 2, 3, 4]), NGramConfig(order=3, smoothing="mle", eos_id=4))
    docs = NGramLM.fit([[0, 1], [2, 3]], NGramConfig(order=3, smoothing="mle", eos_id=4))
    assert flat.vocab_size == docs.vocab_size == 5
    for a, b in zip(flat.state_dict().values(), docs.state_dict().values()):
        assert a.tolist() == b.tolist()
    assert flat.next_distribution([0, 1, 4]).tolist() == [0.5, 0, 0.5, 0, 0]  # after </s>: a document start
    assert flat.next_distribution([1, 4, 2])[3] == 1


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("vocab", [6, 3_000_000])  # presence tables, then argsort ranks
@pytest.mark.parametrize("fused", [True, False])
def test_counts_equal_a_python_counter(order, vocab, fused, monkeypatch):
    if not fused:  # the path for (contexts x V^2) beyond int64
        monkeypatch.setattr(ngram_counts, "INT64_LIMIT", 1)
        monkeypatch.setattr(ngram_counts, "_check_fits", lambda *_: None)
    rng = np.random.default_rng(order)
    docs = random_docs(rng, 5, 30, 10)
    docs = [[t * (vocab // 6) for t in doc] for doc in docs]  # spread the ids over the vocabulary
    eos = vocab - 1
    lm = NGramLM.fit(docs, NGramConfig(order=order, smoothing="mle", eos_id=eos, vocab_size=vocab))
    expected = reference_grams(docs, order, eos, vocab)
    counts = lm.counts
    got = Counter()
    for key, c in zip(counts.gram_keys[-1], counts.raw[-1]):
        context_id, word = divmod(int(key), counts.base)
        tokens = []
        for length in range(order - 1, 0, -1):
            context_id, far = divmod(int(counts.context_keys[length][context_id]), counts.base)
            tokens.append(far)
        got[tuple(tokens) + (word,)] = int(c)
    assert got == expected


@pytest.mark.parametrize("smoothing", ["mle", "add-k", "kn", "modified-kn", "stupid-backoff"])
def test_save_load_roundtrip_gives_identical_scores(tmp_path, smoothing):
    lm = ours(3, smoothing=smoothing, k=0.5, discount=[0.4, 0.9, 1.2] if smoothing == "modified-kn" else None)
    path = lm.save(tmp_path / "run")
    assert path.name == "ngram.safetensors"
    assert {a.dtype for a in load_file(path).values()} == {np.dtype(np.int64)}  # plain arrays, no pickle
    loaded = NGramLM.load(tmp_path / "run")
    assert loaded.config == lm.config
    line = "the cat sat on the log </s> a dog sat"
    text = np.array([ID[w] for w in line.split()])
    assert loaded.logprobs(text).tolist() == lm.logprobs(text).tolist()


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        NGramLM.load(tmp_path)
    (tmp_path / "ngram.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable n-gram model"):
        NGramLM.load(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 0}, "order"),
        ({"smoothing": "good-turing"}, "unknown smoothing"),
        ({"k": 0.0}, "k > 0"),
        ({"discount": 1.5, "smoothing": "kn"}, r"\[0, 1\]"),
        ({"discount": [0.5, 1.0, 1.5], "smoothing": "kn"}, "modified-kn"),
        ({"backoff_alpha": -1.0}, "alpha"),
        ({"vocab_size": 5, "eos_id": 5}, "eos_id"),
    ],
)
def test_bad_settings_raise_user_input_error(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        NGramConfig(**kwargs)


def test_bad_data_raises_data_error():
    with pytest.raises(DataError, match="empty"):
        NGramLM.fit(np.array([], dtype=np.int64), NGramConfig())
    with pytest.raises(DataError, match=r"token id 12 \(position 1\)"):
        NGramLM.fit(np.array([1, 12]), NGramConfig(vocab_size=10))
    with pytest.raises(DataError, match="1-D arrays of integer ids"):
        NGramLM.fit(np.array([0.5, 1.0]), NGramConfig())
    lm = NGramLM.fit(np.array([1, 2, 3]), NGramConfig())
    with pytest.raises(UserInputError, match="context: token id 7"):
        lm.next_distribution([7])
    with pytest.raises(UserInputError, match="empty text"):
        lm.perplexity([])

"""BLEU, chrF and exact match: hand-computed BLEU, sacrebleu's own functions, and the install hint."""

from __future__ import annotations

import builtins
import math

import pytest

from lmforge.data.seq2seq_metrics import (
    bleu_tokenizer_for,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    seq2seq_scores,
)
from lmforge.errors import LMForgeError, UserInputError

sacrebleu = pytest.importorskip("sacrebleu")


def test_bleu_of_one_sentence_by_hand():
    # matched n-grams 4/5, 3/4, 2/3, 1/2 and equal lengths: no brevity penalty
    result = corpus_bleu(["a b c d e"], ["a b c d f"])
    assert result.score == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25, abs=1e-9)
    assert "tok:13a" in result.signature and f"version:{sacrebleu.__version__}" in result.signature


def test_bleu_brevity_penalty_by_hand():
    # every n-gram matches; 4 words against 6: BP = exp(1 - 6/4)
    assert corpus_bleu(["a b c d"], ["a b c d e f"]).score == pytest.approx(
        100 * math.exp(1 - 6 / 4), abs=1e-9
    )


def test_bleu_is_corpus_level_counts_summed_not_an_average_of_sentences():
    result = corpus_bleu(["a b c d e", "a b c d"], ["a b c d f", "a b c d"])
    assert result.score == pytest.approx(100 * (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25, abs=1e-9)


HYPOTHESES = ["The cat sat on the mat.", "A dog barked loudly!", "Bonjour le monde", "x"]
REFERENCES = ["The cat is on the mat.", "The dog barked loudly.", "Bonjour tout le monde", "y"]


def test_bleu_and_chrf_equal_sacrebleus_own_functions():
    bleu = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES])
    chrf = sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES])
    assert corpus_bleu(HYPOTHESES, REFERENCES).score == pytest.approx(bleu.score, abs=1e-12)
    assert corpus_chrf(HYPOTHESES, REFERENCES).score == pytest.approx(chrf.score, abs=1e-12)
    chrf_plus = sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES], word_order=2)
    assert corpus_chrf(HYPOTHESES, REFERENCES, word_order=2).score == pytest.approx(
        chrf_plus.score, abs=1e-12
    )
    char = sacrebleu.corpus_bleu(["abcdef"], [["abcdxf"]], tokenize="char")
    assert corpus_bleu(["abcdef"], ["abcdxf"], tokenize="char").score == pytest.approx(char.score, abs=1e-12)
    assert corpus_chrf(HYPOTHESES, REFERENCES).signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")


def test_exact_match_percent():
    assert exact_match(["abc ", "abd", "x"], ["abc", "abc", "x"]) == pytest.approx(200 / 3)
    scores = seq2seq_scores(["abcdef"], ["abcdef"], tokenize="char")  # 4-grams exist
    assert (
        scores["exact_match"] == 100.0
        and scores["bleu"] == pytest.approx(100.0)
        and scores["chrf"] == pytest.approx(100.0)
    )
    assert "tok:char" in scores["bleu_signature"] and "nc:6" in scores["chrf_signature"]


def test_bleu_tokenizer_is_chosen_from_the_references():
    assert bleu_tokenizer_for(["abcdef", "ghij "]) == "char"  # surrounding whitespace aside
    assert bleu_tokenizer_for(["abc", "a b"]) == "13a"
    words = seq2seq_scores(HYPOTHESES, REFERENCES)
    assert words["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, abs=1e-12)
    letters = seq2seq_scores(["cbaxyzuv", "xyzabc"], ["cbaxyzuv", "xzyabc"])
    expected = sacrebleu.corpus_bleu(["cbaxyzuv", "xyzabc"], [["cbaxyzuv", "xzyabc"]], tokenize="char")
    assert (
        letters["bleu"] == pytest.approx(expected.score, abs=1e-12)
        and "tok:char" in letters["bleu_signature"]
    )


def test_mismatched_or_empty_lists_are_refused():
    with pytest.raises(UserInputError, match="2 outputs but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(UserInputError, match="no outputs to score"):
        exact_match([], [])
    with pytest.raises(UserInputError, match="BLEU tokenizer 'nope'"):
        corpus_bleu(["a"], ["a"], tokenize="nope")


def test_missing_sacrebleu_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_sacrebleu(name, *args, **kwargs):
        if name.startswith("sacrebleu"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sacrebleu)
    with pytest.raises(LMForgeError, match=r"pip install 'lmforge\[seq2seq\]'"):
        corpus_chrf(["a"], ["a"])

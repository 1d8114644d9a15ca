"""Corpus-level BLEU and chrF (through sacrebleu, with the signature that makes a score
reproducible) and exact match, for the outputs of a seq2seq model against reference targets.

    corpus_bleu(["a b c d e"], ["a b c d f"])
    -> CorpusScore(score=66.87, signature="nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")
       (matched n-grams 4/5, 3/4, 2/3, 1/2; same length, so no brevity penalty:
        100 * (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 66.87)

Corpus-level means the n-gram counts of all sentences are summed before the precisions are taken
(Papineni et al. 2002), not an average of sentence scores; a score without its signature (the
tokenizer, casing, smoothing, sacrebleu version) cannot be compared with another (Post 2018).
All three scores are on sacrebleu's 0-100 scale. BLEU's default tokenizer ``13a`` splits words
and punctuation; for strings without spaces (the copy/reverse/sort tasks) ``tokenize="char"``
scores characters, and ``seq2seq_scores`` picks it itself when no reference has a space. chrF (Popović 2015) compares character n-grams, so it needs no tokenizer.
Exact match is the share of outputs equal to their reference, ignoring surrounding whitespace.

sacrebleu is an optional dependency, imported when a score is asked for:
``pip install 'lmforge[seq2seq]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.errors import LMForgeError, UserInputError

INSTALL_HINT = "pip install 'lmforge[seq2seq]'"


@dataclass(frozen=True)
class CorpusScore:
    score: float  # 0-100
    signature: str  # sacrebleu's, e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def _metrics() -> Any:
    try:
        from sacrebleu import metrics
    except ImportError:
        raise LMForgeError(
            f"BLEU and chrF are computed with sacrebleu, which is not installed: {INSTALL_HINT}"
        ) from None
    return metrics


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise UserInputError(
            f"{len(hypotheses)} outputs but {len(references)} references; each output needs its reference"
        )
    if not hypotheses:
        raise UserInputError("no outputs to score; a corpus score needs at least one pair")
    return hypotheses, references


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False
) -> CorpusScore:
    """sacrebleu's corpus BLEU of ``hypotheses`` against one reference each."""
    hypotheses, references = _check(hypotheses, references)
    metrics = _metrics()
    try:
        bleu = metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
    except Exception as error:  # sacrebleu raises a bare error for an unknown tokenizer name
        raise UserInputError(f"BLEU tokenizer {tokenize!r}: {error}") from None
    result = bleu.corpus_score(hypotheses, [references])
    return CorpusScore(float(result.score), str(bleu.get_signature()))


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str], *, word_order: int = 0) -> CorpusScore:
    """sacrebleu's corpus chrF (``word_order=2``: chrF++) of ``hypotheses`` against one reference each."""
    hypotheses, references = _check(hypotheses, references)
    chrf = _metrics().CHRF(word_order=word_order)
    result = chrf.corpus_score(hypotheses, [references])
    return CorpusScore(float(result.score), str(chrf.get_signature()))


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Percent of outputs equal to their reference (surrounding whitespace ignored)."""
    hypotheses, references = _check(hypotheses, references)
    same = sum(
        hypothesis.strip() == reference.strip() for hypothesis, reference in zip(hypotheses, references)
    )
    return 100.0 * same / len(hypotheses)


def bleu_tokenizer_for(references: Sequence[str]) -> str:
    """``"char"`` when no reference has a space (a word tokenizer would see one word per
    sentence, and with no 2-, 3- or 4-grams BLEU is 0 whatever the output), else ``"13a"``."""
    return "13a" if any(any(ch.isspace() for ch in reference.strip()) for reference in references) else "char"


def seq2seq_scores(
    hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str | None = None
) -> dict[str, Any]:
    """{"bleu", "bleu_signature", "chrf", "chrf_signature", "exact_match"}: what ``evaluate`` reports.
    ``tokenize`` None picks BLEU's tokenizer with ``bleu_tokenizer_for`` (the signature says which)."""
    tokenize = tokenize if tokenize is not None else bleu_tokenizer_for(references)
    bleu = corpus_bleu(hypotheses, references, tokenize=tokenize)
    chrf = corpus_chrf(hypotheses, references)
    return {
        "bleu": bleu.score,
        "bleu_signature": bleu.signature,
        "chrf": chrf.score,
        "chrf_signature": chrf.signature,
        "exact_match": exact_match(hypotheses, references),
    }

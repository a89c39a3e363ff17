"""ROUGE, METEOR and BLEU over a corpus, computed as the paper's reference evaluation does.

The reference evaluation (DEP's ``model-eval.py``) calls HF ``evaluate``'s ``rouge``,
``meteor`` and ``sacrebleu`` metrics with their defaults on the whole test split of one
category. What those defaults amount to, and what is done here:

- ROUGE-1 / ROUGE-L: ``rouge_score.RougeScorer`` with its default tokenizer (lower-case,
  non-alphanumerics to spaces), no stemming; each pair scored as ``score(reference,
  prediction)``; the F1 values averaged over pairs. ``evaluate`` reports the median of a
  1,000-draw bootstrap of that mean (``BootstrapAggregator().mid``), which is the mean up
  to unseeded resampling noise; the plain mean is reported here so results reproduce.
- METEOR: nltk's ``single_meteor_score(reference_tokens, prediction_tokens)`` with its
  defaults (alpha 0.9, beta 3, gamma 0.5, lower-casing, Porter stems, WordNet 3.0 synonyms),
  averaged over pairs; tokens from ``dep_eval.metrics.tokenize``. nltk's own function is
  used because its quirks are part of the reference numbers: e.g. WordNet synonyms are
  looked up for the Porter STEMS left after exact and stem matching ("movie" -> "movi"
  finds no synset, so movie/film never match, while car/auto do).
- BLEU: sacrebleu's corpus BLEU (one reference per prediction, default 13a tokenizer,
  exponential smoothing), on the 0-100 scale. Corpus-level: n-gram counts are pooled over
  all pairs before the precisions are taken, so it is NOT a mean of sentence BLEUs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rougeL")


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


@functools.lru_cache(maxsize=1)
def _rouge_scorer():  # noqa: ANN202 - rouge_score has no type hints
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


def rouge_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F1 over the pairs: ``{"rouge1": ..., "rougeL": ...}``."""
    _check(predictions, references)
    if not predictions:
        return {name: float("nan") for name in ROUGE_TYPES}
    scorer = _rouge_scorer()
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}


def meteor(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR over the pairs (needs WordNet 3.0; provisioned on first use)."""
    from nltk.translate.meteor_score import single_meteor_score

    from dep_eval.metrics.tokenize import word_tokens
    from dep_eval.metrics.wordnet import ensure_wordnet

    _check(predictions, references)
    if not predictions:
        return float("nan")
    ensure_wordnet()
    total = 0.0
    for prediction, reference in zip(predictions, references, strict=True):
        total += single_meteor_score(word_tokens(reference), word_tokens(prediction))
    return total / len(predictions)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of the predictions against one reference each."""
    import sacrebleu

    _check(predictions, references)
    if not predictions:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)

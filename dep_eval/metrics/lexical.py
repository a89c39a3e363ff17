"""ROUGE, METEOR and BLEU over a corpus, computed as the paper's reference evaluation does.

The reference evaluation (DEP's ``model-eval.py``) calls HF ``evaluate``'s ``rouge``,
``meteor`` and ``sacrebleu`` metrics with their defaults on the whole test split of one
category. What those defaults amount to, and what is done here:

- ROUGE-1 / ROUGE-L: ``rouge_score.RougeScorer``, no stemming; each pair scored as
  ``score(reference, prediction)``; the F1 values averaged over pairs. Its default tokenizer
  (lower-case, everything but ``[a-z0-9]`` to spaces) gives a perfect copy of a Chinese,
  Arabic or emoji text 0.0, so ``tokenize.RougeTokenizer`` is used: the same tokens on
  ASCII and Latin-script text (every English score is unchanged: results/rouge_tokenizer.md
  checks the shared data), plus the words of other scripts. ``evaluate`` reports the median of a
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
  all pairs before the precisions are taken, so it is NOT a mean of sentence BLEUs. Per
  pair, ``bleu_statistics`` keeps sacrebleu's sufficient statistics (hypothesis and
  reference length, matched and total n-grams for n = 1..4); ``bleu_from_statistics`` turns
  any sum of them into the corpus score, which is how intervals resample corpus BLEU.
- Length control: ``truncate_to_reference`` cuts a prediction to the reference's number of
  whitespace-separated words (shorter predictions are left as they are).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rougeL")


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    from dep_eval.metrics.tokenize import RougeTokenizer

    return rouge_scorer.RougeScorer(
        list(ROUGE_TYPES), use_stemmer=False, tokenizer=RougeTokenizer()
    )


def rouge_pair(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 of one pair."""
    scores = _rouge_scorer().score(reference, prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


def meteor_pair(prediction: str, reference: str) -> float:
    """nltk METEOR of one pair (WordNet 3.0 is provisioned on first use)."""
    from nltk.translate.meteor_score import single_meteor_score

    from dep_eval.metrics.tokenize import word_tokens
    from dep_eval.metrics.wordnet import ensure_wordnet

    ensure_wordnet()
    return float(single_meteor_score(word_tokens(reference), word_tokens(prediction)))


BLEU_ORDER = 4
BLEU_STATISTICS = 2 + 2 * BLEU_ORDER  # sys_len, ref_len, correct[1..4], total[1..4]


@functools.lru_cache(maxsize=1)
def _sentence_bleu():
    from sacrebleu.metrics import BLEU

    # effective_order only changes a sentence's own score, not its statistics; it silences
    # sacrebleu's advice to use it for sentence-level BLEU
    return BLEU(effective_order=True)


def bleu_statistics(prediction: str, reference: str) -> list[int]:
    """sacrebleu's sufficient statistics of one pair: ``[sys_len, ref_len, *correct, *total]``."""
    score = _sentence_bleu().sentence_score(prediction, [reference])
    return [
        int(score.sys_len),
        int(score.ref_len),
        *map(int, score.counts),
        *map(int, score.totals),
    ]


def bleu_from_statistics(totals: Sequence[float]) -> float:
    """Corpus BLEU (0-100, exponential smoothing, as ``bleu``) of summed statistics."""
    from sacrebleu.metrics import BLEU

    if len(totals) != BLEU_STATISTICS:
        raise ValueError(f"BLEU statistics have {BLEU_STATISTICS} entries, got {len(totals)}")
    values = [int(round(v)) for v in totals]
    correct, total = values[2 : 2 + BLEU_ORDER], values[2 + BLEU_ORDER :]
    return float(BLEU.compute_bleu(correct, total, values[0], values[1], smooth_method="exp").score)


def truncate_to_reference(prediction: str, reference: str) -> str:
    """The prediction's first ``len(reference.split())`` words, joined by single spaces."""
    words = prediction.split()
    limit = len(reference.split())
    return prediction if len(words) <= limit else " ".join(words[:limit])


def word_count(text: str) -> int:
    """Whitespace-separated words: the unit of the length metrics."""
    return len(text.split())


def rouge_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F1 over the pairs: ``{"rouge1": ..., "rougeL": ...}``."""
    _check(predictions, references)
    if not predictions:
        return {name: float("nan") for name in ROUGE_TYPES}
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for name, value in rouge_pair(prediction, reference).items():
            totals[name] += value
    return {name: total / len(predictions) for name, total in totals.items()}


def meteor(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR over the pairs (needs WordNet 3.0; provisioned on first use)."""
    _check(predictions, references)
    if not predictions:
        return float("nan")
    pairs = zip(predictions, references, strict=True)
    return sum(meteor_pair(p, r) for p, r in pairs) / len(predictions)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of the predictions against one reference each."""
    import sacrebleu

    _check(predictions, references)
    if not predictions:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)

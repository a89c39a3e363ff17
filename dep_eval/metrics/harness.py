"""lm-eval glue: per-document ``process_results`` and corpus-level aggregations.

How lm-eval 0.4.13 uses these (``lm_eval/evaluator.py``, ``evaluator_utils.py``):
``process_results(doc, results)`` runs once per document after all generation and returns
``{metric_name: value}``; the values of each name are collected over the task's documents
and handed as one list to that metric's ``aggregation`` (from the YAML ``metric_list``).
With ``--log_samples`` the same per-document values are written into the samples file.

Per document, every quality metric returns its own score (ROUGE-1/-L F1, METEOR, BERTScore
F1) or, for BLEU, sacrebleu's sufficient statistics (``lexical.bleu_statistics``); the
aggregations turn them into the paper's corpus-level numbers: means of the scores, corpus
BLEU of the summed statistics (n-gram counts pooled over the corpus, not a mean of sentence
BLEUs). The samples file thus keeps every document's scores, so two runs over the same
documents can be paired later (``dep-eval leaderboard --against``).

Uncertainty: lm-eval fills ``<metric>_stderr`` only for its own aggregation functions and
writes "N/A" for ours. lm-eval also writes every metric's aggregate under
``<metric>,<filter>``, after the "N/A" of the metric before it. So each quality metric
comes with three more metrics from the task's own ``metric_list``: ``<metric>_stderr``
(listed after ``<metric>``, so its number replaces lm-eval's "N/A"), ``<metric>_ci_low`` and
``<metric>_ci_high``: the bootstrap standard error and the 95 % percentile interval over
documents, 1,000 seeded resamples, the corpus statistic recomputed on each
(``dep_eval.metrics.uncertainty``). They receive the same per-document values, computed
once per metric and cached. No lm-eval code is patched; a test runs lm_eval and checks that
the numbers land (tests/test_uncertainty.py).

Length-controlled variants (``<metric>_lc``, not BERTScore): the same metrics on the
prediction cut to the reference's word count (``lexical.truncate_to_reference``). Length
metrics: ``gen_words`` and ``ref_words`` (mean whitespace-separated words) and
``length_ratio`` (total generated words over total reference words).

Names that may be absent:
- BERTScore goes out under ``bertscore_f1`` (the paper's led-base encoder) or
  ``bertscore_minilm_f1`` (the offline fallback), never both, decided once per process by
  which encoder loads (``dep_eval.metrics.bertscore``). The YAML lists both names;
  lm-eval aggregates only names that documents actually returned, so the unused one simply
  does not appear in the results (its ``higher_is_better`` entry is inert).
- Cost metrics (``llm_calls``, ``prompt_tokens``, ``generated_tokens``,
  ``seconds_per_sample``) come from ``dep_eval.costs``, which this project's models fill
  while generating. For other models (e.g. lm-eval's ``hf``) nothing was recorded, and the
  cost names are left out rather than reported as zeros or NaN.
Scored length: prediction and reference are each clipped to their first ``MAX_SCORED_CHARS``
characters before scoring (``dep_eval.data.parsing.LONG_TEXT_CHARS``, far above any real
review; the loader logs every longer text with its line). Without a cap one pasted megabyte
takes METEOR and BERTScore over a minute for a single document.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dep_eval import costs
from dep_eval.data.parsing import LONG_TEXT_CHARS
from dep_eval.data.records import Sample
from dep_eval.metrics import bertscore, lexical, uncertainty

logger = logging.getLogger(__name__)

MAX_SCORED_CHARS = LONG_TEXT_CHARS
TEXT_METRICS = ("rouge1", "rougeL", "meteor", "bleu")
LC = "_lc"  # suffix of the length-controlled variants
BERTSCORE_METRICS = ("bertscore_f1", "bertscore_minilm_f1")
QUALITY_METRICS = (*TEXT_METRICS, *BERTSCORE_METRICS, *(m + LC for m in TEXT_METRICS))
INTERVAL_SUFFIXES = ("_stderr", "_ci_low", "_ci_high")
# output name -> key of the dict ``dep_eval.costs.lookup`` returns
COST_METRICS = {
    "llm_calls": "llm_calls",
    "prompt_tokens": "prompt_tokens",
    "generated_tokens": "generated_tokens",
    "seconds_per_sample": "seconds",
}


def prediction_text(results: Sequence[Any]) -> str:
    """The generated review: lm-eval passes one string per request (one request per doc)."""
    if not results:
        return ""
    first = results[0]
    if isinstance(first, (list, tuple)):  # repeats > 1: score the first sample
        first = first[0] if first else ""
    return str(first).strip()


def reference_text(doc: dict[str, Any]) -> str:
    return str(doc["target"]["text"]).strip()


def _costs(doc: dict[str, Any]) -> dict[str, float]:
    """Per-document cost metrics recorded by this project's models, or ``{}``."""
    try:
        record = costs.lookup(Sample.from_doc(doc).key)
    except (KeyError, TypeError) as error:  # a doc not in this project's layout
        logger.debug("no cost lookup for a document (%s)", error)
        return {}
    if record is None:
        return {}
    out = {}
    for name, key in COST_METRICS.items():
        value = record.get(key)
        if value is not None:
            out[name] = float(value)
    out["setup_seconds"] = costs.setup_seconds()  # the run's total, on every document
    return out


def document_scores(prediction: str, reference: str) -> dict[str, Any]:
    """Every lexical quality metric of one pair, plain and length-controlled."""
    out: dict[str, Any] = {}
    for suffix, text in (
        ("", prediction),
        (LC, lexical.truncate_to_reference(prediction, reference)),
    ):
        rouge = lexical.rouge_pair(text, reference)
        out["rouge1" + suffix] = rouge["rouge1"]
        out["rougeL" + suffix] = rouge["rougeL"]
        out["meteor" + suffix] = lexical.meteor_pair(text, reference)
        out["bleu" + suffix] = lexical.bleu_statistics(text, reference)
    return out


def length_values(prediction: str, reference: str) -> dict[str, Any]:
    words = (lexical.word_count(prediction), lexical.word_count(reference))
    return {"gen_words": float(words[0]), "ref_words": float(words[1]), "length_ratio": words}


def process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Per-document values for every metric; see the module docstring."""
    prediction = prediction_text(results)[:MAX_SCORED_CHARS]
    reference = reference_text(doc)[:MAX_SCORED_CHARS]
    scores = document_scores(prediction, reference)
    name = bertscore.metric_name()
    if name is not None:
        scores[name] = bertscore.f1_scores([prediction], [reference])[0]
    out: dict[str, Any] = {}
    for metric, value in scores.items():
        out[metric] = value
        # after the metric itself: lm-eval writes its "N/A" stderr first, then these
        for suffix in INTERVAL_SUFFIXES:
            out[metric + suffix] = value
    out.update(length_values(prediction, reference))
    out.update(_costs(doc))
    return out


def _is_bleu(metric: str) -> bool:
    return metric.removesuffix(LC) == "bleu"


def _bleu_statistic(rows: np.ndarray) -> np.ndarray:
    sums = np.asarray(rows).sum(axis=-2)
    flat = sums.reshape(-1, sums.shape[-1])
    scores = [lexical.bleu_from_statistics(row) for row in flat]
    return np.asarray(scores, dtype=float).reshape(sums.shape[:-1])


def statistic_of(metric: str) -> uncertainty.Statistic:
    """How ``metric``'s per-document rows make its corpus score."""
    return _bleu_statistic if _is_bleu(metric) else uncertainty.mean_statistic


def corpus_score(metric: str, items: Sequence[Any]) -> float:
    if not items:
        return math.nan
    return float(statistic_of(metric)(np.asarray(items, dtype=float)))


@functools.lru_cache(maxsize=8)
def _interval(metric: str, items: tuple) -> uncertainty.Interval | None:
    # <metric>_stderr, _ci_low and _ci_high get equal lists in a row: one bootstrap for all
    interval = uncertainty.bootstrap_interval(np.asarray(items, dtype=float), statistic_of(metric))
    if interval is not None:
        logger.info(
            "%s: %.4g, 95%% bootstrap interval [%.4g, %.4g] (%d documents, %d resamples)",
            metric, interval.estimate, interval.low, interval.high, interval.n, interval.resamples,
        )  # fmt: skip
    return interval


def _hashable(items: Sequence[Any]) -> tuple:
    return tuple(tuple(item) if isinstance(item, (list, tuple)) else item for item in items)


def _aggregation(metric: str, part: str) -> Callable[[Sequence[Any]], float | str]:
    def aggregate(items: Sequence[Any]) -> float | str:
        if part == "":
            return corpus_score(metric, items)
        interval = _interval(metric, _hashable(items)) if items else None
        if interval is None:  # one document, or intervals switched off
            return "N/A"
        return {"_stderr": interval.stderr, "_ci_low": interval.low, "_ci_high": interval.high}[
            part
        ]

    aggregate.__name__ = aggregate.__qualname__ = metric + part
    return aggregate


def _length_ratio(items: Sequence[Sequence[float]]) -> float:
    generated = sum(item[0] for item in items)
    reference = sum(item[1] for item in items)
    return generated / reference if reference else math.nan


# Every aggregation the task YAMLs name (tasks/utils.py re-exports them).
AGGREGATIONS: dict[str, Callable[[Sequence[Any]], Any]] = {
    metric + part: _aggregation(metric, part)
    for metric in QUALITY_METRICS
    for part in ("", *INTERVAL_SUFFIXES)
}
AGGREGATIONS["length_ratio"] = _length_ratio
rouge1 = AGGREGATIONS["rouge1"]
rougeL = AGGREGATIONS["rougeL"]
meteor = AGGREGATIONS["meteor"]
bleu = AGGREGATIONS["bleu"]
bertscore_f1 = AGGREGATIONS["bertscore_f1"]

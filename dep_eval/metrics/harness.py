"""lm-eval glue: per-document ``process_results`` and corpus-level aggregations.

How lm-eval 0.4.13 uses these (``lm_eval/evaluator.py``, ``evaluator_utils.py``):
``process_results(doc, results)`` runs once per document after all generation and returns
``{metric_name: value}``; the values of each name are collected over the task's documents
and handed as one list to that metric's ``aggregation`` (from the YAML ``metric_list``).
So text metrics return the ``(prediction, reference)`` pair and the aggregation scores the
whole corpus at once: the paper's numbers are corpus-level (BLEU pools n-gram counts; the
others are means computed in one batched pass).

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
Stderr: lm-eval bootstraps only its own registered aggregations, so these report "N/A"
instead of re-scoring the corpus thousands of times.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

from dep_eval import costs
from dep_eval.data.parsing import LONG_TEXT_CHARS
from dep_eval.data.records import Sample
from dep_eval.metrics import bertscore, lexical

logger = logging.getLogger(__name__)

Pair = tuple[str, str]  # (prediction, reference)

MAX_SCORED_CHARS = LONG_TEXT_CHARS
TEXT_METRICS = ("rouge1", "rougeL", "meteor", "bleu")
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


def process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Per-document values for every metric; see the module docstring."""
    pair: Pair = (
        prediction_text(results)[:MAX_SCORED_CHARS],
        reference_text(doc)[:MAX_SCORED_CHARS],
    )
    out: dict[str, Any] = dict.fromkeys(TEXT_METRICS, pair)
    name = bertscore.metric_name()
    if name is not None:
        out[name] = pair
    out.update(_costs(doc))
    return out


def _split(items: Sequence[Pair]) -> tuple[list[str], list[str]]:
    return [item[0] for item in items], [item[1] for item in items]


@functools.lru_cache(maxsize=4)
def _rouge(items: tuple[Pair, ...]) -> dict[str, float]:
    # ROUGE-1 and ROUGE-L of the same corpus are computed in one pass and cached, since
    # lm-eval calls their aggregations separately with equal lists.
    return lexical.rouge_f1(*_split(items))


def rouge1(items: Sequence[Pair]) -> float:
    return _rouge(tuple(map(tuple, items)))["rouge1"]


def rougeL(items: Sequence[Pair]) -> float:  # noqa: N802 - named after the metric
    return _rouge(tuple(map(tuple, items)))["rougeL"]


def meteor(items: Sequence[Pair]) -> float:
    return lexical.meteor(*_split(items))


def bleu(items: Sequence[Pair]) -> float:
    return lexical.bleu(*_split(items))


def bertscore_f1(items: Sequence[Pair]) -> float:
    """Mean BERTScore F1; serves both names (the encoder was fixed when the name was)."""
    if not items:
        return math.nan
    return bertscore.corpus_f1(*_split(items))

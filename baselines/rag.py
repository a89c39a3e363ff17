"""RAG: Non-Perso plus the user's top-k past reviews, retrieved with BM25.

METHOD.md: query = target review title + target item description; documents = each past
review's title + its item description; k = 8; one LLM call.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from rank_bm25 import BM25Okapi

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample
from dep_eval.engine import Engine, Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod
from dep_eval.methods.lm_eval_model import lm_eval_model_for
from dep_eval.prompts import fit_prompt, review_messages

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


@dataclasses.dataclass
class RagConfig(MethodConfig):
    k: int = 8
    max_prompt_tokens: int = 3072


def rag_prompt(
    llm: Engine,
    sample: Sample,
    pool: DataPool,
    past: Sequence[Review],
    max_prompt_tokens: int,
    notes: str = "",
) -> Prompt:
    """RAG's prompt (the retrieved reviews, best first, plus optional ``notes`` such as a
    PAG/DPL summary), dropping the least relevant reviews while it is too long."""
    return fit_prompt(
        llm,
        lambda n: Prompt(review_messages(sample, pool, past[:n], notes=notes)),
        len(past),
        max_prompt_tokens,
    )


class Rag(PersonalizationMethod):
    name = "rag"
    Config = RagConfig
    config: RagConfig

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        past = retrieve(sample, pool, self.config.k)
        return rag_prompt(self.llm, sample, pool, past, self.config.max_prompt_tokens)


RagLM = lm_eval_model_for(Rag)

"""PAG: summarize the user's preferences first, then generate with reviews + summary.

docs/method.md (PAG): one call writes a summary of the user's preferences from their reviews
(cacheable per user); a second writes the review from RAG's prompt plus that summary.

Which reviews feed the summary. RAG's retrieval is keyed on the target (its query is the
target title + item description), so a summary of *those* reviews would be a new call for
every target and could never be shared per user. A per-user summary must be built from the
profile alone, so by default (``summary_source="recent"``) it reads the user's ``k`` most
recent profile reviews, most recent first. Its prompt then depends only on the user's
profile, and the adapter's call cache (keyed on LLM + generation settings + seed + rendered
prompt, the seed itself derived from the prompt) turns that into one summary per
(user profile, LLM, settings): every task, rerun or resumed run over the same user reuses
it. ``summary_source="retrieved"`` summarizes the target's BM25-retrieved reviews instead
(target-dependent, one summary per sample) for those who want that reading of the spec.

The final call is RAG's prompt (top-k BM25 reviews) with the summary as ``notes``. Both
prompts drop their oldest / least relevant reviews first when longer than
``max_prompt_tokens``. A user with an empty profile gets no summary call (one call).
"""

from __future__ import annotations

import dataclasses
import logging

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample
from dep_eval.engine import Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod, Plan
from dep_eval.prompts import fit_prompt, past_review_block, retrieved_reviews_prompt
from dep_eval.registry import register_method
from dep_eval.retrieval import retrieve

logger = logging.getLogger(__name__)

SUMMARY_SYSTEM = (
    "You analyze product reviews. Read a user's past reviews and describe the user's "
    "preferences and writing style. Output only the summary."
)
SUMMARY_REQUEST = (
    "Summarize this user's preferences in one short paragraph: which products and qualities "
    "they care about, what they praise or criticize, how they rate, and how they write "
    "(length, tone, vocabulary)."
)
SUMMARY_NOTE = "A summary of this user's preferences and writing style:"
SUMMARY_SOURCES = ("recent", "retrieved")


@dataclasses.dataclass
class PagConfig(MethodConfig):
    k: int = 8  # reviews in the final prompt (BM25, as RAG) and in the summary prompt
    summary_source: str = "recent"  # "recent": per-user, cacheable; "retrieved": per-target
    summary_max_tokens: int = 256  # cap of the summary call, independent of max_gen_toks
    max_prompt_tokens: int = 3072

    def __post_init__(self) -> None:
        if self.summary_source not in SUMMARY_SOURCES:
            raise ValueError(
                f"summary_source={self.summary_source!r}: expected one of {SUMMARY_SOURCES}"
            )
        if self.k < 0 or self.summary_max_tokens < 1:
            raise ValueError("k must be >= 0 and summary_max_tokens >= 1")


def recent_reviews(sample: Sample, k: int) -> list[Review]:
    """The ``k`` most recent profile reviews, most recent first (the profile is oldest first)."""
    return list(reversed(sample.profile))[:k] if k > 0 else []


class Pag(PersonalizationMethod):
    name = "pag"
    Config = PagConfig
    config: PagConfig

    def summary_reviews(self, sample: Sample, pool: DataPool) -> list[Review]:
        if self.config.summary_source == "recent":
            return recent_reviews(sample, self.config.k)
        return retrieve(sample, pool, self.config.k)

    def summary_prompt(self, reviews: list[Review], pool: DataPool) -> Prompt:
        def build(n: int) -> Prompt:
            blocks = [past_review_block(i + 1, r, pool) for i, r in enumerate(reviews[:n])]
            content = (
                "The user's past reviews:\n\n" + "\n\n".join(blocks) + "\n\n" + SUMMARY_REQUEST
            )
            return Prompt(
                [
                    {"role": "system", "content": SUMMARY_SYSTEM},
                    {"role": "user", "content": content},
                ],
                max_new_tokens=self.config.summary_max_tokens,
            )

        # at least one review always stays: a summary of nothing is no summary
        return fit_prompt(
            self.llm, lambda n: build(max(n, 1)), len(reviews), self.config.max_prompt_tokens
        )

    def final_prompt(self, sample: Sample, pool: DataPool, summary: str) -> Prompt:
        past = retrieve(sample, pool, self.config.k)
        notes = f"{SUMMARY_NOTE}\n{summary.strip()}" if summary.strip() else ""
        return retrieved_reviews_prompt(
            self.llm, sample, pool, past, self.config.max_prompt_tokens, notes
        )

    def plan(self, sample: Sample, pool: DataPool) -> Plan:
        reviews = self.summary_reviews(sample, pool)
        summary = ""
        if reviews:
            (summary,) = yield [self.summary_prompt(reviews, pool)]
        return self.final_prompt(sample, pool, summary)


register_method(Pag, label="PAG", order=20)

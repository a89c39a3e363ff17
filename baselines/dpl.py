"""DPL: difference-aware personalization in language (Qiu et al. 2025), per docs/method.md.

For a sample of user ``u``:

1. **Candidate items**: profile reviews whose item at least ``min_reviewers`` (4) other users
   of the pool also reviewed, ranked by RAG's BM25 query (target title + target item
   description against past review title + item description), top ``k`` (8).
2. **Representatives**, per candidate: embed u's review and the other users' reviews of the
   item (``CachedEncoder``), KMeans them into ``n_clusters`` (5) clusters with a fixed
   ``random_state``, drop u's cluster, and take from each remaining cluster the review
   nearest its centroid: up to ``n_clusters - 1`` (4) representatives, largest cluster first.
3. **One comparison call per candidate**: u's review against the representatives' on
   writing style, emotional style and semantic style.
4. **One summary call**: the differences, with the retrieved (top-k BM25) reviews.
5. **One final call**: RAG's prompt plus the summary (``notes``).

That is k + 2 calls per sample when the profile has k candidates. Every auxiliary call goes
through the adapter's persistent call cache (its key is the rendered prompt, and every prompt
here is a deterministic function of the data and this config), so a rerun makes no
auxiliary call again and an interrupted run resumes after the last saved batch.

Whose data is what: u's reviews come from the sample's own profile (never from the pool, so
a row sees only its own earlier reviews); the pool supplies only the other users' reviews,
and it holds no target text of any split (see ``dep_eval.data.pool``).

Sparse data (the shared All_Beauty pool: about a quarter of the samples have no profile item
with 4 peer reviewers) degrades gracefully, and the run says so once (``end_run``) with counts:

- no item reaches ``min_reviewers``: the candidates are the items with at least
  ``fallback_min_reviewers`` (1) peers instead, same ranking (set it equal to
  ``min_reviewers`` to switch this off);
- no item has even that: no comparison and no summary; the sample gets RAG's prompt (1 call);
- an item with fewer distinct reviews (u + peers) than ``n_clusters``: KMeans runs with one
  cluster per distinct review, so every peer whose text differs from u's is a representative;
- fewer than ``k`` candidates: fewer comparison calls.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample
from dep_eval.engine import Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod, Plan
from dep_eval.prompts import (
    MAX_REVIEW_CHARS,
    clip_title,
    fit_prompt,
    item_lines,
    past_review_block,
    retrieved_reviews_prompt,
)
from dep_eval.registry import register_method
from dep_eval.retrieval import retrieve

logger = logging.getLogger(__name__)

ANALYST_SYSTEM = (
    "You analyze product reviews and how different people write them. Answer concisely and "
    "output only the analysis."
)
COMPARE_REQUEST = (
    "Compare the user's review with the other users' reviews of the same product. Describe "
    "how the user's review differs in:\n"
    "- writing style: length, structure, punctuation, vocabulary;\n"
    "- emotional style: tone, sentiment and how strongly it is expressed;\n"
    "- semantic style: which aspects of the product the user discusses and cares about."
)
SUMMARY_REQUEST = (
    "Summarize in one short paragraph what makes this user's reviews different from other "
    "users' reviews: their writing style, emotional style and semantic style (what they care "
    "about). Output only the summary."
)
SUMMARY_NOTE = "How this user's reviews differ from other users' reviews:"


@dataclasses.dataclass
class DplConfig(MethodConfig):
    k: int = 8  # candidate items compared, and retrieved reviews shown
    min_reviewers: int = 4  # other users of the pool who reviewed a candidate item
    fallback_min_reviewers: int = 1  # used when no profile item reaches min_reviewers
    n_clusters: int = 5  # KMeans clusters over u's review and the peers' (u's is dropped)
    random_state: int = 0  # KMeans seed: representatives are reproducible, so cacheable
    encoder: str | None = None  # sentence-transformers name/folder; None: embedded MiniLM
    compare_max_tokens: int = 256  # caps of the auxiliary calls, independent of max_gen_toks
    summary_max_tokens: int = 256
    max_prompt_tokens: int = 3072

    def __post_init__(self) -> None:
        if self.k < 0 or self.n_clusters < 2:
            raise ValueError("k must be >= 0 and n_clusters >= 2")
        if not 1 <= self.fallback_min_reviewers <= self.min_reviewers:
            raise ValueError("expected 1 <= fallback_min_reviewers <= min_reviewers")
        if self.compare_max_tokens < 1 or self.summary_max_tokens < 1:
            raise ValueError("compare_max_tokens and summary_max_tokens must be >= 1")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One candidate item: u's review of it and the chosen representatives' reviews."""

    review: Review
    representatives: tuple[Review, ...]
    n_peers: int
    n_clusters: int  # clusters KMeans actually used


def peer_reviews(pool: DataPool, user_id: str, asin: str) -> list[Review]:
    return [pool.reviews[user][position] for user, position in pool.peers(user_id, asin)]


def candidate_reviews(sample: Sample, pool: DataPool, k: int, min_reviewers: int) -> list[Review]:
    """Step 1: profile reviews whose item has >= ``min_reviewers`` peers, top ``k`` by BM25.

    The ranking is RAG's (``retrieve`` over the whole profile, so the same IDF and the same
    tie-break to the more recent review); an item the user reviewed twice counts once.
    """
    chosen: list[Review] = []
    seen: set[str] = set()
    for review in retrieve(sample, pool, len(sample.profile)):
        if len(chosen) >= k:
            break
        if review.asin in seen:
            continue
        if len(pool.peers(sample.user_id, review.asin)) >= min_reviewers:
            chosen.append(review)
            seen.add(review.asin)
    return chosen


def representatives(
    embeddings: np.ndarray, n_clusters: int, random_state: int
) -> tuple[list[int], int]:
    """Step 2 on one item: row 0 is u's review, rows 1.. the peers' reviews.

    Returns (indices into the peers, i.e. row - 1, of the reviews nearest each centroid
    other than u's, largest cluster first; the number of clusters used). With fewer distinct
    rows than ``n_clusters`` the number of clusters drops to the distinct count (KMeans cannot
    make more), so every peer unlike u becomes a representative.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    distinct = len(np.unique(embeddings, axis=0))
    clusters = min(n_clusters, distinct)
    if clusters < 2:  # every review is identical to u's: nobody to differ from
        return [], clusters
    # A handful of points: one thread is ~20x faster than OpenMP's start-up on a busy machine.
    # Near-duplicate rows only make KMeans warn; its result is still valid.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kmeans = KMeans(n_clusters=clusters, random_state=random_state, n_init=10)
        labels = kmeans.fit_predict(embeddings.astype(np.float64))
    own = labels[0]
    picks: list[tuple[int, int]] = []  # (-cluster size, row)
    for cluster in range(clusters):
        if cluster == own:
            continue
        members = np.flatnonzero(labels == cluster)
        if members.size == 0:
            continue
        distances = np.linalg.norm(embeddings[members] - kmeans.cluster_centers_[cluster], axis=1)
        picks.append((-members.size, int(members[int(np.argmin(distances))])))
    return [row - 1 for _, row in sorted(picks)], clusters


def review_lines(review: Review) -> list[str]:
    text = review.text
    if len(text) > MAX_REVIEW_CHARS:  # the same clipping as the review-writing prompt
        text = text[:MAX_REVIEW_CHARS].rstrip() + " ..."
    return [f"Rating: {review.rating:g}", f"Title: {clip_title(review.title)}", f"Review: {text}"]


class Dpl(PersonalizationMethod):
    name = "dpl"
    Config = DplConfig
    config: DplConfig

    def __init__(self, config: MethodConfig, llm: Any) -> None:
        super().__init__(config, llm)
        self._encoder: Any = None
        self.stats: Counter[str] = Counter()

    @property
    def encoder(self) -> Any:
        if self._encoder is None:  # lazily: a run whose calls are all cached may need none
            from dep_eval.encoder import CachedEncoder

            self._encoder = CachedEncoder(self.config.encoder)
        return self._encoder

    def setup(self, pool: DataPool) -> None:
        from dep_eval.data.longlamp import items_with_peers

        if not items_with_peers(pool):
            raise ValueError(
                f"DPL compares each user's reviews with other users' reviews of the same "
                f"items, and no item of the {pool.category} pool has two reviewers (LongLaMP "
                "rows carry no item ids); DPL cannot run on this data: use --model rag (DPL's "
                "final prompt without the comparisons) or pag"
            )

    # -- steps 1 and 2 ---------------------------------------------------------------------

    def comparisons(self, sample: Sample, pool: DataPool) -> list[Comparison]:
        """Candidate items with their representatives; updates the sparse-data counts."""
        config = self.config
        self.stats["samples"] += 1
        candidates = candidate_reviews(sample, pool, config.k, config.min_reviewers)
        if not candidates and config.fallback_min_reviewers < config.min_reviewers:
            candidates = candidate_reviews(sample, pool, config.k, config.fallback_min_reviewers)
            self.stats["relaxed" if candidates else "no_peers"] += 1
        elif not candidates:
            self.stats["no_peers"] += 1
        peers = [peer_reviews(pool, sample.user_id, review.asin) for review in candidates]
        # One encode call per sample: the cache then writes at most one shard for it.
        texts = [
            text
            for review, others in zip(candidates, peers, strict=True)
            for text in [review.text, *(other.text for other in others)]
        ]
        vectors = self.encoder.encode(texts) if texts else np.zeros((0, 1), np.float32)
        found: list[Comparison] = []
        start = 0
        for review, others in zip(candidates, peers, strict=True):
            rows = vectors[start : start + 1 + len(others)]
            start += 1 + len(others)
            chosen, clusters = representatives(rows, config.n_clusters, config.random_state)
            self.stats["items"] += 1
            if len(rows) < config.n_clusters:
                self.stats["items_few_reviews"] += 1
            if not chosen:
                self.stats["items_no_representative"] += 1
                continue
            found.append(
                Comparison(review, tuple(others[i] for i in chosen), len(others), clusters)
            )
        if 0 < len(found) < config.k:
            self.stats["fewer_than_k"] += 1
        self.stats["calls"] += len(found) + 2 if found else 1
        return found

    # -- prompts ---------------------------------------------------------------------------

    def compare_prompt(self, comparison: Comparison, pool: DataPool) -> Prompt:
        item = pool.item(comparison.review.asin)
        parts = [
            "\n".join(item_lines(item.title, item.description)),
            "\n".join(["The user's review:", *review_lines(comparison.review)]),
            "Other users' reviews of the same product:\n\n"
            + "\n\n".join(
                "\n".join([f"Other review {i + 1}:", *review_lines(other)])
                for i, other in enumerate(comparison.representatives)
            ),
            COMPARE_REQUEST,
        ]
        return Prompt(
            [
                {"role": "system", "content": ANALYST_SYSTEM},
                {"role": "user", "content": "\n\n".join(parts)},
            ],
            max_new_tokens=self.config.compare_max_tokens,
        )

    def summary_prompt(
        self,
        past: Sequence[Review],
        comparisons: Sequence[Comparison],
        differences: Sequence[str],
        pool: DataPool,
    ) -> Prompt:
        findings = "\n\n".join(
            f"Product {i + 1}: {clip_title(pool.item(c.review.asin).title) or '(untitled)'}"
            f"\n{text.strip()}"
            for i, (c, text) in enumerate(zip(comparisons, differences, strict=True))
        )

        def build(n: int) -> Prompt:
            parts = []
            if n:
                blocks = [past_review_block(i + 1, r, pool) for i, r in enumerate(past[:n])]
                parts.append("The user's past reviews:\n\n" + "\n\n".join(blocks))
            parts.append(
                "How the user's reviews differ from other users' reviews of the same "
                "products:\n\n" + findings
            )
            parts.append(SUMMARY_REQUEST)
            return Prompt(
                [
                    {"role": "system", "content": ANALYST_SYSTEM},
                    {"role": "user", "content": "\n\n".join(parts)},
                ],
                max_new_tokens=self.config.summary_max_tokens,
            )

        return fit_prompt(self.llm, build, len(past), self.config.max_prompt_tokens)

    def final_prompt(
        self, sample: Sample, pool: DataPool, past: Sequence[Review], summary: str
    ) -> Prompt:
        notes = f"{SUMMARY_NOTE}\n{summary.strip()}" if summary.strip() else ""
        return retrieved_reviews_prompt(
            self.llm, sample, pool, past, self.config.max_prompt_tokens, notes
        )

    # -- the plan --------------------------------------------------------------------------

    def plan(self, sample: Sample, pool: DataPool) -> Plan:
        past = retrieve(sample, pool, self.config.k)
        comparisons = self.comparisons(sample, pool)
        if not comparisons:
            return self.final_prompt(sample, pool, past, "")
        differences = yield [self.compare_prompt(c, pool) for c in comparisons]
        (summary,) = yield [self.summary_prompt(past, comparisons, differences, pool)]
        return self.final_prompt(sample, pool, past, summary)

    def end_run(self) -> None:
        """Log once what sparse data changed in this run, then reset the counts."""
        stats, config = self.stats, self.config
        total = stats["samples"]
        if not total:
            return
        if stats["relaxed"]:
            logger.warning(
                "DPL: %d of %d samples had fewer than %d peer reviewers on every profile item; "
                "they compare on items with at least %d instead",
                stats["relaxed"],
                total,
                config.min_reviewers,
                config.fallback_min_reviewers,
            )
        if stats["no_peers"]:
            logger.warning(
                "DPL: %d of %d samples had no profile item with at least %d peer reviewer(s); "
                "they get no difference summary, only the retrieved reviews (as RAG, 1 call)",
                stats["no_peers"],
                total,
                config.fallback_min_reviewers,
            )
        if stats["items_few_reviews"]:
            logger.warning(
                "DPL: %d of %d compared items had fewer reviews (user + peers) than "
                "n_clusters=%d; KMeans used one cluster per distinct review there",
                stats["items_few_reviews"],
                stats["items"],
                config.n_clusters,
            )
        if stats["items_no_representative"]:
            logger.warning(
                "DPL: %d of %d items had no representative (every peer review identical to the "
                "user's) and were skipped",
                stats["items_no_representative"],
                stats["items"],
            )
        # A warning, not info: lm-eval shows only warnings of other loggers, and users
        # comparing costs with the paper's k + 2 calls need this line.
        logger.warning(
            "DPL: %d of %d samples had fewer than k=%d comparable items; %.2f LLM calls per "
            "sample on average (k + 2 = %d at most)",
            stats["fewer_than_k"],
            total,
            config.k,
            stats["calls"] / total,
            config.k + 2,
        )
        self.stats = Counter()


register_method(Dpl, label="DPL", order=30)

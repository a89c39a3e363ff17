"""The data pool: every user's profile reviews of a data set, across all splits.

Methods that look at other users (DEP's peers, DPL's representatives) read the pool. It is
built from whole splits once per (source, category) and never from the documents of a run,
so ``--limit`` cannot change it. Only profiles go in, and a review whose text is the target
text of any of the samples the pool is built from is left out, even where it also sits in a
later row's profile (DPL-main's test profiles hold the val target): so no target text can
reach any prompt through the pool. ``dep_eval.data.loaders.load_pool`` builds it from all
splits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from dep_eval.data.records import Item, Review, Sample


@dataclass
class DataPool:
    category: str
    items: dict[str, Item]
    # user -> reviews, oldest first, one per (asin, timestamp)
    reviews: dict[str, list[Review]] = field(default_factory=dict)
    # asin -> [(user, position of that user's review of asin in ``reviews[user]``)]
    reviewers: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    source: str = ""  # the samples' source: a pool is one (source, category)

    @classmethod
    def from_samples(
        cls,
        category: str,
        samples: Iterable[Sample],
        items: dict[str, Item],
        *,
        exclude_targets: bool = True,
    ) -> DataPool:
        """Profiles of ``samples`` (of ``category``), one review per (user, asin, timestamp).

        With ``exclude_targets`` (the default) no review whose text (whitespace-normalised)
        is the target text of one of ``samples`` enters the pool: not the target itself where
        a later row's profile repeats it, and not a copy of it elsewhere (real data has users
        who paste one text under two items, and one person split into two user ids)."""
        chosen = [sample for sample in samples if sample.category == category]
        target_texts = {_norm(s.target.text) for s in chosen} if exclude_targets else set()
        by_user: dict[str, dict[tuple[str, int], Review]] = defaultdict(dict)
        for sample in chosen:
            for review in sample.profile:
                if target_texts and _norm(review.text) in target_texts:
                    continue
                by_user[sample.user_id].setdefault((review.asin, review.timestamp), review)
        reviews = {
            user: sorted(unique.values(), key=lambda review: review.timestamp)
            for user, unique in sorted(by_user.items())
        }
        reviewers: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for user, user_reviews in reviews.items():
            for position, review in enumerate(user_reviews):
                reviewers[review.asin].append((user, position))
        return cls(
            category=category,
            items=items,
            reviews=reviews,
            reviewers=dict(reviewers),
            source=chosen[0].source if chosen else "",
        )

    def peers(self, user_id: str, asin: str) -> list[tuple[str, int]]:
        """Other users of the pool who reviewed ``asin``, with their review's position."""
        return [(user, pos) for user, pos in self.reviewers.get(asin, ()) if user != user_id]

    def item(self, asin: str) -> Item:
        return self.items.get(asin) or Item(asin=asin, title="", description="")


def _norm(text: str) -> str:
    return " ".join(text.split())

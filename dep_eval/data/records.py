"""Typed records for the personalized review-generation task.

A *row* of DPL-main (or of a local directory in its layout) becomes a ``Sample``: one user,
their earlier reviews (``profile``, oldest first), the target item and the target review,
whose rating and title are given and whose text is to be written.

lm-eval hands documents to models as plain dicts; ``Sample.to_doc`` / ``Sample.from_doc``
are the one place that layout is defined.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Review:
    asin: str
    rating: float
    title: str
    text: str
    timestamp: int


@dataclass(frozen=True)
class Item:
    asin: str
    title: str
    description: str


@dataclass(frozen=True)
class Sample:
    user_id: str
    category: str
    profile: tuple[Review, ...]  # oldest first; never contains ``target``
    target: Review
    item: Item  # the target item
    source: str  # where the data came from, e.g. "local:/abs/dir" or "hub:SnowCharmQ/DPL-main"
    split: str
    row: int  # 1-based line (local) or row index (hub) in the split, for error messages

    @property
    def key(self) -> str:
        """Stable identity of a document: seeds and caches are keyed on it, never on order."""
        target = self.target
        return f"{self.category}/{self.split}/{self.user_id}/{target.asin}/{target.timestamp}"

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["profile"] = [asdict(review) for review in self.profile]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Sample:
        return cls(
            user_id=doc["user_id"],
            category=doc["category"],
            profile=tuple(Review(**review) for review in doc["profile"]),
            target=Review(**doc["target"]),
            item=Item(**doc["item"]),
            source=doc["source"],
            split=doc["split"],
            row=doc["row"],
        )

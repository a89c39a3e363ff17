"""docs/method.md steps 2-5: profile means, history items, difference and his embeddings.

Vectorised with torch: no Python loop over users or peers in the hot path. Reviews are
flat-indexed, items are a CSR table of their reviews, and every per-review or per-peer
reduction is an ``index_add_`` / sparse matrix product over those indices.

Whose data is what (rule (a) of the design):
- a sample's OWN history and its mean ``m[u]`` come from its row's ``Sample.profile``,
  never from the pool, so a row sees exactly its own (earlier) reviews;
- the pool supplies only OTHER users: their review of the same item ``e[r, j]`` and their
  profile mean ``m[r]`` (over all of r's pool reviews).

Slots (``k`` of them, slot 0 = most recent):
- step 3: walk the profile from most recent to oldest, keep reviews whose item has at least
  one other reviewer in the pool, stop at ``k``;
- step 4: ``a[r] = ||m[u] - m[r]||_2``, ``a = a / sum(a)``, ``w = softmax(a)``,
  ``diff[j] = sum_r w[r] (e[u, j] - e[r, j])``; when ``sum(a) == 0`` (every peer's mean
  equals the user's) the normalised ``a`` is taken as all zeros, i.e. uniform weights;
- step 5: ``his[j] = e[u, j]``.

Which texts the prompt shows (``DEPInputs.shown``):
- ``align_slots=True`` (default): the reviews in the slots, in slot order, so the text of
  review i and slot i are the same review;
- ``align_slots=False`` (the reference's quirk): the ``k`` most recent reviews, whatever
  the slots hold.

Cold start (``cold_start``):
- ``"his_only"`` (default): a user none of whose profile items has another reviewer in the
  pool gets his slots for the ``k`` most recent reviews (``his = e[u, j]``) and NO diff
  slots (``diff_mask`` False, diff vectors zero); those are also the reviews shown;
- ``"empty"``: such a user gets no slots at all (and, when aligned, no review texts; with
  ``align_slots=False`` the ``k`` most recent texts are still shown).
In both policies a user with some but fewer than ``k`` peered reviews gets only those
slots (the rest masked), a profile shorter than ``k`` gives fewer slots, and an empty
profile gives none. Shapes are always (B, k, d).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample

logger = logging.getLogger(__name__)

ColdStart = Literal["his_only", "empty"]
Weighting = Literal["reference", "uniform"]


# --------------------------------------------------------------------------------------
# Flat enumeration of the pool's reviews
# --------------------------------------------------------------------------------------


def pool_texts(pool: DataPool) -> list[str]:
    """Texts of every pool review in the flat order: users in ``pool.reviews`` order, each
    user's reviews oldest first. Row ``i`` of the pool embedding matrix embeds text ``i``."""
    return [review.text for reviews in pool.reviews.values() for review in reviews]


def profile_texts(samples: Sequence[Sample]) -> list[str]:
    """Texts of every sample's profile, flat: samples in order, each profile oldest first."""
    return [review.text for sample in samples for review in sample.profile]


@dataclass
class PoolEmbeddings:
    """The pool side of steps 2-4, built once per (pool, encoder)."""

    users: list[str]
    user_index: dict[str, int]
    review_user: torch.Tensor  # (N,) user of each flat review
    emb: torch.Tensor  # (N, d) step 1: e[r, j], float32, rows L2-normalised
    user_mean: torch.Tensor  # (U, d) step 2: m[r]
    user_mean64: torch.Tensor  # (U, d) m[r] in float64, for step 4's distances
    user_mean_sq: torch.Tensor  # (U,) |m[r]|^2, float64
    item_index: dict[str, int]  # asin -> item id
    item_ptr: torch.Tensor  # (A+1,) CSR: reviews of item a are item_reviews[ptr[a]:ptr[a+1]]
    item_reviews: torch.Tensor  # (N,) flat review ids grouped by item
    pair_keys: torch.Tensor  # sorted unique user * A + item over the pool's reviews
    pair_counts: torch.Tensor  # how many reviews each (user, item) pair has

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    @classmethod
    def build(cls, pool: DataPool, emb: torch.Tensor | np.ndarray) -> PoolEmbeddings:
        emb = torch.as_tensor(emb, dtype=torch.float32)
        users = list(pool.reviews)
        lengths = torch.tensor([len(pool.reviews[user]) for user in users], dtype=torch.long)
        n_reviews = int(lengths.sum())
        if emb.ndim != 2 or emb.shape[0] != n_reviews:
            raise ValueError(
                f"pool embeddings have shape {tuple(emb.shape)}, expected ({n_reviews}, d): one "
                f"row per pool review in pool_texts() order"
            )
        offsets = torch.zeros(len(users) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        review_user = torch.repeat_interleave(torch.arange(len(users)), lengths)

        # Step 2 for the pool: m[r] = mean_j e[r, j] (a segment mean over contiguous rows).
        user_mean = _segment_mean(emb, offsets[:-1])

        # Item ids from one sort of the asin strings (not a dict insert per review).
        asins = np.array([review.asin for reviews in pool.reviews.values() for review in reviews])
        unique_asins, inverse = np.unique(asins, return_inverse=True)
        item_index = {asin: i for i, asin in enumerate(unique_asins.tolist())}
        review_item = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
        n_items = len(item_index)
        # A stable sort keeps each item's reviews in flat order, which makes the peer sums
        # deterministic.
        item_reviews = torch.argsort(review_item, stable=True)
        item_ptr = torch.zeros(n_items + 1, dtype=torch.long)
        item_ptr[1:] = torch.cumsum(torch.bincount(review_item, minlength=n_items), 0)
        pair_keys, pair_counts = torch.unique(
            review_user * n_items + review_item, return_counts=True
        )
        return cls(
            users=users,
            user_index={user: i for i, user in enumerate(users)},
            review_user=review_user,
            emb=emb,
            user_mean=user_mean,
            user_mean64=user_mean.double(),
            user_mean_sq=user_mean.double().square().sum(dim=1),
            item_index=item_index,
            item_ptr=item_ptr,
            item_reviews=item_reviews,
            pair_keys=pair_keys,
            pair_counts=pair_counts,
        )


# --------------------------------------------------------------------------------------
# The result for a batch of samples
# --------------------------------------------------------------------------------------


@dataclass
class DEPInputs:
    """Steps 2-5 for a batch: what the SAE consumes and what the prompt shows.

    ``slot_review[b, i]`` is the index into ``samples[b].profile`` (oldest first) of the
    review in slot i, or -1. ``shown[b]`` lists the profile indices whose texts the prompt
    shows, most recent first; with ``align_slots`` it equals the valid part of
    ``slot_review[b]``.
    """

    his: torch.Tensor  # (B, k, d) step 5
    diff: torch.Tensor  # (B, k, d) step 4
    his_mask: torch.Tensor  # (B, k) bool: slot holds a review
    diff_mask: torch.Tensor  # (B, k) bool: slot has a difference embedding
    slot_review: torch.Tensor  # (B, k) long, profile index or -1
    n_peers: torch.Tensor  # (B, k) long, other reviewers of the slot's item in the pool
    shown: list[list[int]]
    user_mean: torch.Tensor  # (B, d) step 2: m[u] over the sample's profile

    @property
    def x(self) -> torch.Tensor:
        """Step 5: X = [his_1..his_k ; diff_1..diff_k], (B, 2k, d)."""
        return torch.cat([self.his, self.diff], dim=1)

    @property
    def x_mask(self) -> torch.Tensor:
        return torch.cat([self.his_mask, self.diff_mask], dim=1)


def build_dep_inputs(
    pool_emb: PoolEmbeddings,
    samples: Sequence[Sample],
    profile_emb: torch.Tensor | np.ndarray,
    *,
    k: int = 8,
    align_slots: bool = True,
    cold_start: ColdStart = "his_only",
    weighting: Weighting = "reference",
) -> DEPInputs:
    """Steps 2-5 for ``samples``.

    ``profile_emb`` embeds ``profile_texts(samples)`` (one row per profile review, samples in
    order, each profile oldest first) with the same encoder as ``pool_emb``.
    """
    _check_options(k, cold_start, weighting)
    profile_emb = torch.as_tensor(profile_emb, dtype=torch.float32)
    flat = _FlatProfile.of(pool_emb, samples, profile_emb)
    n_samples = len(samples)

    # Step 2: m[u] = mean over the sample's own profile (zero for an empty profile).
    user_mean = _segment_mean(profile_emb, flat.seg_start)

    # Step 3: how many OTHER pool users reviewed each profile review's item: all of the
    # item's pool reviews minus the sample user's own ones.
    known = flat.item >= 0
    safe_item = flat.item.clamp(min=0)
    n_item_reviews = torch.where(
        known, pool_emb.item_ptr[safe_item + 1] - pool_emb.item_ptr[safe_item], 0
    )
    n_own = _own_review_counts(pool_emb, flat.sample_user[flat.sample], safe_item) * known
    n_peers = n_item_reviews - n_own

    in_slot, his_only, slot = _assign_slots(flat, n_peers > 0, n_samples, k, cold_start)

    # Step 4 for the kept peered reviews only (at most k per sample).
    kept = torch.nonzero(in_slot).squeeze(1)
    diff_rows = _difference_embeddings(
        pool_emb,
        kept,
        flat.item,
        flat.sample,
        flat.sample_user,
        profile_emb,
        user_mean,
        weighting,
    )

    # Into (B, k) slots. Step 5: his[j] = e[u, j]. Each (B, k, d) output is ONE gather from
    # a table whose row 0 is the zero vector (absent slots point there): cheaper than
    # zero-filling and scattering.
    filled = torch.nonzero(in_slot | his_only).squeeze(1)
    his_src = torch.zeros(n_samples * k, dtype=torch.long)
    his_src[flat.sample[filled] * k + slot[filled]] = filled + 1
    diff_src = torch.zeros(n_samples * k, dtype=torch.long)
    diff_src[flat.sample[kept] * k + slot[kept]] = torch.arange(1, kept.numel() + 1)
    d = pool_emb.dim
    # The same trick for the integer facts: position -1 / 0 peers where absent.
    slot_review = torch.cat([torch.tensor([-1]), flat.position])[his_src].view(n_samples, k)
    return DEPInputs(
        his=_gather_or_zero(profile_emb, his_src).view(n_samples, k, d),
        diff=_gather_or_zero(diff_rows, diff_src).view(n_samples, k, d),
        his_mask=(his_src > 0).view(n_samples, k),
        diff_mask=(diff_src > 0).view(n_samples, k),
        slot_review=slot_review,
        n_peers=torch.cat([torch.tensor([0]), n_peers])[his_src].view(n_samples, k),
        shown=_shown_reviews(slot_review, flat.lengths, k, align_slots),
        user_mean=user_mean,
    )


def _check_options(k: int, cold_start: str, weighting: str) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if cold_start not in ("his_only", "empty"):
        raise ValueError(f"cold_start must be 'his_only' or 'empty', got {cold_start!r}")
    if weighting not in ("reference", "uniform"):
        raise ValueError(f"weighting must be 'reference' or 'uniform', got {weighting!r}")


@dataclass(frozen=True)
class _FlatProfile:
    """Every profile review of a batch in one flat axis P (samples in order, oldest first)."""

    lengths: torch.Tensor  # (B,) profile sizes
    seg_start: torch.Tensor  # (B,) where each sample's reviews start on P
    sample: torch.Tensor  # (P,) which sample a review belongs to
    position: torch.Tensor  # (P,) its position in that profile, 0 = oldest
    item: torch.Tensor  # (P,) its item's pool index, -1 when the pool lacks the item
    sample_user: torch.Tensor  # (B,) the sample's user's pool index, -1 when unknown

    @classmethod
    def of(
        cls, pool_emb: PoolEmbeddings, samples: Sequence[Sample], profile_emb: torch.Tensor
    ) -> _FlatProfile:
        lengths = torch.tensor([len(sample.profile) for sample in samples], dtype=torch.long)
        n_profile = int(lengths.sum())
        if profile_emb.ndim != 2 or profile_emb.shape != (n_profile, pool_emb.dim):
            raise ValueError(
                f"profile embeddings have shape {tuple(profile_emb.shape)}, expected "
                f"({n_profile}, {pool_emb.dim}): one row per profile review in "
                "profile_texts(samples) order"
            )
        sample = torch.repeat_interleave(torch.arange(len(samples)), lengths)
        seg_start = torch.cumsum(lengths, 0) - lengths
        item_of = pool_emb.item_index
        return cls(
            lengths=lengths,
            seg_start=seg_start,
            sample=sample,
            position=torch.arange(n_profile) - seg_start[sample],
            item=torch.tensor(
                [item_of.get(review.asin, -1) for s in samples for review in s.profile],
                dtype=torch.long,
            ),
            sample_user=torch.tensor(
                [pool_emb.user_index.get(s.user_id, -1) for s in samples], dtype=torch.long
            ),
        )


def _assign_slots(
    flat: _FlatProfile, has_peer: torch.Tensor, n_samples: int, k: int, cold_start: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which profile reviews fill the k slots: ``(in_slot, his_only, slot)``, each (P,).

    The k most recent peered reviews take slots 0..k-1 (0 = most recent); with
    ``cold_start="his_only"`` a sample with no peered review fills them with its k most
    recent reviews instead (his only, no difference embedding)."""
    # Rank of each peered review counted from the most recent one (0 = most recent) with a
    # segment suffix count: peered reviews at positions >= p within the same sample.
    hp = has_peer.long()
    before = torch.cumsum(hp, 0) - hp  # peered reviews before p, globally
    per_sample = torch.zeros(n_samples, dtype=torch.long).index_add_(0, flat.sample, hp)
    first = before[flat.seg_start[flat.sample]] if flat.sample.numel() else before
    rank = per_sample[flat.sample] - (before - first) - 1
    in_slot = has_peer & (rank < k)
    slot = torch.where(in_slot, rank, -1)

    # Recency rank of every profile review (0 = most recent), for cold start.
    recency = flat.lengths[flat.sample] - 1 - flat.position
    his_only = torch.zeros(flat.sample.numel(), dtype=torch.bool)
    if cold_start == "his_only":
        his_only = (per_sample == 0)[flat.sample] & (recency < k)
        slot = torch.where(his_only, recency, slot)
    return in_slot, his_only, slot


def _segment_mean(rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Mean of each run of consecutive ``rows`` beginning at ``starts`` (zero if empty); one
    fused embedding_bag instead of a scatter."""
    if starts.numel() == 0:
        return rows.new_zeros(0, rows.shape[1])
    if rows.shape[0] == 0:
        return rows.new_zeros(starts.numel(), rows.shape[1])
    return F.embedding_bag(torch.arange(rows.shape[0]), rows, starts, mode="mean")


def _gather_or_zero(rows: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``rows[source - 1]``, and a zero row where ``source == 0``."""
    if rows.shape[0] == 0:
        return rows.new_zeros(source.numel(), rows.shape[1])
    out = rows[(source - 1).clamp(min=0)]
    return out.mul_((source > 0).unsqueeze(1).to(out.dtype))


def _own_review_counts(
    pool_emb: PoolEmbeddings, user: torch.Tensor, item: torch.Tensor
) -> torch.Tensor:
    """How many pool reviews ``user`` wrote of ``item`` (0 for users not in the pool)."""
    n_items = max(len(pool_emb.item_index), 1)
    keys = user * n_items + item
    if pool_emb.pair_keys.numel() == 0:
        return torch.zeros_like(keys)
    where = torch.searchsorted(pool_emb.pair_keys, keys).clamp(max=pool_emb.pair_keys.numel() - 1)
    hit = (pool_emb.pair_keys[where] == keys) & (user >= 0)
    return torch.where(hit, pool_emb.pair_counts[where], 0)


def _difference_embeddings(
    pool_emb: PoolEmbeddings,
    kept: torch.Tensor,
    prof_item: torch.Tensor,
    prof_sample: torch.Tensor,
    sample_user: torch.Tensor,
    profile_emb: torch.Tensor,
    user_mean: torch.Tensor,
    weighting: Weighting,
) -> torch.Tensor:
    """Step 4 for the profile reviews ``kept`` (each has >= 1 peer): (len(kept), d)."""
    d = pool_emb.dim
    if kept.numel() == 0:
        return torch.zeros(0, d, dtype=torch.float32)
    # Expand every kept review q into (q, pool review of the same item) pairs via the CSR
    # item table, then drop the sample user's own reviews: what is left are the peers r.
    item = prof_item[kept]
    start = pool_emb.item_ptr[item]
    count = pool_emb.item_ptr[item + 1] - start
    pair_q = torch.repeat_interleave(torch.arange(kept.numel()), count)
    pair_start = torch.cumsum(count, 0) - count
    member = pool_emb.item_reviews[
        start[pair_q] + torch.arange(pair_q.numel()) - pair_start[pair_q]
    ]
    peer_user = pool_emb.review_user[member]
    sample = prof_sample[kept][pair_q]
    is_peer = torch.nonzero(peer_user != sample_user[sample]).squeeze(1)
    pair_q, member, peer_user, sample = (
        pair_q[is_peer],
        member[is_peer],
        peer_user[is_peer],
        sample[is_peer],
    )

    n_kept = kept.numel()
    if weighting == "uniform":
        weight = torch.ones(pair_q.numel(), dtype=torch.float64)
    else:
        # a[r] = ||m[u] - m[r]||_2 for every (q, r) pair.
        a = _pair_distances(
            user_mean.double(), sample, pool_emb.user_mean64, pool_emb.user_mean_sq, peer_user
        )
        a_sum = torch.zeros(n_kept, dtype=torch.float64).index_add_(0, pair_q, a)
        # a = a / sum(a); sum(a) == 0 means every peer's mean equals the user's: no peer is
        # more different than another, so all weights are equal (a := 0).
        a = torch.where(a_sum[pair_q] > 0, a / a_sum[pair_q].clamp(min=1e-300), 0.0)
        # w = softmax(a) within each q. a is in [0, 1] here, so exp cannot overflow and the
        # usual max-subtraction is unnecessary (softmax is shift-invariant anyway).
        weight = torch.exp(a)
    weight_sum = torch.zeros(n_kept, dtype=torch.float64).index_add_(0, pair_q, weight)
    w = (weight / weight_sum[pair_q]).to(torch.float32)

    # diff = sum_r w[r] (e[u, j] - e[r, j]) = e[u, j] - sum_r w[r] e[r, j] since sum_r w = 1.
    # The weighted peer sums are one embedding_bag (a fused gather + weighted segment sum:
    # pairs are contiguous per q), so no (pairs x d) copy is ever made.
    offsets = torch.cumsum(torch.bincount(pair_q, minlength=n_kept), 0)
    offsets = torch.cat([offsets.new_zeros(1), offsets[:-1]])
    peer_mix = F.embedding_bag(member, pool_emb.emb, offsets, mode="sum", per_sample_weights=w)
    return profile_emb[kept] - peer_mix


def _pair_distances(
    left64: torch.Tensor,
    left_index: torch.Tensor,
    right64: torch.Tensor,
    right_sq: torch.Tensor,
    right_index: torch.Tensor,
) -> torch.Tensor:
    """``||left[left_index[i]] - right[right_index[i]]||_2`` for every i, in float64.

    Computed as ``sqrt(|x|^2 + |y|^2 - 2 x.y)`` with the dot products of the distinct
    (row, row) pairs from one sampled sparse product: its cost grows with the number of
    pairs times d, and no (pairs x d) gather is ever materialised (fresh large buffers cost
    more in page faults than the arithmetic). Float64 keeps the cancellation harmless; a
    squared distance within float64 rounding of zero (1e-12 of the squared norms) is taken
    as exactly zero, so equal means give ``a = 0`` as the direct formula would.
    """
    n_right = right64.shape[0]
    pair_key, inverse = torch.unique(left_index * n_right + right_index, return_inverse=True)
    rows, cols = pair_key // n_right, pair_key % n_right
    n_left = left64.shape[0]
    crow = torch.zeros(n_left + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_left), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow,
            cols,
            torch.zeros(cols.numel(), dtype=torch.float64),
            size=(n_left, n_right),
            check_invariants=False,
        )  # valid by construction: unique keys come sorted by row, then column
        dots = torch.sparse.sampled_addmm(pattern, left64, right64.T, beta=0.0).values()
    left_sq = left64.square().sum(dim=1)[rows]
    right_sq = right_sq[cols]
    squared = left_sq + right_sq - 2 * dots
    squared = torch.where(squared <= 1e-12 * (left_sq + right_sq), 0.0, squared)
    return squared.sqrt()[inverse]


def _shown_reviews(
    slot_review: torch.Tensor, lengths: torch.Tensor, k: int, align_slots: bool
) -> list[list[int]]:
    if align_slots:
        return [[p for p in row if p >= 0] for row in slot_review.tolist()]
    # The reference: the k most recent reviews, most recent first, whatever the slots hold.
    return [list(range(n - 1, max(n - k, 0) - 1, -1)) for n in lengths.tolist()]


# --------------------------------------------------------------------------------------
# Convenience: encoder + pool -> DEPInputs for batches of samples
# --------------------------------------------------------------------------------------


class DifferenceEmbedder:
    """Steps 1-5 end to end: embeds the pool once (through the encoder's disk cache), then
    turns batches of samples into ``DEPInputs``.

    Profile texts are encoded through the same cache; they are normally pool texts already,
    so they cost a lookup, not an encode.
    """

    def __init__(
        self,
        encoder: object,  # anything with ``encode(list[str]) -> (n, d) float32``
        pool: DataPool,
        *,
        k: int = 8,
        align_slots: bool = True,
        cold_start: ColdStart = "his_only",
        weighting: Weighting = "reference",
    ) -> None:
        self.encoder = encoder
        self.pool = pool
        self.k = k
        self.align_slots = align_slots
        self.cold_start = cold_start
        self.weighting = weighting
        texts = pool_texts(pool)
        logger.info("embedding %d pool reviews (%s)", len(texts), pool.category)
        self.pool_emb = PoolEmbeddings.build(pool, self.encoder.encode(texts))  # type: ignore[attr-defined]

    def __call__(self, samples: Sequence[Sample]) -> DEPInputs:
        profile_emb = self.encoder.encode(profile_texts(samples))  # type: ignore[attr-defined]
        return build_dep_inputs(
            self.pool_emb,
            samples,
            profile_emb,
            k=self.k,
            align_slots=self.align_slots,
            cold_start=self.cold_start,
            weighting=self.weighting,
        )

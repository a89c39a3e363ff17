"""DEP steps 2-5 (dep_eval/dep/embeddings.py).

The vectorised code is checked against a plain Python loop that transcribes docs/method.md's
formulas, on the real shared data (every test user) with real all-MiniLM-L6-v2 embeddings;
the cold-start and edge cases run on small hand-made pools.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample
from dep_eval.dep.embeddings import (
    DifferenceEmbedder,
    PoolEmbeddings,
    build_dep_inputs,
    pool_texts,
    profile_texts,
)

CATEGORY = "All_Beauty"


# ------------------------------------------------------------------ the formula, as a loop


def loop_dep_inputs(
    pool: DataPool,
    pool_vectors: dict[str, np.ndarray],
    sample: Sample,
    profile_vectors: np.ndarray,
    k: int,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """docs/method.md steps 2-5 for one sample, written as directly as possible (float64).

    Returns [(profile index, his, diff)] in slot order (most recent first)."""
    pool_mean = {user: vectors.mean(axis=0) for user, vectors in pool_vectors.items()}
    m_u = profile_vectors.mean(axis=0)  # step 2, over the sample's own profile
    slots = []
    for j in reversed(range(len(sample.profile))):  # step 3: most recent first
        peers = pool.peers(sample.user_id, sample.profile[j].asin)
        if not peers:
            continue
        e_uj = profile_vectors[j]
        a = np.array([np.linalg.norm(m_u - pool_mean[r]) for r, _ in peers])  # step 4
        a = a / a.sum() if a.sum() > 0 else np.zeros_like(a)
        w = np.exp(a) / np.exp(a).sum()
        diff = np.zeros_like(e_uj)
        for weight, (r, position) in zip(w, peers, strict=True):
            diff += weight * (e_uj - pool_vectors[r][position])
        slots.append((j, e_uj, diff))  # step 5: his = e[u, j]
        if len(slots) == k:
            break
    return slots


# ------------------------------------------------------------------------ real shared data


@pytest.fixture(scope="module")
def real(shared_data_dir: Path):
    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.encoder import CachedEncoder

    source = local_source(shared_data_dir / "amazon_beauty")
    samples = load_split(source, CATEGORY, "test")
    pool = load_pool(source, CATEGORY)
    # The user's ordinary cache: a second test run encodes nothing (correct by construction,
    # the cache is keyed by encoder identity and text).
    encoder = CachedEncoder(dim=384)
    pool_matrix = encoder.encode(pool_texts(pool))
    profile_matrix = encoder.encode(profile_texts(samples))
    return samples, pool, encoder, pool_matrix, profile_matrix


@pytest.mark.real_data  # the 100 users and their 500+ diff slots are the real split's
def test_vectorized_matches_loop_on_all_test_users(real) -> None:
    samples, pool, _, pool_matrix, profile_matrix = real
    assert len(samples) == 100
    pool_emb = PoolEmbeddings.build(pool, pool_matrix)
    out = build_dep_inputs(pool_emb, samples, profile_matrix, k=8)

    pool_vectors, row = {}, 0
    for user, reviews in pool.reviews.items():
        pool_vectors[user] = pool_matrix[row : row + len(reviews)].astype(np.float64)
        row += len(reviews)
    start = 0
    n_slots = 0
    for b, sample in enumerate(samples):
        vectors = profile_matrix[start : start + len(sample.profile)].astype(np.float64)
        start += len(sample.profile)
        expected = loop_dep_inputs(pool, pool_vectors, sample, vectors, k=8)
        n = len(expected)
        n_slots += n
        assert out.his_mask[b].tolist() == [True] * n + [False] * (8 - n), sample.user_id
        assert out.diff_mask[b].tolist() == [True] * n + [False] * (8 - n), sample.user_id
        assert out.slot_review[b, :n].tolist() == [j for j, _, _ in expected]
        assert out.shown[b] == [j for j, _, _ in expected]  # aligned: text i == slot i
        for i, (_, his, diff) in enumerate(expected):
            np.testing.assert_allclose(out.his[b, i].numpy(), his, atol=1e-6, rtol=0)
            np.testing.assert_allclose(out.diff[b, i].numpy(), diff, atol=1e-6, rtol=0)
        assert not out.his[b, n:].any() and not out.diff[b, n:].any()
        np.testing.assert_allclose(out.user_mean[b].numpy(), vectors.mean(axis=0), atol=1e-6)
    # The data has peers for most reviews: the comparison is not vacuous.
    assert n_slots > 500


def test_reference_quirk_shows_most_recent_texts(real) -> None:
    samples, pool, _, pool_matrix, profile_matrix = real
    pool_emb = PoolEmbeddings.build(pool, pool_matrix)
    aligned = build_dep_inputs(pool_emb, samples, profile_matrix, align_slots=True)
    quirk = build_dep_inputs(pool_emb, samples, profile_matrix, align_slots=False)
    # Slots are the same either way; only the texts shown differ.
    assert torch.equal(aligned.slot_review, quirk.slot_review)
    assert torch.equal(aligned.diff, quirk.diff)
    differ = 0
    for b, sample in enumerate(samples):
        n = len(sample.profile)
        assert quirk.shown[b] == list(range(n - 1, max(n - 8, 0) - 1, -1))
        differ += quirk.shown[b] != aligned.shown[b]
    assert differ > 0  # the quirk matters on this data


def test_difference_embedder_end_to_end(real) -> None:
    samples, pool, encoder, pool_matrix, profile_matrix = real
    before = encoder.n_encoded
    embedder = DifferenceEmbedder(encoder, pool)
    out = embedder(samples[:10])
    assert encoder.n_encoded == before  # everything came from the cache
    direct = build_dep_inputs(
        PoolEmbeddings.build(pool, pool_matrix),
        samples[:10],
        profile_matrix[: sum(len(s.profile) for s in samples[:10])],
    )
    assert torch.allclose(out.diff, direct.diff) and torch.equal(out.his_mask, direct.his_mask)


# ------------------------------------------------------------------ small hand-made pools

D = 6


def review(asin: str, t: int) -> Review:
    return Review(asin=asin, rating=5.0, title=f"t{asin}", text=f"{asin}-{t}", timestamp=t)


def sample(user: str, asins: list[str]) -> Sample:
    profile = tuple(review(asin, t) for t, asin in enumerate(asins))
    target = review("TARGET", len(asins))
    return Sample(
        user_id=user,
        category="c",
        profile=profile,
        target=target,
        item=Item("TARGET", "", ""),
        source="test",
        split="test",
        row=1,
    )


def make_pool(histories: dict[str, list[str]]) -> DataPool:
    samples = [sample(user, asins) for user, asins in histories.items()]
    return DataPool.from_samples("c", samples, {}, exclude_targets=False)


def random_unit(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def run(pool: DataPool, samples: list[Sample], seed: int = 0, **kwargs):
    pool_emb = PoolEmbeddings.build(pool, random_unit(len(pool_texts(pool)), seed))
    profile = random_unit(len(profile_texts(samples)), seed + 1)
    return build_dep_inputs(pool_emb, samples, profile, **kwargs), profile


POOL = {
    "alice": ["A", "B", "C"],
    "bob": ["A", "B", "X"],
    "carol": ["B", "C", "Y"],
}


def test_user_without_peers_gets_his_only_slots() -> None:
    pool = make_pool(POOL)
    lonely = sample("dave", ["P", "Q", "R"])  # nobody else reviewed P, Q, R
    out, profile = run(pool, [lonely], k=2)
    assert out.his.shape == (1, 2, D) and out.diff.shape == (1, 2, D)
    assert out.his_mask.tolist() == [[True, True]]
    assert out.diff_mask.tolist() == [[False, False]]
    assert out.slot_review.tolist() == [[2, 1]]  # the two most recent
    assert out.shown == [[2, 1]]
    assert torch.equal(out.his[0, 0], profile[2]) and torch.equal(out.his[0, 1], profile[1])
    assert not out.diff.any()


def test_user_without_peers_empty_policy() -> None:
    pool = make_pool(POOL)
    lonely = sample("dave", ["P", "Q", "R"])
    out, _ = run(pool, [lonely], k=2, cold_start="empty")
    assert not out.his_mask.any() and not out.diff_mask.any() and out.shown == [[]]
    quirk, _ = run(pool, [lonely], k=2, cold_start="empty", align_slots=False)
    assert quirk.shown == [[2, 1]]  # the reference still shows the most recent texts


def test_short_profile_and_partial_peers() -> None:
    pool = make_pool(POOL)
    short = sample("dave", ["A"])  # one review, with peers
    partial = sample("erin", ["A", "P", "C", "Q"])  # A and C have peers, P and Q not
    out, _ = run(pool, [short, partial], k=8)
    assert out.his.shape == (2, 8, D)
    assert out.his_mask.sum(1).tolist() == [1, 2]
    assert out.diff_mask.sum(1).tolist() == [1, 2]
    assert out.slot_review[1, :2].tolist() == [2, 0]  # C (most recent peered), then A
    assert out.shown == [[0], [2, 0]]
    assert out.n_peers[1, :2].tolist() == [2, 2]  # C: alice, carol; A: alice, bob


def test_empty_profile_and_empty_batch() -> None:
    pool = make_pool(POOL)
    nothing = sample("dave", [])
    out, _ = run(pool, [nothing, sample("erin", ["A"])], k=3)
    assert out.his.shape == (2, 3, D)
    assert not out.his_mask[0].any() and out.shown[0] == []
    assert out.his_mask[1].tolist() == [True, False, False]
    empty, _ = run(pool, [], k=3)
    assert empty.his.shape == (0, 3, D) and empty.shown == []


def test_k_zero() -> None:
    out, _ = run(make_pool(POOL), [sample("erin", ["A", "B"])], k=0)
    assert out.his.shape == (1, 0, D) and out.shown == [[]]


def test_own_pool_reviews_are_not_peers() -> None:
    # alice is in the pool (with A twice) and also the sample's user: her pool reviews are
    # never her own peers, whatever the sample's profile says.
    pool = make_pool({"alice": ["A", "A", "B"], "bob": ["B"]})
    out, _ = run(pool, [sample("alice", ["A", "B"])], k=8)
    assert out.slot_review[0].tolist()[:2] == [1, -1]  # only B (bob) has a peer
    assert out.n_peers[0, 0].item() == 1


def test_sum_of_distances_zero_gives_uniform_weights() -> None:
    e1 = torch.tensor([1.0, 0, 0, 0, 0, 0])
    e2 = torch.tensor([0, 1.0, 0, 0, 0, 0])
    pool = make_pool({"r1": ["X", "Y"], "r2": ["X", "Y", "W"]})
    # Pool order: r1's reviews, then r2's; both users' means equal (e1 + e2) / 2.
    pool_matrix = torch.stack([e2, e1, e1, e2, (e1 + e2) / 2])
    pool_emb = PoolEmbeddings.build(pool, pool_matrix)
    user = sample("u", ["Z", "X"])
    profile = torch.stack([e2, e1])  # m[u] = (e1 + e2) / 2 as well: every a[r] = 0
    out = build_dep_inputs(pool_emb, [user], profile, k=2)
    assert out.diff_mask.tolist() == [[True, False]]
    # uniform weights over r1 (e2) and r2 (e1): e1 - (e2 + e1) / 2
    assert torch.allclose(out.diff[0, 0], (e1 - e2) / 2)
    assert torch.isfinite(out.diff).all()


def test_uniform_weighting_option() -> None:
    pool = make_pool(POOL)
    user = sample("dave", ["B"])
    out, profile = run(pool, [user], k=1, weighting="uniform")
    pool_matrix = random_unit(len(pool_texts(pool)), 0)
    # B's pool reviews: alice pos 1 (row 1), bob pos 1 (row 4), carol pos 0 (row 6)
    expected = profile[0] - pool_matrix[[1, 4, 6]].mean(dim=0)
    assert torch.allclose(out.diff[0, 0], expected, atol=1e-6)


def test_unknown_user_and_item() -> None:
    pool = make_pool(POOL)
    out, _ = run(pool, [sample("stranger", ["NOT_IN_POOL", "A"])], k=4)
    assert out.slot_review[0, :1].tolist() == [1] and out.n_peers[0, 0].item() == 2


def test_shape_errors_are_clear() -> None:
    pool = make_pool(POOL)
    with pytest.raises(ValueError, match="pool embeddings have shape"):
        PoolEmbeddings.build(pool, torch.zeros(3, D))
    pool_emb = PoolEmbeddings.build(pool, random_unit(9, 0))
    with pytest.raises(ValueError, match="profile embeddings have shape"):
        build_dep_inputs(pool_emb, [sample("u", ["A"])], torch.zeros(2, D))
    with pytest.raises(ValueError, match="cold_start"):
        build_dep_inputs(pool_emb, [], torch.zeros(0, D), cold_start="nope")  # type: ignore[arg-type]


def test_x_stacks_his_then_diff() -> None:
    out, _ = run(make_pool(POOL), [sample("dave", ["A", "B"])], k=3)
    assert out.x.shape == (1, 6, D)
    assert torch.equal(out.x[:, :3], out.his) and torch.equal(out.x[:, 3:], out.diff)
    assert out.x_mask.tolist() == [[True, True, False, True, True, False]]

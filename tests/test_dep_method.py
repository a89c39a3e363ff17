"""DEP as a method: prompts and slots, ablation arguments, cold start, checkpoint errors.

The LLM's tokenizer is real (the embedded SmolLM2); the encoder is a deterministic stand-in
where the test is about prompts, not embeddings; the module is randomly initialised (which
is what these tests are about: where vectors go, not what they say).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from dep_eval.baselines.nonperso import NonPerso

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample
from dep_eval.dep.config import DEPArgs
from dep_eval.dep.method import DEP
from dep_eval.methods.base import MethodConfig


class HashEncoder:
    """A deterministic 384-d 'encoder': the test is about slots, not semantics."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            row = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def review(asin: str, t: int, text: str = "") -> Review:
    return Review(
        asin=asin, rating=4.0, title=f"title {asin}", text=text or f"text {asin} {t}", timestamp=t
    )


def sample(user: str, profile: list[Review]) -> Sample:
    return Sample(
        user_id=user,
        category="Cat",
        profile=tuple(profile),
        target=review("TARGET", 99, "the reference text"),
        item=Item("TARGET", "Target product", ""),
        source="local:/x",
        split="test",
        row=1,
    )


ITEMS = {a: Item(a, f"Product {a}", "") for a in ["A", "B", "C", "D", "LONE1", "LONE2", "TARGET"]}
PEERS = [
    sample(
        f"peer{i}",
        [
            review("A", 0, f"peer {i} on A"),
            review("B", 1, f"peer {i} on B"),
            review("C", 2, f"peer {i} on C"),
        ],
    )
    for i in range(3)
]
POOL_SAMPLES = PEERS + [
    sample("u", [review("A", 0), review("D", 1), review("B", 2), review("C", 3)])
]


@pytest.fixture
def pool() -> DataPool:
    return DataPool.from_samples("Cat", POOL_SAMPLES, ITEMS)


def make_dep(llm, pool: DataPool, **args: object) -> DEP:
    dep = DEP(DEPArgs(allow_untrained=True, **args), llm)
    dep.encoder = HashEncoder()
    dep.setup(pool)
    return dep


def slot_tokens(llm, prompt) -> tuple[int, int]:
    text = llm.render(prompt)
    return text.count("<his_token_start>"), text.count("<diff_token_start>")


def test_untrained_module_is_announced_loudly(
    llm, pool: DataPool, caplog, monkeypatch, tmp_path
) -> None:
    import dep_eval.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "none")  # no checkpoint at all
    make_dep(llm, pool)
    assert "RANDOMLY INITIALISED" in caplog.text


@pytest.mark.bad_input("dep-no-checkpoint")
def test_without_a_checkpoint_dep_says_how_to_get_one(llm, monkeypatch, tmp_path) -> None:
    import dep_eval.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(ValueError, match="dep-eval train"):
        DEP(DEPArgs(), llm)


def test_the_shipped_checkpoint_fits_the_embedded_models(llm) -> None:
    from dep_eval.checkpoint import SHIPPED_DIR
    from dep_eval.dep.method import SHIPPED_CHECKPOINT

    dep = DEP(DEPArgs(), llm)  # no checkpoint= : the one inside the package
    assert (SHIPPED_DIR / SHIPPED_CHECKPOINT / "model.safetensors").stat().st_size < 10_000_000
    assert dep.module_config.llm_hidden_size == llm.hidden_size == 576
    assert dep.module_config.encoder_dim == 384


def test_slots_follow_the_reviews_with_peers_and_carry_vectors(llm, pool: DataPool) -> None:
    dep = make_dep(llm, pool)
    prompt = dep.build_prompt(POOL_SAMPLES[-1], pool)
    # u reviewed D (no peers) and A, B, C (3 peers each): three reviews with his + diff slots
    assert slot_tokens(llm, prompt) == (3, 3)
    assert prompt.soft_vectors.shape == (6, llm.hidden_size)
    text = llm.render(prompt)
    assert "Product D" not in text  # aligned slots: the texts shown are the slotted reviews
    ids = torch.tensor([llm.tokenize(prompt)])
    llm.tokens.embed(ids, [prompt.soft_vectors])  # every placeholder gets exactly one vector


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"use_diff": False}, (3, 0)),
        ({"use_his": False}, (0, 3)),
        ({"k": 2}, (2, 2)),
        ({"k": 0}, (0, 0)),
    ],
)
def test_ablation_arguments(llm, pool: DataPool, args: dict, expected: tuple[int, int]) -> None:
    prompt = make_dep(llm, pool, **args).build_prompt(POOL_SAMPLES[-1], pool)
    assert slot_tokens(llm, prompt) == expected
    n_vectors = 0 if prompt.soft_vectors is None else len(prompt.soft_vectors)
    assert n_vectors == sum(expected)


def test_k0_is_the_non_personalized_prompt(llm, pool: DataPool) -> None:
    dep_prompt = make_dep(llm, pool, k=0).build_prompt(POOL_SAMPLES[-1], pool)
    plain = NonPerso(MethodConfig(), llm).build_prompt(POOL_SAMPLES[-1], pool)
    assert dep_prompt.messages == plain.messages


def test_without_text_only_slots_are_shown(llm, pool: DataPool) -> None:
    text = llm.render(make_dep(llm, pool, with_text=False).build_prompt(POOL_SAMPLES[-1], pool))
    assert "Review: text" not in text and "[HIS_TOKEN_0]" in text
    with_text = llm.render(make_dep(llm, pool, with_text=True).build_prompt(POOL_SAMPLES[-1], pool))
    assert "Review: text C 3" in with_text


def test_without_items_the_product_to_review_is_the_only_one_named(llm, pool: DataPool) -> None:
    args = {"with_text": False, "with_items": False}
    prompt = make_dep(llm, pool, **args).build_prompt(POOL_SAMPLES[-1], pool)
    text = llm.render(prompt)
    assert "Product: Target product" in text
    assert not any(f"Product {a}" in text for a in "ABCD")
    assert text.count("Rating: ") == 3 and slot_tokens(llm, prompt) == (3, 3)


def test_unaligned_slots_reproduce_the_reference(llm, pool: DataPool) -> None:
    prompt = make_dep(llm, pool, align_slots=False).build_prompt(POOL_SAMPLES[-1], pool)
    text = llm.render(prompt)
    assert "Product D" in text  # the K most recent reviews are shown, peers or not
    assert slot_tokens(llm, prompt) == (3, 3)


def test_cold_start_user_without_peers_gets_his_slots_only(llm, pool: DataPool) -> None:
    lonely = sample("lonely", [review("LONE1", 0), review("LONE2", 1)])
    prompt = make_dep(llm, pool).build_prompt(lonely, pool)
    assert slot_tokens(llm, prompt) == (2, 0)
    assert prompt.soft_vectors.shape == (2, llm.hidden_size)


def test_cold_start_short_and_empty_profiles(llm, pool: DataPool) -> None:
    dep = make_dep(llm, pool)
    short = dep.build_prompt(sample("new", [review("A", 0, "my only review")]), pool)
    assert slot_tokens(llm, short) == (1, 1)
    empty = dep.build_prompt(sample("nobody", []), pool)
    assert slot_tokens(llm, empty) == (0, 0) and empty.soft_vectors is None


def test_long_prompts_drop_the_oldest_reviews(llm, pool: DataPool) -> None:
    full = make_dep(llm, pool).build_prompt(POOL_SAMPLES[-1], pool)
    budget = len(llm.tokenize(full)) - 5
    cut = make_dep(llm, pool, max_prompt_tokens=budget).build_prompt(POOL_SAMPLES[-1], pool)
    assert slot_tokens(llm, cut) == (2, 2)
    assert len(llm.tokenize(cut)) <= budget


@pytest.mark.bad_input("dep-checkpoint-other-llm")
def test_checkpoint_for_another_llm_is_refused_with_the_reason(llm, tmp_path) -> None:
    from dep_eval.checkpoint import CheckpointError, save_checkpoint
    from dep_eval.dep.config import DEPConfig
    from dep_eval.dep.module import DEPModule

    save_checkpoint(
        DEPModule(DEPConfig(llm_name="Qwen/Qwen2.5-7B-Instruct", llm_hidden_size=3584)),
        tmp_path / "qwen",
    )
    with pytest.raises(CheckpointError, match="3584"):
        DEP(DEPArgs(checkpoint=str(tmp_path / "qwen")), llm)


@pytest.mark.bad_input("dep-k-out-of-range")
def test_k_beyond_the_checkpoint_is_an_error(llm) -> None:
    with pytest.raises(ValueError, match="outside 0..8"):
        DEP(DEPArgs(allow_untrained=True, k=9), llm)


def test_two_sources_with_one_category_keep_their_own_embedders(llm, pool: DataPool) -> None:
    # pools are keyed by (source, category); so must DEP's per-pool embedders be
    other = DataPool.from_samples(
        "Cat", [dataclasses.replace(s, source="local:/elsewhere") for s in POOL_SAMPLES], ITEMS
    )
    dep = make_dep(llm, pool)
    dep.setup(other)
    assert set(dep.embedders) == {(pool.source, "Cat"), ("local:/elsewhere", "Cat")}
    assert dep.embedders[(pool.source, "Cat")].pool is pool
    assert dep.embedders[("local:/elsewhere", "Cat")].pool is other


def test_the_checkpoint_defines_its_prompt(llm, caplog) -> None:
    # the shipped checkpoint was trained on slots-only prompts; --model dep uses them
    assert DEP(DEPArgs(), llm).config.with_text is False
    with caplog.at_level("WARNING"):
        asked = DEP(DEPArgs(with_text=True), llm)
    assert asked.config.with_text is True
    assert "this checkpoint was trained with with_text=false" in caplog.text
    assert caplog.text.count("trained with") == 1  # k and align_slots agree: no noise


def test_a_format_1_checkpoint_without_a_prompt_record_keeps_loading(llm, tmp_path) -> None:
    import json

    from dep_eval.checkpoint import SHIPPED_DIR
    from dep_eval.dep.method import SHIPPED_CHECKPOINT

    old = tmp_path / "v1"
    old.mkdir()
    meta = json.loads((SHIPPED_DIR / SHIPPED_CHECKPOINT / "config.json").read_text())
    meta["format_version"] = 1
    del meta["config"]["trained_prompt"]
    (old / "config.json").write_text(json.dumps(meta))
    (old / "model.safetensors").write_bytes(
        (SHIPPED_DIR / SHIPPED_CHECKPOINT / "model.safetensors").read_bytes()
    )
    dep = DEP(DEPArgs(checkpoint=str(old)), llm)
    assert (dep.config.with_text, dep.config.k, dep.config.align_slots) == (True, 8, True)


@pytest.mark.bad_input("dep-with-items-not-a-bool")
def test_with_items_that_is_not_a_bool_names_the_argument() -> None:
    from dep_eval.methods.base import parse_config

    assert parse_config(DEPArgs, {"with_items": "false"}).with_items is False
    with pytest.raises(ValueError, match="with_items"):
        parse_config(DEPArgs, {"with_items": "sometimes"})


@pytest.mark.bad_input("dep-lora-r-negative")
def test_a_negative_lora_rank_is_refused_before_anything_loads() -> None:
    from dep_eval.dep.config import DEPTrainArgs

    with pytest.raises(ValueError, match="--lora-r -1: must be 0"):
        DEP.for_training(DEPTrainArgs(lora_r=-1), None, encoder=None, max_prompt_tokens=64)

"""Tests of the data layer: loaders on the real shared data, the pool's guarantees, the Arrow
round trip lm-eval relies on, one test per malformed-input case, and the hub code path run
against local ``datasets.Dataset`` twins (only ``datasets.load_dataset``, the network, is
mocked)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest

from dep_eval.data import loaders
from dep_eval.data.loaders import (
    DataError,
    clear_caches,
    hub_source,
    load_items,
    load_pool,
    load_split,
    load_task_dataset,
    local_source,
    parse_source,
    resolve_source,
)
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample

CATEGORY = "All_Beauty"


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_caches()


@pytest.fixture(scope="session")
def beauty_root(shared_data_dir: Path) -> Path:
    root = shared_data_dir / "amazon_beauty"
    if not (root / CATEGORY).is_dir():
        pytest.skip(f"{root / CATEGORY} is absent")
    return root


@pytest.fixture
def beauty(beauty_root: Path) -> str:
    return local_source(beauty_root)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_counts_on_real_data(beauty: str) -> None:
    # (no time bound here: speed claims live in benchmarks/, and this machine is shared)
    splits = {split: load_split(beauty, CATEGORY, split) for split in loaders.SPLITS}
    load_pool(beauty, CATEGORY)
    assert {split: len(rows) for split, rows in splits.items()} == {
        "train": 587,
        "val": 100,
        "test": 100,
    }
    test_users = {s.user_id for s in splits["test"]}
    assert len(test_users) == 100
    assert {s.user_id for s in splits["val"]} == test_users
    assert len(load_items(beauty, CATEGORY)) == 356


def test_samples_are_well_formed(beauty: str) -> None:
    items = load_items(beauty, CATEGORY)
    for split in loaders.SPLITS:
        for sample in load_split(beauty, CATEGORY, split):
            assert sample.source == beauty and sample.split == split
            assert sample.category == CATEGORY and sample.profile
            assert sample.item == items[sample.target.asin]
            assert isinstance(sample.item.description, str)
            stamps = [review.timestamp for review in sample.profile]
            assert stamps == sorted(stamps)
            assert all(isinstance(r.rating, float) for r in (*sample.profile, sample.target))
            assert all(isinstance(r.timestamp, int) for r in (*sample.profile, sample.target))
            assert (sample.target.asin, sample.target.timestamp) not in {
                (r.asin, r.timestamp) for r in sample.profile
            }


@pytest.mark.real_data
def test_pool_never_contains_a_target_text(beauty: str) -> None:
    pool = load_pool(beauty, CATEGORY)
    pool_texts = {review.text for reviews in pool.reviews.values() for review in reviews}
    assert len(pool_texts) > 500
    for split in loaders.SPLITS:
        for sample in load_split(beauty, CATEGORY, split):
            assert sample.target.text not in pool_texts, sample.key


def test_pool_is_memoized_and_independent_of_the_samples_used(beauty: str) -> None:
    first = load_pool(beauty, CATEGORY)
    assert load_pool(beauty, CATEGORY) is first
    # an equivalent spelling of the source shares the cache
    assert load_pool("local:" + str(Path(beauty[len("local:") :]) / "."), CATEGORY) is first

    clear_caches()
    load_split(beauty, CATEGORY, "test")[:3]  # what a --limit 3 run on test touches
    second = load_pool(beauty, CATEGORY)
    assert second is not first
    assert second.reviews == first.reviews
    assert second.reviewers == first.reviewers
    assert second.items == first.items

    # and it is the pool of all splits' profiles, not of any one split
    test_only = DataPool.from_samples(CATEGORY, load_split(beauty, CATEGORY, "test"), first.items)
    assert test_only.reviews != first.reviews


def test_pool_peers_exist(beauty: str) -> None:
    pool = load_pool(beauty, CATEGORY)
    for sample in load_split(beauty, CATEGORY, "test"):
        with_peers = [r for r in sample.profile if pool.peers(sample.user_id, r.asin)]
        assert with_peers, sample.key
        for user, position in pool.peers(sample.user_id, with_peers[-1].asin):
            assert user != sample.user_id
            assert pool.reviews[user][position].asin == with_peers[-1].asin


def test_task_dataset_round_trips_through_arrow(beauty_root: Path, beauty: str) -> None:
    # called the way lm-eval 0.4.13 calls custom_dataset: keyword arguments, with unrelated
    # keys from the YAML metadata and the model args mixed in
    dataset = load_task_dataset(
        category=CATEGORY, data_dir=str(beauty_root), version=1.0, pretrained="some/model"
    )
    assert set(dataset) == set(loaders.SPLITS)
    for split in loaders.SPLITS:
        samples = load_split(beauty, CATEGORY, split)
        assert len(dataset[split]) == len(samples)
        rebuilt = [Sample.from_doc(doc) for doc in dataset[split]]
        assert rebuilt == samples
    assert isinstance(dataset["test"][0]["profile"], list)
    assert isinstance(dataset["test"][0]["profile"][0], dict)
    # the model side rebuilds the pool from a document alone
    doc = dataset["test"][0]
    assert load_pool(doc["source"], doc["category"]) is load_pool(beauty, CATEGORY)


@pytest.mark.real_data
def test_task_dataset_dict_argument_split_subset_and_env(
    beauty_root: Path, beauty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_task_dataset({"category": CATEGORY, "data_dir": str(beauty_root)}, split="val")
    assert list(dataset) == ["val"] and len(dataset["val"]) == 100

    monkeypatch.setenv(loaders.ENV_DATA_DIR, str(beauty_root))
    assert resolve_source({}) == beauty
    dataset = load_task_dataset(category=CATEGORY, split=["test"])
    assert dataset["test"][0]["source"] == beauty


def test_source_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loaders.ENV_DATA_DIR, raising=False)
    assert resolve_source({}) == "hub:SnowCharmQ/DPL-main"
    assert resolve_source({"data_dir": str(tmp_path)}) == f"local:{tmp_path.resolve()}"
    monkeypatch.setenv(loaders.ENV_DATA_DIR, "/elsewhere")
    assert resolve_source({"data_dir": str(tmp_path)}) == f"local:{tmp_path.resolve()}"
    assert resolve_source({}) == "local:/elsewhere"
    assert resolve_source({"source": "hub:SnowCharmQ/DPL-main"}) == hub_source()
    hub = parse_source(hub_source())
    assert isinstance(hub, loaders.HubSource) and hub.meta == "SnowCharmQ/DPL-meta"
    assert parse_source("hub:a/x-main+b/y").meta == "b/y"
    assert str(parse_source("hub:a/x-main+b/y")) == "hub:a/x-main+b/y"
    with pytest.raises(DataError, match="not understood"):
        parse_source("s3://bucket")
    with pytest.raises(DataError, match="does not end in '-main'"):
        parse_source("hub:a/reviews")


@pytest.mark.bad_input("missing-category", "no-category", "unknown-split")
def test_missing_category_lists_existing_ones(beauty_root: Path) -> None:
    with pytest.raises(DataError, match=r"'Books' not found .*categories there: All_Beauty"):
        load_task_dataset(category="Books", data_dir=str(beauty_root))
    with pytest.raises(DataError, match="no category given"):
        load_task_dataset(data_dir=str(beauty_root))
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_task_dataset(category=CATEGORY, data_dir=str(beauty_root), split="validation")


# --------------------------------------------------------------------------- malformed input


def _review(asin: str, timestamp: int, **overrides: Any) -> dict[str, Any]:
    review = {
        "asin": asin,
        "rating": 4.0,
        "title": f"title {asin}",
        "text": f"text of {asin} at {timestamp}",
        "timestamp": timestamp,
    }
    return review | overrides


def _row(user: str, asins: list[str], target: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "user_id": user,
        "category": "Toys",
        "profile": [_review(asin, i) for i, asin in enumerate(asins)],
        "data": _review(target, len(asins)),
    }
    return row | overrides


META = [{"asin": a, "title": f"Item {a}", "description": f"about {a}"} for a in "ABCD"]


def _write(path: Path, rows: list[Any]) -> None:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def toy(tmp_path: Path) -> Callable[..., str]:
    """Writes ``<tmp>/Toys/{train,val,test,meta}.jsonl``; the test split's rows are given."""

    def make(test_rows: list[Any], meta: list[Any] | None = None) -> str:
        folder = tmp_path / "Toys"
        folder.mkdir(exist_ok=True)
        _write(folder / "meta.jsonl", META if meta is None else meta)
        _write(folder / "train.jsonl", [_row("u1", ["A"], "B"), _row("u2", ["A"], "C")])
        _write(folder / "val.jsonl", [_row("u1", ["A", "B"], "C")])
        _write(folder / "test.jsonl", test_rows)
        return local_source(tmp_path)

    return make


def _error(source: str, split: str = "test") -> DataError:
    with pytest.raises(DataError) as caught:
        load_split(source, "Toys", split)
    return caught.value


def _assert_where(error: DataError, file: str, line: int, field: str | None) -> None:
    assert error.file is not None and error.file.endswith(f"Toys/{file}.jsonl")
    assert error.line == line
    assert error.field == field
    message = str(error)
    assert f"Toys/{file}.jsonl:{line}" in message
    if field is not None:
        assert f"field '{field}'" in message


def test_valid_toy_data_loads(toy: Callable[..., str]) -> None:
    source = toy([_row("u1", ["A", "B"], "C"), "", _row("u2", ["A"], "D")])
    samples = load_split(source, "Toys", "test")
    assert [s.row for s in samples] == [1, 3]  # blank line ignored, line numbers kept
    assert samples[0].item.description == "about C"
    pool = load_pool(source, "Toys")
    # u1's B was a val target, u1's C and u2's B/C were targets: all kept out of the pool
    assert {u: [r.asin for r in rs] for u, rs in pool.reviews.items()} == {
        "u1": ["A"],
        "u2": ["A"],
    }


def test_pool_drops_copies_of_target_texts(toy: Callable[..., str]) -> None:
    copy = _row("u2", ["A", "D"], "C")
    copy["profile"][1]["text"] = "text of C  at 2"  # u1's test target, spaces aside
    pool = load_pool(toy([_row("u1", ["A", "B"], "C"), copy]), "Toys")
    assert [r.asin for r in pool.reviews["u2"]] == ["A"]
    assert not pool.peers("u1", "D")


@pytest.mark.bad_input("bad-json")
def test_bad_json(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "B"), '{"user_id": "u2", "profile": [']))
    _assert_where(error, "test", 2, None)
    assert "invalid JSON" in str(error)


@pytest.mark.bad_input("not-an-object")
def test_row_not_an_object(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "B"), "[1, 2]"]))
    _assert_where(error, "test", 2, None)
    assert "expected a JSON object" in str(error)


@pytest.mark.bad_input("missing-field")
def test_missing_row_field(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    del row["user_id"]
    error = _error(toy([row]))
    _assert_where(error, "test", 1, "user_id")
    assert "missing" in str(error) and "add it" in str(error)


@pytest.mark.bad_input("missing-review-field")
def test_missing_review_field(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A", "B"], "C")
    del row["profile"][1]["text"]
    _assert_where(_error(toy([row])), "test", 1, "profile[1].text")


@pytest.mark.bad_input("rating-wrong-type")
def test_rating_of_wrong_type(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["data"]["rating"] = "5 stars"
    error = _error(toy([_row("u2", ["A"], "C"), row]))
    _assert_where(error, "test", 2, "data.rating")
    assert "expected a number" in str(error) and "'5 stars'" in str(error)


@pytest.mark.bad_input("rating-boolean")
def test_boolean_is_not_a_rating(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["profile"][0]["rating"] = True
    _assert_where(_error(toy([row])), "test", 1, "profile[0].rating")


@pytest.mark.bad_input("timestamp-wrong-type")
def test_timestamp_of_wrong_type(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["profile"][0]["timestamp"] = 1.5
    error = _error(toy([row]))
    _assert_where(error, "test", 1, "profile[0].timestamp")
    assert "integer" in str(error)


@pytest.mark.bad_input("profile-not-a-list")
def test_profile_not_a_list(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "B", profile={"asin": "A"})]))
    _assert_where(error, "test", 1, "profile")


@pytest.mark.bad_input("int-rating-float-timestamp")
def test_int_rating_and_integral_timestamp_are_coerced(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["profile"][0]["rating"] = 5
    row["data"]["timestamp"] = 7.0
    (sample,) = load_split(toy([row]), "Toys", "test")
    assert sample.profile[0].rating == 5.0 and isinstance(sample.profile[0].rating, float)
    assert sample.target.timestamp == 7 and isinstance(sample.target.timestamp, int)


@pytest.mark.bad_input("unknown-target-asin")
def test_unknown_target_asin(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "Z")]))
    _assert_where(error, "test", 1, "data.asin")
    assert "'Z' is not in meta.jsonl" in str(error)


@pytest.mark.bad_input("unknown-profile-asin")
def test_unknown_profile_asin(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A", "Z"], "B")]))
    _assert_where(error, "test", 1, "profile[1].asin")
    assert "'Z' is not in meta.jsonl" in str(error)


@pytest.mark.bad_input("empty-profile")
def test_empty_profile_is_skipped_with_a_warning(
    toy: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    source = toy([_row("u1", ["A"], "B"), _row("u2", [], "C")])
    with caplog.at_level(logging.WARNING, logger="dep_eval.data.loaders"):
        samples = load_split(source, "Toys", "test")
    assert [s.user_id for s in samples] == ["u1"]
    assert "1 rows skipped" in caplog.text
    assert "test.jsonl line 2" in caplog.text and "empty profile" in caplog.text


@pytest.mark.bad_input("target-in-profile")
def test_target_inside_its_profile(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["profile"].append(dict(row["data"]))
    error = _error(toy([row]))
    _assert_where(error, "test", 1, "profile[1].asin")
    assert "leak" in str(error)


@pytest.mark.bad_input("empty-target-text")
def test_empty_target_text(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A"], "B")
    row["data"]["text"] = "  "
    _assert_where(_error(toy([row])), "test", 1, "data.text")


@pytest.mark.bad_input("category-mismatch")
def test_category_mismatch(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "B", category="Books")]))
    _assert_where(error, "test", 1, "category")
    assert "'Books'" in str(error) and "'Toys'" in str(error)


@pytest.mark.bad_input("duplicate-row")
def test_duplicate_row(toy: Callable[..., str]) -> None:
    error = _error(toy([_row("u1", ["A"], "B"), _row("u1", ["A"], "B")]))
    _assert_where(error, "test", 2, "data")
    assert "duplicate row" in str(error) and "line 1" in str(error)


@pytest.mark.bad_input("unsorted-profile")
def test_unsorted_profile_is_sorted(toy: Callable[..., str]) -> None:
    row = _row("u1", ["A", "B"], "C")
    row["profile"].reverse()
    (sample,) = load_split(toy([row]), "Toys", "test")
    assert [r.asin for r in sample.profile] == ["A", "B"]


@pytest.mark.bad_input("meta-missing-title")
def test_meta_missing_title(toy: Callable[..., str]) -> None:
    meta = [dict(m) for m in META]
    del meta[2]["title"]
    error = _error(toy([_row("u1", ["A"], "B")], meta=meta))
    _assert_where(error, "meta", 3, "title")


@pytest.mark.bad_input("meta-description-missing")
def test_meta_description_missing_or_null_is_empty(toy: Callable[..., str]) -> None:
    meta = [dict(m) for m in META]
    del meta[1]["description"]
    meta[2]["description"] = None
    source = toy([_row("u1", ["A"], "B")], meta=meta)
    items = load_items(source, "Toys")
    assert items["B"].description == "" and items["C"].description == ""
    assert load_split(source, "Toys", "test")[0].item.description == ""


@pytest.mark.bad_input("meta-description-wrong-type")
def test_meta_description_of_wrong_type(toy: Callable[..., str]) -> None:
    meta = [dict(m) for m in META]
    meta[3]["description"] = ["Product Description", "a list, as in raw Amazon meta"]
    error = _error(toy([_row("u1", ["A"], "B")], meta=meta))
    _assert_where(error, "meta", 4, "description")
    assert "expected a string" in str(error)


@pytest.mark.bad_input("meta-conflicting-duplicate")
def test_meta_conflicting_duplicate(toy: Callable[..., str]) -> None:
    meta = [*META, {"asin": "A", "title": "Another title", "description": ""}]
    error = _error(toy([_row("u1", ["A"], "B")], meta=meta))
    _assert_where(error, "meta", 5, "asin")
    assert "line 1" in str(error)


@pytest.mark.bad_input("missing-split-file")
def test_missing_split_file(toy: Callable[..., str], tmp_path: Path) -> None:
    source = toy([_row("u1", ["A"], "B")])
    (tmp_path / "Toys" / "val.jsonl").unlink()
    # the split asked for (the pool no longer needs every split: issue 19, row 16)
    with pytest.raises(DataError, match=r"missing file .*val\.jsonl; .*present: meta\.jsonl"):
        load_split(source, "Toys", "val")


@pytest.mark.bad_input("missing-data-dir")
def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_split(local_source(tmp_path / "nowhere"), "Toys", "test")


@pytest.mark.bad_input("data-dir-is-category-folder")
def test_data_dir_pointing_at_the_category_folder(toy: Callable[..., str], tmp_path: Path) -> None:
    toy([_row("u1", ["A"], "B")])
    with pytest.raises(DataError, match="data_dir must be its parent folder"):
        load_split(local_source(tmp_path / "Toys"), "Toys", "test")


def test_arrow_round_trip_keeps_float_ratings_and_empty_descriptions(
    toy: Callable[..., str], tmp_path: Path
) -> None:
    row = _row("u1", ["A", "B"], "C")
    for review in (*row["profile"], row["data"]):
        review["rating"] = 5  # every rating whole: must still come back as float
    meta = [dict(m, description="") for m in META]
    source = toy([row], meta=meta)
    dataset = load_task_dataset(category="Toys", data_dir=str(tmp_path), split="test")["test"]
    (doc,) = list(dataset)
    assert Sample.from_doc(doc) == load_split(source, "Toys", "test")[0]
    assert isinstance(doc["target"]["rating"], float) and doc["item"]["description"] == ""


# ------------------------------------------------- issue 19: through the task's own loader


def _task_load(tmp_path: Path, split: str = "test") -> dict[str, datasets.Dataset]:
    """What ``lm_eval --tasks amazon_review_personalized_custom`` calls for its data."""
    from dep_eval.tasks.utils import load_dataset

    return load_dataset(data_dir=str(tmp_path), category="Toys", split=split)


def _task_error(tmp_path: Path, split: str = "test") -> DataError:
    with pytest.raises(DataError) as caught:
        _task_load(tmp_path, split)
    return caught.value


@pytest.mark.bad_input("not-utf8")
def test_bytes_that_are_not_utf8(toy: Callable[..., str], tmp_path: Path) -> None:
    toy([_row("u1", ["A"], "B"), _row("u2", ["A"], "C")])
    test_file = tmp_path / "Toys" / "test.jsonl"
    test_file.write_bytes(test_file.read_bytes().replace(b"text of A", b"text \xe9 of A", 2))
    error = _task_error(tmp_path)
    _assert_where(error, "test", 1, None)
    assert "not valid UTF-8" in str(error) and "re-save as UTF-8" in str(error)


@pytest.mark.bad_input("byte-order-mark")
def test_byte_order_mark(toy: Callable[..., str], tmp_path: Path) -> None:
    toy([_row("u1", ["A"], "B")])
    test_file = tmp_path / "Toys" / "test.jsonl"
    test_file.write_bytes(b"\xef\xbb\xbf" + test_file.read_bytes())
    error = _task_error(tmp_path)
    _assert_where(error, "test", 1, None)
    assert "Unexpected UTF-8 BOM" in str(error)


@pytest.mark.bad_input("rating-out-of-range")
@pytest.mark.parametrize(("where", "rating"), [("data", 9), ("profile", -1), ("data", 100.0)])
def test_rating_out_of_range(
    toy: Callable[..., str], tmp_path: Path, where: str, rating: float
) -> None:
    row = _row("u1", ["A"], "B")
    review = row["data"] if where == "data" else row["profile"][0]
    review["rating"] = rating
    toy([_row("u2", ["A"], "C"), row])
    field = "data.rating" if where == "data" else "profile[0].rating"
    error = _task_error(tmp_path)
    _assert_where(error, "test", 2, field)
    assert f"rating {rating!r} is outside the valid range 1-5" in str(error)


@pytest.mark.bad_input("no-usable-rows")
@pytest.mark.parametrize("content", ["empty", "blank lines", "every row skipped"])
def test_split_without_usable_rows(toy: Callable[..., str], tmp_path: Path, content: str) -> None:
    toy([_row("u1", ["A"], "B")])
    test_file = tmp_path / "Toys" / "test.jsonl"
    if content == "empty":
        test_file.write_text("")
    elif content == "blank lines":
        test_file.write_text("\n  \n\n")
    else:
        _write(test_file, [_row("u1", [], "B"), _row("u2", [], "C")])
    message = str(_task_error(tmp_path))
    assert f"{test_file} has no usable rows" in message
    if content == "every row skipped":
        assert "(2 skipped: line 1: user 'u1' has an empty profile; line 2: user 'u2'" in message
    else:
        assert "(0 skipped: the file holds no rows" in message


@pytest.mark.bad_input("timestamp-overflow")
def test_timestamp_beyond_64_bits(toy: Callable[..., str], tmp_path: Path) -> None:
    toy([_row("u1", ["A"], "B")])
    test_file = tmp_path / "Toys" / "test.jsonl"
    # written by hand: 1e19 is how a JSON writer prints a float timestamp this large
    test_file.write_text(test_file.read_text().replace('"timestamp": 1}', '"timestamp": 1e19}'))
    error = _task_error(tmp_path)
    _assert_where(error, "test", 1, "data.timestamp")
    assert "does not fit in 64 bits" in str(error)


@pytest.mark.bad_input("lone-surrogate")
def test_lone_surrogate_escape_in_a_text(toy: Callable[..., str], tmp_path: Path) -> None:
    toy([_row("u1", ["A"], "B")])
    test_file = tmp_path / "Toys" / "test.jsonl"
    # json.dumps writes it as the escape \ud800, the way a text cut mid-emoji comes out
    bad = _row("u2", ["A", "B"], "C")
    bad["profile"][1]["text"] = "broken emoji \ud83d here"
    with test_file.open("a", encoding="utf-8") as out:
        out.write(json.dumps(bad) + "\n")
    error = _task_error(tmp_path)
    _assert_where(error, "test", 2, "profile[1].text")
    assert "lone surrogate escape \\ud83d at character 13" in str(error)


@pytest.mark.bad_input("lone-surrogate-meta")
def test_lone_surrogate_escape_in_meta(toy: Callable[..., str], tmp_path: Path) -> None:
    meta = [dict(m) for m in META]
    meta[1]["description"] = "\udfff"
    toy([_row("u1", ["A"], "B")], meta=meta)
    error = _task_error(tmp_path)
    _assert_where(error, "meta", 2, "description")
    assert "lone surrogate" in str(error)


@pytest.mark.bad_input("data-dir-is-a-file")
def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "data.jsonl"
    not_a_folder.write_text("{}\n")
    from dep_eval.tasks.utils import load_dataset

    with pytest.raises(DataError, match=rf"{not_a_folder} is a file, not a folder; point data_dir"):
        load_dataset(data_dir=str(not_a_folder), category="Toys")


@pytest.mark.slow
@pytest.mark.bad_input("long-review-text")
def test_very_long_review_text_is_logged_and_clipped(
    toy: Callable[..., str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dep_eval import prompts
    from dep_eval.data.parsing import LONG_TEXT_CHARS, PROMPT_REVIEW_CHARS
    from dep_eval.metrics.harness import MAX_SCORED_CHARS, process_results

    assert PROMPT_REVIEW_CHARS == prompts.MAX_REVIEW_CHARS  # the warning quotes the real cap
    huge = "word " * 400_000  # 2 MB
    row = _row("u1", ["A"], "B")
    row["data"]["text"] = huge
    toy([row])
    with caplog.at_level(logging.WARNING, logger="dep_eval.data.parsing"):
        (doc,) = list(_task_load(tmp_path)["eval"])
    assert "Toys/test.jsonl:1, field 'data.text': review text of 2,000,000 characters" in (
        caplog.text
    )
    assert f"scoring reads its first {LONG_TEXT_CHARS:,}" in caplog.text
    assert MAX_SCORED_CHARS == LONG_TEXT_CHARS
    # what is scored is the first MAX_SCORED_CHARS: the rest of a huge text changes nothing
    scored = process_results(doc, [huge])
    clipped = process_results(doc, [huge[:MAX_SCORED_CHARS]])
    assert scored["meteor"] == clipped["meteor"] and scored["rouge1"] == clipped["rouge1"]
    sample = Sample.from_doc(doc)
    pool = load_pool(sample.source, "Toys")
    shown = prompts.past_review_block(1, sample.target, pool)
    assert len(shown) < PROMPT_REVIEW_CHARS + 200


@pytest.mark.bad_input("test-only-folder")
def test_folder_with_only_test_and_meta_runs(
    toy: Callable[..., str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = toy([_row("u1", ["A", "B"], "C"), _row("u2", ["A"], "D")])
    (tmp_path / "Toys" / "train.jsonl").unlink()
    (tmp_path / "Toys" / "val.jsonl").unlink()
    docs = _task_load(tmp_path)["eval"]
    assert len(docs) == 2
    with caplog.at_level(logging.WARNING, logger="dep_eval.data.loaders"):
        pool = load_pool(source, "Toys")
    assert "pool built from test.jsonl only (train.jsonl, val.jsonl absent)" in caplog.text
    assert f"{tmp_path / 'Toys'}" in caplog.text
    assert {u: [r.asin for r in rs] for u, rs in pool.reviews.items()} == {
        "u1": ["A", "B"],
        "u2": ["A"],
    }
    # the split asked for must still be there
    error = _task_error(tmp_path, split="val")
    assert f"missing file {tmp_path / 'Toys' / 'val.jsonl'}" in str(error)
    assert "present: meta.jsonl, test.jsonl" in str(error)


# --------------------------------------------------------------------------- hub path


def _hub_twin(
    root: Path, category: str, drop: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> tuple[dict[tuple[str, str, str], datasets.Dataset], list[tuple[Any, ...]]]:
    """Local Datasets in the hub layout: DPL-main rows without a category column, DPL-meta
    with one config per category and a single split ``full``."""
    tables: dict[tuple[str, str, str], datasets.Dataset] = {}
    for split in loaders.SPLITS:
        rows = [
            {k: v for k, v in row.items() if k != "category"}
            for row in _read_jsonl(root / category / f"{split}.jsonl")
        ]
        if drop is not None:
            rows = [drop(row) for row in rows]
        tables[("SnowCharmQ/DPL-main", category, split)] = datasets.Dataset.from_list(rows)
    meta = _read_jsonl(root / category / "meta.jsonl")
    tables[("SnowCharmQ/DPL-meta", category, "full")] = datasets.Dataset.from_list(meta)
    return tables, []


def _mock_hub(
    monkeypatch: pytest.MonkeyPatch, tables: dict[tuple[str, str, str], datasets.Dataset]
) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        try:
            return tables[(path, name, split)]
        except KeyError:
            raise ValueError(f"BuilderConfig {name!r} not found") from None

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(loaders, "_hub_unreachable_reason", lambda: None)
    return calls


@pytest.mark.real_data
def test_hub_loader_matches_local(
    beauty_root: Path, beauty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables, _ = _hub_twin(beauty_root, CATEGORY)
    calls = _mock_hub(monkeypatch, tables)
    monkeypatch.delenv(loaders.ENV_DATA_DIR, raising=False)

    dataset = load_task_dataset(category=CATEGORY, split="test")  # hub is the default
    assert ("SnowCharmQ/DPL-main", CATEGORY, "test") in calls
    assert ("SnowCharmQ/DPL-meta", CATEGORY, "full") in calls
    hub = hub_source()
    hub_test = load_split(hub, CATEGORY, "test")
    assert [Sample.from_doc(doc) for doc in dataset["test"]] == hub_test
    local_test = load_split(beauty, CATEGORY, "test")
    assert [s.row for s in hub_test] == list(range(100))  # hub rows: 0-based row index
    for hub_sample, local_sample in zip(hub_test, local_test, strict=True):
        assert hub_sample.source == "hub:SnowCharmQ/DPL-main"
        assert hub_sample.profile == local_sample.profile
        assert hub_sample.target == local_sample.target
        assert hub_sample.item == local_sample.item
        assert hub_sample.key == local_sample.key
    hub_pool, local_pool = load_pool(hub, CATEGORY), load_pool(beauty, CATEGORY)
    assert hub_pool.reviews == local_pool.reviews
    assert hub_pool.reviewers == local_pool.reviewers


@pytest.mark.real_data
@pytest.mark.bad_input("hub-unknown-asins")
def test_hub_skips_unknown_asins_with_a_warning(
    beauty_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unknown_asins(row: dict[str, Any]) -> dict[str, Any]:
        profile = [dict(review) for review in row["profile"]]
        profile[0]["asin"] = "NOT-IN-META"
        return row | {"profile": profile}

    tables, _ = _hub_twin(beauty_root, CATEGORY, drop=unknown_asins)
    rows = list(tables[("SnowCharmQ/DPL-main", CATEGORY, "test")])
    rows[5]["data"]["asin"] = "ALSO-NOT-IN-META"
    tables[("SnowCharmQ/DPL-main", CATEGORY, "test")] = datasets.Dataset.from_list(rows)
    _mock_hub(monkeypatch, tables)
    with caplog.at_level(logging.WARNING, logger="dep_eval.data.loaders"):
        samples = load_split(hub_source(), CATEGORY, "test")
    assert len(samples) == 99 and 5 not in {s.row for s in samples}
    assert all("NOT-IN-META" not in {r.asin for r in s.profile} for s in samples)
    assert "99 profile reviews dropped" in caplog.text
    assert "1 rows skipped" in caplog.text and "row 5" in caplog.text


@pytest.mark.bad_input("hub-wrong-type")
def test_hub_type_errors_name_the_row_and_field(
    beauty_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables, _ = _hub_twin(beauty_root, CATEGORY)
    rows = list(tables[("SnowCharmQ/DPL-main", CATEGORY, "val")])
    rows[3]["data"]["rating"] = None
    tables[("SnowCharmQ/DPL-main", CATEGORY, "val")] = datasets.Dataset.from_list(rows)
    _mock_hub(monkeypatch, tables)
    with pytest.raises(DataError) as caught:
        load_split(hub_source(), CATEGORY, "val")
    error = caught.value
    assert (error.file, error.line, error.field) == (
        f"hub:SnowCharmQ/DPL-main[{CATEGORY}/val]",
        3,
        "data.rating",
    )
    assert f"[{CATEGORY}/val] row 3" in str(error)


@pytest.mark.bad_input("hub-unreachable")
def test_hub_failure_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_hub(monkeypatch, {})
    with pytest.raises(DataError, match="Offline, set data_dir") as caught:
        load_split(hub_source(), "Books", "test")
    assert isinstance(caught.value.__cause__, ValueError)

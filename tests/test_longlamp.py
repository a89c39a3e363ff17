"""LongLaMP's product-review tasks: the loader on the fixture (tests/fixtures/longlamp/, the
published schema; the real data was not reachable here), its errors and skips, the hub path
with ``datasets.load_dataset`` mocked, the task entry, and every method through plain
``lm_eval`` (slow)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest

from dep_eval.data import loaders, longlamp
from dep_eval.data.parsing import DataError
from dep_eval.data.records import Sample

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "longlamp"
USER, TEMPORAL = longlamp.CONFIGS


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    longlamp.clear_caches()
    loaders.clear_caches()


def rows(config: str, split: str, root: Path = FIXTURE) -> list[dict[str, Any]]:
    text = (root / config / f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_rows(root: Path, config: str, split: str, data: list[dict[str, Any]]) -> Path:
    path = root / config / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def copy_fixture(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "ll")
    return tmp_path / "ll"


# --------------------------------------------------------------------------- mapping


def test_fixture_is_what_its_generator_writes(tmp_path: Path, monkeypatch: Any) -> None:
    sys.path.insert(0, str(FIXTURE.parent))
    try:
        import make_longlamp_fixture as maker
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(maker, "HERE", tmp_path)
    maker.main()
    for config in longlamp.CONFIGS:
        for split in longlamp.SPLITS:
            assert rows(config, split, tmp_path) == rows(config, split)


def test_every_field_maps_to_the_sample() -> None:
    source = longlamp.local_source(FIXTURE)
    raw = rows(USER, "test")
    samples = longlamp.load_split(source, USER, "test")
    assert len(samples) == len(raw) == 4
    for sample, row in zip(samples, raw, strict=True):
        rating, description, summary = longlamp.parse_input(row["input"])
        assert sample.user_id == row["reviewerId"]
        assert (sample.category, sample.split, sample.source) == (USER, "test", source)
        assert sample.target.text == row["output"]
        assert sample.target.rating == float(rating)
        assert sample.target.title == summary
        assert sample.item.description == description
        assert sample.item.title == ""  # LongLaMP has no product titles
        assert sample.item.asin == sample.target.asin
        assert sample.target.timestamp == len(row["profile"])  # after every profile entry
        for index, (review, entry) in enumerate(zip(sample.profile, row["profile"], strict=True)):
            assert review.rating == entry["overall"]
            assert review.title == entry["summary"]
            assert review.text == entry["reviewText"]
            assert review.timestamp == index  # list order kept
            assert (
                loaders.load_pool(source, USER).item(review.asin).description
                == (entry["description"])
            )


def test_input_template_round_trip_with_quotes_inside() -> None:
    text = longlamp.format_input(4.0, 'a "travel" size, 2". The summary', 'Nice "enough"')
    assert text.startswith("Generate the review text written by a reviewer who has a given an")
    assert longlamp.parse_input(text) == (
        "4.0",
        'a "travel" size, 2". The summary',
        'Nice "enough"',
    )
    retyped = text.replace("has a given", "has given")  # third-party copies drop the "a"
    assert longlamp.parse_input(retyped) is not None
    assert longlamp.parse_input("Write a review of a toaster.") is None


def test_no_item_has_two_reviewers_and_temporal_pool_drops_targets() -> None:
    source = longlamp.local_source(FIXTURE)
    for config in longlamp.CONFIGS:
        assert longlamp.items_with_peers(loaders.load_pool(source, config)) == 0
    pool = loaders.load_pool(source, TEMPORAL)
    targets = {
        s.target.text
        for split in longlamp.SPLITS
        for s in longlamp.load_split(source, TEMPORAL, split)
    }
    pooled = {r.text for reviews in pool.reviews.values() for r in reviews}
    assert not targets & pooled
    # a temporal reviewer's val profile is the train profile plus the train target
    train, val = (longlamp.load_split(source, TEMPORAL, s) for s in ("train", "val"))
    assert val[0].profile[:-1] == train[0].profile
    assert val[0].profile[-1].text == train[0].target.text


def test_user_setting_has_disjoint_users() -> None:
    source = longlamp.local_source(FIXTURE)
    users = [{s.user_id for s in longlamp.load_split(source, USER, sp)} for sp in longlamp.SPLITS]
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])


def test_rating_as_string_and_description_as_list_are_read(tmp_path: Path) -> None:
    data = rows(USER, "test")
    data[0]["profile"][0]["overall"] = "3.0"
    data[0]["profile"][0]["description"] = ["Two", "parts."]
    write_rows(tmp_path, USER, "test", data)
    [first, *_] = longlamp.load_split(longlamp.local_source(tmp_path), USER, "test")
    assert first.profile[0].rating == 3.0
    assert (
        loaders.load_pool(longlamp.local_source(tmp_path), USER)
        .item(first.profile[0].asin)
        .description
        == "Two parts."
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda r: r.update(input="Write a review."), "input", "template"),
        (lambda r: r.pop("reviewerId"), "reviewerId", "missing"),
        (lambda r: r.update(output="  "), "output", "empty"),
        (lambda r: r["profile"][0].update(overall=7.0), "profile[0].overall", "outside"),
        (lambda r: r["profile"][0].pop("reviewText"), "profile[0].reviewText", "missing"),
        (lambda r: r["profile"][0].update(reviewText=r["output"]), "profile[0].reviewText", "leak"),
        (lambda r: r.update(profile="none"), "profile", "list"),
    ],
)
@pytest.mark.bad_input(
    "longlamp-input-template",
    "longlamp-missing-field",
    "longlamp-empty-target",
    "longlamp-rating-range",
    "longlamp-target-in-profile",
    "longlamp-profile-not-a-list",
)
def test_local_errors_name_file_line_and_field(
    tmp_path: Path, change: Any, field: str, words: str
) -> None:
    data = rows(USER, "test")
    change(data[1])
    path = write_rows(tmp_path, USER, "test", data)
    with pytest.raises(DataError, match=words) as caught:
        longlamp.load_split(longlamp.local_source(tmp_path), USER, "test")
    assert (caught.value.file, caught.value.line, caught.value.field) == (str(path), 2, field)


@pytest.mark.bad_input("longlamp-missing-config-folder", "longlamp-unknown-config")
def test_missing_folder_and_unknown_config_say_what_exists(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="config folder .* not found"):
        longlamp.load_split(longlamp.local_source(tmp_path), USER, "test")
    with pytest.raises(DataError, match="unknown LongLaMP config"):
        longlamp.load_split(longlamp.local_source(FIXTURE), "topic_writing_user", "test")


@pytest.mark.bad_input("longlamp-empty-profile")
def test_empty_profile_row_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = rows(USER, "test")
    data[2]["profile"] = []
    write_rows(tmp_path, USER, "test", data)
    with caplog.at_level(logging.WARNING):
        samples = longlamp.load_split(longlamp.local_source(tmp_path), USER, "test")
    assert len(samples) == 3
    assert "empty profile" in caplog.text


# --------------------------------------------------------------------------- the hub


def mock_hub(monkeypatch: pytest.MonkeyPatch, tables: dict[tuple[str, str, str], Any]) -> list:
    calls: list[tuple[str, str, str]] = []

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        try:
            return tables[(path, name, split)]
        except KeyError:
            raise ValueError(f"BuilderConfig {name!r} not found") from None

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(loaders, "_hub_unreachable_reason", lambda: None)
    return calls


def hub_tables(change: Any = None) -> dict[tuple[str, str, str], datasets.Dataset]:
    tables = {}
    for config in longlamp.CONFIGS:
        for split in longlamp.SPLITS:
            data = rows(config, split)
            if change is not None:
                change(config, split, data)
            tables[(longlamp.HUB_REPO, config, split)] = datasets.Dataset.from_list(data)
    return tables


def test_hub_path_matches_the_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = mock_hub(monkeypatch, hub_tables())
    loaded = longlamp.load_task_dataset({"category": TEMPORAL, "split": "test"})  # hub: default
    assert (longlamp.HUB_REPO, TEMPORAL, "test") in calls
    hub = [Sample.from_doc(doc) for doc in loaded["test"]]
    local = longlamp.load_split(longlamp.local_source(FIXTURE), TEMPORAL, "test")
    assert [s.source for s in hub] == [longlamp.hub_source()] * len(local)
    assert [s.row for s in hub] == list(range(len(local)))  # hub rows: 0-based
    for a, b in zip(hub, local, strict=True):
        assert (a.key, a.profile, a.target, a.item) == (b.key, b.profile, b.target, b.item)
    assert [d[longlamp.INPUT_FIELD] for d in loaded["test"]] == [
        r["input"] for r in rows(TEMPORAL, "test")
    ]
    pool = loaders.load_pool(longlamp.hub_source(), TEMPORAL)  # every split, from the hub
    assert {c[2] for c in calls if c[1] == TEMPORAL} == set(longlamp.SPLITS)
    assert pool.reviews == loaders.load_pool(longlamp.local_source(FIXTURE), TEMPORAL).reviews


@pytest.mark.bad_input("longlamp-hub-bad-rows")
def test_hub_skips_what_the_user_cannot_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def spoil(config: str, split: str, data: list[dict[str, Any]]) -> None:
        if (config, split) == (USER, "test"):
            data[0]["input"] = "Write a review."  # not the template: row skipped
            data[1]["profile"][0]["overall"] = 9.0  # bad entry: dropped

    mock_hub(monkeypatch, hub_tables(spoil))
    with caplog.at_level(logging.WARNING):
        samples = longlamp.load_split(longlamp.hub_source(), USER, "test")
    local = longlamp.load_split(longlamp.local_source(FIXTURE), USER, "test")
    assert [s.user_id for s in samples] == [s.user_id for s in local[1:]]
    assert len(samples[0].profile) == len(local[1].profile) - 1
    assert "1 rows skipped" in caplog.text and "does not follow" in caplog.text
    assert "1 profile entries dropped" in caplog.text and "outside" in caplog.text


@pytest.mark.bad_input("longlamp-hub-unreachable")
def test_unreachable_hub_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "_hub_unreachable_reason", lambda: "no network")
    with pytest.raises(loaders.HubUnreachable, match="to_json"):
        longlamp.load_split(longlamp.hub_source(), USER, "test")


# --------------------------------------------------------------------------- task entry


def test_task_loader_pins_config_and_split() -> None:
    from dep_eval.tasks.longlamp_utils import doc_to_text, load_dataset

    loaded = load_dataset(task_category=TEMPORAL, task_split="val", data_dir=str(FIXTURE))
    docs = list(loaded["eval"])
    assert {d["split"] for d in docs} == {"val"} and {d["category"] for d in docs} == {TEMPORAL}
    assert doc_to_text(docs[0]) == rows(TEMPORAL, "val")[0]["input"]  # LongLaMP's own prompt
    with pytest.raises(ValueError, match="evaluates LongLaMP category"):
        load_dataset(task_category=TEMPORAL, task_split="val", category=USER, data_dir=str(FIXTURE))


def test_task_yamls_exist_for_both_settings_and_splits() -> None:
    tasks = Path(__file__).resolve().parents[1] / "tasks"
    for config in longlamp.CONFIGS:
        for suffix, split in (("", "test"), ("_val", "val")):
            text = (tasks / f"longlamp_{config}{suffix}.yaml").read_text()
            assert f"task_category: {config}" in text and f"task_split: {split}" in text


# --------------------------------------------------------------------------- methods


@pytest.mark.bad_input("dpl-without-item-ids")
def test_dpl_refuses_data_without_item_ids() -> None:
    from dep_eval.baselines.dpl import Dpl, DplConfig

    pool = loaders.load_pool(longlamp.local_source(FIXTURE), USER)
    with pytest.raises(ValueError, match="no item of the product_review_user pool has two"):
        Dpl(DplConfig(), llm=None).setup(pool)


def test_dep_runs_his_only_and_says_so(llm: Any, caplog: pytest.LogCaptureFixture) -> None:
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP
    from dep_eval.report import slices

    source = longlamp.local_source(FIXTURE)
    pool = loaders.load_pool(source, USER)
    dep = DEP(DEPArgs(), llm)
    with caplog.at_level(logging.WARNING):
        dep.setup(pool)
    assert "DEP finds no peers" in caplog.text and "his slots only" in caplog.text
    sample = longlamp.load_split(source, USER, "test")[2]
    prompt = dep.build_prompt(sample, pool)
    text = prompt.messages[-1]["content"]
    assert "[HIS_TOKEN_0]" in text and "[DIFF_TOKEN" not in text
    assert slices.lookup(sample.key) == {"dep_peers": 0.0, "dep_diff_slots": 0.0}


METHODS = ["nonperso", "rag", "pag", "pplug", "oppu", "dep"]


def run_lm_eval(model: str, task: str, out: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model",
        model,
        "--tasks",
        task,
        "--metadata",
        json.dumps({"data_dir": str(FIXTURE)}),
        "--limit",
        "2",
        "--batch_size",
        "2",
        "--gen_kwargs",
        "max_gen_toks=16",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.slow
@pytest.mark.parametrize("model", METHODS)
def test_plain_lm_eval_runs_every_method_on_the_fixture(model: str, tmp_path: Path) -> None:
    task = "longlamp_product_review_user"
    result = run_lm_eval(model, task, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    [samples_file] = (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 2
    assert all(s["resps"][0][0].strip() for s in samples)
    assert [s["profile_size"] for s in samples] == [1.0, 4.0]  # the first two test rows
    assert all(0 <= s["rouge1"] <= 1 and 0 <= s["meteor"] <= 1 for s in samples)
    if model == "dep":
        assert [s["dep_peers"] for s in samples] == [0.0, 0.0]
        assert "DEP finds no peers" in result.stderr


@pytest.mark.slow
def test_plain_lm_eval_dpl_refuses_with_the_reason(tmp_path: Path) -> None:
    result = run_lm_eval("dpl", "longlamp_product_review_temporal", tmp_path / "out")
    assert result.returncode != 0
    assert "DPL cannot run on this data: use --model rag" in result.stderr

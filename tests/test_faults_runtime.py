"""Issue 32: faults a real run meets (a misspelled metadata key, a category that is a path, a
field of a megabyte, an invisible target, a full disk, an unusable cache folder), each on
the path ``lm_eval`` takes: the task's ``load_dataset`` (as lm-eval calls it), the adapter's
generation cache, or a real ``lm_eval`` subprocess (marked slow)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from dep_eval import preflight
from dep_eval.data.loaders import DataError, clear_caches


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_caches()
    monkeypatch.setattr(preflight, "_check_metrics", lambda: None)  # not what these are about


def _utils() -> Any:
    import dep_eval.tasks.utils as utils

    return utils


def _review(asin: str, timestamp: int, **overrides: Any) -> dict[str, Any]:
    review = {
        "asin": asin,
        "rating": 4.0,
        "title": f"about {asin}",
        "text": f"My review of {asin}, written at {timestamp}.",
        "timestamp": timestamp,
    }
    return review | overrides


def _row(user: str, asins: str, target: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "category": "Toys",
        "profile": [_review(asin, i) for i, asin in enumerate(asins)],
        "data": _review(target, len(asins)),
    }


def _data_dir(root: Path, test_rows: list[dict[str, Any]] | None = None) -> Path:
    folder = root / "Toys"
    folder.mkdir(parents=True)

    def write(name: str, rows: list[dict[str, Any]]) -> None:
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    write("meta.jsonl", [{"asin": a, "title": f"Toy {a}", "description": ""} for a in "ABCD"])
    write("train.jsonl", [_row("u1", "A", "B")])
    write("val.jsonl", [_row("u1", "AB", "C")])
    write("test.jsonl", test_rows or [_row("u1", "AB", "D"), _row("u2", "AB", "C")])
    return root


# ------------------------------------------------------------------ row 4: metadata keys


@pytest.mark.bad_input("metadata-key-misspelled")
@pytest.mark.parametrize(
    "key, meant", [("spilt", "split"), ("catgory", "category"), ("data-dir", "data_dir")]
)
def test_a_misspelled_metadata_key_is_refused(tmp_path: Path, key: str, meant: str) -> None:
    data_dir = _data_dir(tmp_path)
    options = {"data_dir": str(data_dir), "category": "Toys", "split": "val"}
    options[key] = options.pop(meant)
    expected = (
        f"key '{key}' is not one this task reads; did you mean '{meant}'\\? "
        "The task reads category, split, data_dir, source"
    )
    with pytest.raises(ValueError, match=expected):
        _utils().load_dataset(**options)


def test_model_arguments_and_lm_eval_keys_pass_the_metadata_check(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path)
    # what lm-eval hands load_dataset: --model_args and its own keys merged in
    loaded = _utils().load_dataset(
        data_dir=str(data_dir),
        category="Toys",
        split="val",
        pretrained="x",
        k=4,
        checkpoint="c",
        with_text=True,
        config_source="y",
        version=1,
    )
    assert [doc["split"] for doc in loaded["eval"]] == ["val"]


# ------------------------------------------------------------- row 5: category is a name


@pytest.mark.bad_input("category-is-a-path")
@pytest.mark.parametrize("category", ["../evil/Toys", "/etc", "..", ".", "Toys/../Toys", ""])
def test_a_category_that_is_a_path_is_refused(tmp_path: Path, category: str) -> None:
    data_dir = _data_dir(tmp_path / "data")
    _data_dir(tmp_path / "evil")  # a readable category outside data_dir
    with pytest.raises(DataError) as caught:
        _utils().load_dataset(data_dir=str(data_dir), category=category or "x/")
    message = str(caught.value)
    assert "is not the name of a folder inside the data folder" in message
    assert f"{data_dir.resolve()}" in message and "categories there: Toys" in message


# --------------------------------------------------------------- row 11: invisible target


@pytest.mark.bad_input("invisible-target-text")
@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200d \u2060", "\ufeff\n", "\u00ad"])
def test_a_target_of_invisible_characters_is_empty(tmp_path: Path, text: str) -> None:
    bad = _row("u2", "AB", "C")
    bad["data"]["text"] = text
    data_dir = _data_dir(tmp_path, [_row("u1", "AB", "D"), bad])
    with pytest.raises(DataError) as caught:
        _utils().load_dataset(data_dir=str(data_dir), category="Toys")
    assert f"{data_dir / 'Toys' / 'test.jsonl'}:2, field 'data.text': the target review text " \
           "is empty: nothing to score" in str(caught.value)  # fmt: skip


def test_visible_text_with_zero_width_characters_is_kept(tmp_path: Path) -> None:
    row = _row("u1", "AB", "D")
    row["data"]["text"] = "Nice\u200b cream 👍"
    docs = _utils().load_dataset(data_dir=str(_data_dir(tmp_path, [row])), category="Toys")
    assert docs["eval"][0]["target"]["text"] == "Nice\u200b cream 👍"


# ------------------------------------------------------------- row 10: every field capped


@pytest.mark.bad_input("long-title-field")
def test_a_megabyte_title_is_clipped_and_history_kept(
    tmp_path: Path, llm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from dep_eval.baselines.rag import Rag, RagConfig

    from dep_eval.data.loaders import load_pool
    from dep_eval.data.records import Sample
    from dep_eval.prompts import SYSTEM

    row = _row("u1", "ABC", "D")
    row["data"]["title"] = "big " * 250_000  # 1 MB, the case
    row["profile"][0]["title"] = "past " * 200_000
    data_dir = _data_dir(tmp_path, [row, _row("u2", "AB", "C")])
    with caplog.at_level(logging.WARNING):
        docs = _utils().load_dataset(data_dir=str(data_dir), category="Toys")["eval"]
    assert "1 of 2 documents have a text longer than prompts show, clipped to its head " \
           "(past review title: 1, target title: 1;" in caplog.text  # fmt: skip
    assert len(_utils().doc_to_text(docs[0])) < 1000  # the plain prompt lm-eval logs, too

    sample = Sample.from_doc(docs[0])
    pool = load_pool(sample.source, sample.category)
    method = Rag(RagConfig(), llm)
    method.setup(pool)
    prompt = method.build_prompt(sample, pool)
    text = llm.render(prompt)
    assert len(llm.tokenize(prompt)) < 1000  # was 500,126 tokens
    assert SYSTEM in text and "Product: Toy D" in text  # the instructions survive
    assert text.count("Past review") == 3  # and the whole history
    assert ("big " * 25).strip() in text and "big " * 30 not in text

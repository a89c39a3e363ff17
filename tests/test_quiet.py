"""Warnings only when the user did something to warn about: lm-eval's generic hint for
``custom_dataset`` tasks is dropped for this package's tasks, and only for them."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

TASKS_DIR = Path(next(iter(importlib.util.find_spec("dep_eval.tasks").submodule_search_locations)))
HINT = "Custom kwargs can be passed to `--metadata`"


def test_custom_task_loads_without_the_generic_metadata_hint(
    shared_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": str(shared_data_dir / "amazon_beauty"), "category": "All_Beauty"}
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    with caplog.at_level(logging.INFO):
        loaded = manager.load(["amazon_review_personalized_custom"])
    assert loaded["tasks"]
    assert HINT not in caplog.text
    # another task's hint still gets through
    other = logging.LogRecord("lm_eval.api.task", logging.WARNING, "", 0, f"x: {HINT}", (), None)
    assert all(f(other) for f in logging.getLogger("lm_eval.api.task").filters)

"""Hub unreachable: one short error at once, naming the local-folder route; no retries, and
no traceback unless lm-eval's logging is at DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import datasets
import pytest
from huggingface_hub import constants

from dep_eval.data import loaders
from dep_eval.data.loaders import HubUnreachable, hub_source, load_split

DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: the connection is refused
LOAD = (
    "import logging, sys\n"
    "if sys.argv[1] == 'debug':\n"
    "    logging.getLogger('lm_eval').setLevel(logging.DEBUG)\n"
    "from dep_eval.tasks.utils import load_dataset\n"
    "load_dataset(task_category='Books', task_split='test')\n"
)


def test_unreachable_endpoint_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[str] = []
    real_urlopen = urllib.request.urlopen

    def counting_urlopen(url: str, *args: object, **kwargs: object) -> object:
        tries.append(url)
        return real_urlopen(url, *args, **kwargs)

    def no_load_dataset(*args: object, **kwargs: object) -> None:
        raise AssertionError("datasets.load_dataset would retry an unreachable hub")

    monkeypatch.setattr(constants, "ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)
    monkeypatch.setattr(datasets, "load_dataset", no_load_dataset)
    with pytest.raises(HubUnreachable) as caught:
        load_split(hub_source(), "Books", "test")
    assert tries == [DEAD_ENDPOINT]
    message = str(caught.value)
    assert DEAD_ENDPOINT in message and "data_dir" in message
    assert "amazon_review_personalized_custom" in message


def run_task_loader(tmp_path: Path, verbosity: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {loaders.ENV_DATA_DIR}}
    clean |= {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    # a generous bound, not a timing: it stops a retry loop from hanging the suite
    return subprocess.run(
        [sys.executable, "-c", LOAD, verbosity],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": DEAD_ENDPOINT, "HF_HUB_OFFLINE": "0"}],
    ids=["HF_HUB_OFFLINE", "dead-endpoint"],
)
@pytest.mark.slow
def test_task_loader_fails_with_one_short_message(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_task_loader(tmp_path, "info", **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Retry" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dep-eval: ") and "data_dir" in last, result.stderr


@pytest.mark.slow
def test_task_loader_shows_the_traceback_at_debug(tmp_path: Path) -> None:
    result = run_task_loader(tmp_path, "debug", HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "HubUnreachable" in result.stderr

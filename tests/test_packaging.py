"""A wheel built from a clean copy of the sources ships the checkpoints and task YAMLs, and
building it prints no packaging warnings (a newcomer reading "Package would be ignored"
fears the shipped checkpoint is missing)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ("dep-smollm2-minilm", "pplug-smollm2-minilm", "dep-lora-smollm2-minilm")
# what a developer's tree holds beside the sources; a clean clone has none of it
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "out", "runs", "*.egg-info", "__pycache__", ".*_cache"
)


@pytest.mark.slow
def test_wheel_contains_checkpoints_and_tasks_without_warnings(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)  # a build writes build/ beside them
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist")]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # no registry access needed to build
    built = subprocess.run([*command, str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "BuildBackendWarning" not in output, output
    assert "absent from the `packages` configuration" not in output, output

    (wheel,) = (tmp_path / "dist").glob("dep_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for checkpoint in CHECKPOINTS:
        for file in ("config.json", "model.safetensors"):
            assert f"dep_eval/checkpoints/{checkpoint}/{file}" in names
    for file in ("adapter_config.json", "adapter_model.safetensors"):  # DEP + LoRA's LoRA
        assert f"dep_eval/checkpoints/dep-lora-smollm2-minilm/adapter/{file}" in names
    yamls = {p.name for p in (ROOT / "tasks").glob("*.yaml")}
    assert yamls and {f"dep_eval/tasks/{name}" for name in yamls} <= names
    assert "dep_eval/tasks/_template" in names
    assert "dep_eval_lm_eval.pth" in names

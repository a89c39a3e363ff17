"""The README's main command, parsed out of README.md and run as a newcomer types it (with
``--limit 2`` and a temporary output folder), so that the README cannot rot."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_main_command() -> list[str]:
    """The ``lm_eval`` part of the first command of README.md's first ``bash`` block."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no bash block"
    lines = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    steps = [step.strip() for step in lines[0].split("&&")]
    # the steps before it: `bash .ci/setup` (done: this is its venv) and activating the venv
    assert steps[:-1] == ["bash .ci/setup", "source .venv/bin/activate"], steps
    command = shlex.split(steps[-1])
    assert command[0] == "lm_eval", command
    return command


def readme_results_location() -> str:
    """Where the README says the results file lands, e.g. ``out/dep/NAME/results_<date>.json``."""
    found = re.search(r"`(out/[^`]*/results_<date>\.json)`", (ROOT / "README.md").read_text())
    assert found, "README.md does not say where the results file lands"
    return found.group(1)


def option(command: list[str], name: str, value: str) -> list[str]:
    index = command.index(name)
    return [*command[: index + 1], value, *command[index + 2 :]]


def test_readme_parses() -> None:
    command = readme_main_command()
    output = Path(command[command.index("--output_path") + 1])
    folder = output.parent if output.suffix == ".json" else output  # lm-eval's two forms
    assert Path(readme_results_location()).parent == folder


@pytest.mark.slow
def test_readme_main_command_runs(shared_data_dir: Path, tmp_path: Path) -> None:
    command = readme_main_command()
    output = command[command.index("--output_path") + 1]
    command = option(command, "--limit", "2")
    command = option(command, "--output_path", str(tmp_path / output))
    command[0] = str(BIN / "lm_eval")  # what `source .venv/bin/activate` puts first on PATH
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    pattern = readme_results_location().replace("<date>", "*")
    [results_file] = tmp_path.glob(pattern)
    results = json.loads(results_file.read_text())
    assert results["config"]["limit"] == 2
    assert "rouge1,none" in results["results"]["amazon_review_personalized_custom"]
    [samples] = results_file.parent.glob("samples_amazon_review_personalized_custom_*.jsonl")
    assert len(samples.read_text().splitlines()) == 2
    # nothing the user did not ask for is warned about
    assert "CUDA is not available" not in result.stderr
    assert "Batches" not in result.stderr
    assert "Custom kwargs can be passed" not in result.stderr
    assert "model_args not specified" not in result.stderr

"""benchmarks/bench_gpu.py end to end on the CPU (``--tiny``): the bundle from real data, every
section's figures in the json and the md, and a rerun keeping them (resumable)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.mark.slow
def test_tiny_run_writes_every_section_and_resumes(beauty_dir: Path, tmp_path: Path) -> None:
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    common = ["--prompts", str(bundle), "--out", str(out), "--model-dir", str(tmp_path / "m")]
    sizes = ["--tokens", "4", "--batches", "1", "2", "--decode-steps", "2", "--auto-rows", "2"]
    sizes += ["--decode", "fixed"]  # the GPU's graph route, its steps run eagerly
    first = bench("--data-dir", str(beauty_dir), "--samples", "3", *common, *sizes)
    assert first.returncode == 0, first.stderr[-3000:]
    tokenizer = json.loads((bundle / "tokenizer" / "tokenizer_config.json").read_text())
    assert "<|his_" not in json.dumps(tokenizer)  # a clean tokenizer: no DEP tokens added
    data = json.loads((out / "bench_gpu.json").read_text())
    results = data["results"]
    for kind in ("rag", "dep"):
        for runner in ("engine", "generate"):
            for batch in (1, 2):
                assert results[f"throughput/{kind}/{runner}/{batch}"]["tokens_per_second"] > 0
    assert results["throughput/rag/engine-dynamic/2"]["tokens_per_second"] > 0
    assert "throughput/dep/engine-dynamic/2" not in results  # RAG only
    assert results["load/engine"]["decode_route"] == "fixed"
    decode = results["decode/2"]
    assert decode["mode"] == "fixed" and decode["step_ms"] > 0 and decode["dynamic_step_ms"] > 0
    assert results["auto/choice"]["batch"] >= 1
    assert results["auto/generate"]["rows"] == 2
    assert results["train/dep_step"]["rows"] >= 1 and data["skipped"] == []
    report = (out / "bench_gpu.md").read_text()
    assert "| dep | 2 |" in report and "A DEP training step" in report
    again = bench(*common, *sizes, "--sections", "train")  # the bundle is reused as it is
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: " in again.stderr
    assert (
        json.loads((out / "bench_gpu.json").read_text())["results"]["train/dep_step"]
        == (results["train/dep_step"])
    )

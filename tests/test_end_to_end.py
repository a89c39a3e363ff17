"""The real path: plain ``lm_eval`` as a subprocess, the embedded SmolLM2, the shared data.

A few documents and few new tokens keep it to minutes on a CPU; the metrics are checked
for sanity (present, in range), the files lm-eval writes for presence and content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = 2


def make_checkpoint(folder: Path) -> Path:
    """A DEP checkpoint written by the project's own code (untrained weights, seeded)."""
    import torch

    from dep_eval.checkpoint import save_checkpoint
    from dep_eval.dep.module import DEPConfig, DEPModule

    torch.manual_seed(0)
    save_checkpoint(DEPModule(DEPConfig()), folder)
    return folder


def run_lm_eval(model: str, model_args: str, data_dir: Path, out: Path) -> dict:
    lm_eval = Path(sys.executable).parent / "lm_eval"
    metadata = json.dumps({"data_dir": str(data_dir), "category": "All_Beauty"})
    command = [
        str(lm_eval),
        "--model",
        model,
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        metadata,
        "--limit",
        str(LIMIT),
        "--batch_size",
        "2",
        "--gen_kwargs",
        "max_gen_toks=24",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    if model_args:
        command[3:3] = ["--model_args", model_args]
    env = dict(os.environ)
    result = subprocess.run(command, cwd=out.parent, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rouge1" in result.stdout and "meteor" in result.stdout  # the printed table
    [results_file] = out.rglob("results_*.json")
    [samples_file] = out.rglob("samples_amazon_review_personalized_custom_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == LIMIT
    assert all(sample["resps"][0][0].strip() for sample in samples)  # real generated text
    return json.loads(results_file.read_text())["results"]["amazon_review_personalized_custom"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["nonperso", "rag", "dep"])
def test_lm_eval_runs_each_method(model: str, beauty_dir: Path, tmp_path: Path) -> None:
    args = ""
    if model == "dep":
        args = f"checkpoint={make_checkpoint(tmp_path / 'ckpt')}"
    metrics = run_lm_eval(model, args, beauty_dir, tmp_path / "out")
    for name in ("rouge1", "rougeL", "meteor", "bertscore_minilm_f1"):
        assert 0 < metrics[f"{name},none"] <= 1, (name, metrics)
    assert 0 <= metrics["bleu,none"] <= 100
    assert "bertscore_f1,none" not in metrics  # the paper's encoder is not here: never mislabelled
    assert metrics["llm_calls,none"] == 1
    assert metrics["prompt_tokens,none"] > 50
    assert 0 < metrics["generated_tokens,none"] <= 25  # the cap, plus the EOS token

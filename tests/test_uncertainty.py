"""Bootstrap intervals, the paired test, and how they reach lm-eval's results file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dep_eval.metrics import harness, lexical, uncertainty


def test_bootstrap_of_a_fair_coin_matches_the_normal_interval() -> None:
    # 100 documents scoring 0 or 1 half the time: the mean's standard error is
    # sqrt(0.25 / 100) = 0.05, so the 95 % interval is about 0.5 +- 1.96 * 0.05
    scores = [0.0, 1.0] * 50
    interval = uncertainty.bootstrap_interval(scores, n_resamples=2000)
    assert interval.estimate == 0.5
    assert interval.stderr == pytest.approx(0.05, abs=0.005)
    assert interval.low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.02)
    assert interval.high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.02)


def test_constant_scores_have_a_zero_width_interval() -> None:
    interval = uncertainty.bootstrap_interval([0.3] * 20)
    assert (interval.low, interval.high, interval.stderr) == pytest.approx((0.3, 0.3, 0.0))


def test_bootstrap_is_seeded() -> None:
    scores = np.random.default_rng(0).random(50)
    first = uncertainty.bootstrap_interval(scores)
    assert uncertainty.bootstrap_interval(scores) == first
    assert uncertainty.bootstrap_interval(scores, seed=7) != first
    assert first.resamples == uncertainty.DEFAULT_RESAMPLES


@pytest.mark.parametrize("seed", range(5))
def test_interval_contains_the_point_estimate(seed: int) -> None:
    scores = np.random.default_rng(seed).beta(2, 5, size=30)
    interval = uncertainty.bootstrap_interval(scores, seed=seed)
    assert interval.estimate == pytest.approx(scores.mean())
    assert interval.low <= interval.estimate <= interval.high


def test_width_shrinks_with_the_number_of_documents() -> None:
    rng = np.random.default_rng(1)
    widths = {}
    for n in (25, 400):
        interval = uncertainty.bootstrap_interval(rng.random(n))
        widths[n] = interval.high - interval.low
    # the width goes as 1 / sqrt(n): 16 times the documents, about a quarter of the width
    assert widths[400] < widths[25] / 2.5


def test_nothing_to_resample() -> None:
    assert uncertainty.bootstrap_interval([0.4]) is None
    assert uncertainty.bootstrap_interval([0.4, 0.5], n_resamples=0) is None


def test_resamples_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(uncertainty.RESAMPLES_VARIABLE, "200")
    assert uncertainty.bootstrap_interval([0.1, 0.5, 0.9]).resamples == 200
    monkeypatch.setenv(uncertainty.RESAMPLES_VARIABLE, "many")
    with pytest.raises(ValueError, match="DEP_EVAL_BOOTSTRAP_RESAMPLES='many'"):
        uncertainty.resamples()


PAIRS = [
    ("the cat sat on the mat", "the cat sat on a mat"),
    ("a quick brown fox", "the quick brown fox jumped"),
    ("hello world", "goodbye world"),
    ("good shampoo for dry hair", "this shampoo is good for dry hair"),
    ("it smells nice", "the smell is nice and light"),
]


def test_corpus_bleu_is_resampled_from_its_statistics() -> None:
    statistics = np.array([lexical.bleu_statistics(p, r) for p, r in PAIRS * 4])
    bleu = harness.statistic_of("bleu")
    predictions, references = zip(*(PAIRS * 4), strict=True)
    assert float(bleu(statistics)) == pytest.approx(lexical.bleu(predictions, references))
    interval = uncertainty.bootstrap_interval(statistics, bleu)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.low < interval.high  # the documents differ, so resamples do too


def test_interval_aggregations_write_stderr_and_bounds() -> None:
    scores = list(np.random.default_rng(3).random(40))
    expected = uncertainty.bootstrap_interval(np.asarray(scores))
    assert harness.AGGREGATIONS["meteor_stderr"](scores) == expected.stderr
    assert harness.AGGREGATIONS["meteor_ci_low"](scores) == expected.low
    assert harness.AGGREGATIONS["meteor_ci_high"](scores) == expected.high
    assert harness.AGGREGATIONS["meteor_stderr"](scores[:1]) == "N/A"  # one document


def test_identical_runs_are_not_significantly_different() -> None:
    scores = np.random.default_rng(4).random(60)
    test = uncertainty.paired_test(scores, scores)
    assert test.difference == 0 and test.p_value == 1.0 and not test.significant


def test_a_clearly_better_run_is_significant() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(60)
    better = base + 0.05 + rng.normal(0, 0.01, 60)
    test = uncertainty.paired_test(better, base)
    assert test.difference == pytest.approx(0.05, abs=0.01)
    assert test.significant and test.p_value < 0.01
    # a gain far smaller than the per-document noise is not
    noisy = base + 0.001 + rng.normal(0, 0.2, 60)
    assert not uncertainty.paired_test(noisy, base).significant


def test_few_documents_get_the_exact_randomization_test() -> None:
    # 4 documents, each better by 1: of the 2**4 sign patterns only all-plus and all-minus
    # reach |difference| >= 1, so the two-sided p-value is 2 / 16
    test = uncertainty.paired_test([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
    assert test.p_value == pytest.approx(2 / 16)


def test_paired_bleu_swaps_whole_documents() -> None:
    good = np.array([lexical.bleu_statistics(r, r) for _, r in PAIRS * 6])  # perfect outputs
    poor = np.array([lexical.bleu_statistics(p, r) for p, r in PAIRS * 6])
    bleu = harness.statistic_of("bleu")
    test = uncertainty.paired_test(good, poor, bleu)
    assert test.difference == pytest.approx(100.0 - float(bleu(poor)))
    assert test.significant
    with pytest.raises(ValueError, match="differ in shape"):
        uncertainty.paired_test(good, poor[:-1], bleu)


# ------------------------------------------------------------------ real lm-eval output


@pytest.mark.slow
def test_lm_eval_writes_numbers_into_stderr(beauty_dir: Path, tmp_path: Path) -> None:
    """Plain lm_eval on 3 documents: every quality metric's _stderr and bounds are numbers,
    the samples carry per-document scores, and the leaderboard shows the intervals."""
    lm_eval = Path(sys.executable).parent / "lm_eval"
    out = tmp_path / "out"
    command = [
        str(lm_eval),
        "--model",
        "nonperso",
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        json.dumps({"data_dir": str(beauty_dir), "category": "All_Beauty"}),
        "--limit",
        "3",
        "--batch_size",
        "3",
        "--gen_kwargs",
        "max_gen_toks=16",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = out.rglob("results_*.json")
    metrics = json.loads(results_file.read_text())["results"]["amazon_review_personalized_custom"]
    for name in ("rouge1", "rougeL", "meteor", "bleu", "bertscore_minilm_f1", "meteor_lc"):
        value, stderr = metrics[f"{name},none"], metrics[f"{name}_stderr,none"]
        low, high = metrics[f"{name}_ci_low,none"], metrics[f"{name}_ci_high,none"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in (stderr, low, high)), name
        assert low <= value <= high and stderr >= 0, (name, low, value, high)
    assert metrics["gen_words,none"] > 0 and metrics["ref_words,none"] > 0
    ratio = metrics["gen_words,none"] / metrics["ref_words,none"]
    assert metrics["length_ratio,none"] == pytest.approx(ratio)

    [samples_file] = out.rglob("samples_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert all(isinstance(s["meteor"], float) and len(s["bleu"]) == 10 for s in samples)

    from dep_eval.leaderboard import leaderboard_text
    from dep_eval.report.results import load_results
    from dep_eval.report.table import paired_difference

    text = leaderboard_text([out], "markdown", against="nonperso")
    assert " ±" in text.splitlines()[2] and "(reference)" in text
    # the samples file pairs by document key: a run against itself is no difference at all
    [run], _ = load_results([out])
    assert run.samples_path.is_file()
    for name in ("meteor", "bleu"):
        assert paired_difference(run, run, name) == (0.0, 1.0, 3)

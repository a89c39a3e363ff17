"""``dep-eval heldout-nll`` (dep_eval/train/heldout.py) scores exactly the target tokens
(+ EOS), no more, no less, and its table pairs each row against the first model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from dep_eval import cli
from dep_eval.train import heldout


@pytest.mark.slow
def test_target_nll_matches_the_models_own_loss(beauty_dir: Path) -> None:
    from dep_eval.data.loaders import load_split, resolve_source

    lm = heldout.make_lm("nonperso")
    source = resolve_source({"data_dir": str(beauty_dir)})
    samples = load_split(source, "All_Beauty", "val")[:2]
    pool = lm.pool_for(samples[0])

    scored = heldout.target_nll(lm, samples, pool, max_target_tokens=16)

    tokenizer = lm.llm.tokenizer
    for sample, (nll, count) in zip(samples, scored, strict=True):
        prompt_ids = lm.llm.tokenize(lm.method.build_prompt(sample, pool))
        target = tokenizer(sample.target.text, add_special_tokens=False)["input_ids"][:16]
        target.append(tokenizer.eos_token_id)
        ids = torch.tensor([prompt_ids + target])
        labels = torch.tensor([[-100] * len(prompt_ids) + target])
        with torch.no_grad():
            expected = lm.llm.model(input_ids=ids, labels=labels).loss * len(target)
        assert count == len(target) == 17
        assert abs(nll - float(expected)) < 1e-3 * count


def test_summary_pairs_rows_against_the_first_model() -> None:
    # (summed NLL, tokens) per row: the second model is lower on rows 1 and 3
    rows = {"a": [(4.0, 2), (3.0, 3), (6.0, 2)], "b": [(2.0, 2), (6.0, 3), (4.0, 2)]}
    summary = heldout.summarize(rows, {"a": 3.0, "b": 6.0}, reference="a")

    first, second = summary
    assert first["mean_row_diff_vs_reference"] == 0.0
    assert first["rows_lower_than_reference"] == 0
    assert second["row_nll_per_token"] == [1.0, 2.0, 2.0]
    assert second["nll_per_token"] == round(12.0 / 7, 4)  # over tokens, not rows
    assert second["mean_row_diff_vs_reference"] == round((-1.0 + 1.0 - 1.0) / 3, 4)
    assert second["rows_lower_than_reference"] == 2
    assert second["seconds_per_row"] == 2.0


def test_it_writes_both_files_with_its_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the scoring is tested above; here only what the command writes from it
    monkeypatch.setattr(
        heldout, "target_nll", lambda lm, samples, pool, cap: [(2.0, 2)] * len(samples)
    )
    samples = ["row 1", "row 2"]
    monkeypatch.setattr("dep_eval.data.loaders.resolve_source", lambda metadata: "source")
    monkeypatch.setattr("dep_eval.data.loaders.load_split", lambda *args: samples)
    monkeypatch.setattr(heldout, "make_lm", lambda spec, device: _Lm())
    argv = ["heldout-nll", "--data-dir", "d", "--model", "nonperso", "--model", "dep:k=1"]
    cli.main([*argv, "--results", str(tmp_path), "--name", "nll"])

    record = json.loads((tmp_path / "nll.json").read_text())
    assert record["command"].startswith("dep-eval heldout-nll --data-dir d --model nonperso")
    assert [s["model"] for s in record["summary"]] == ["nonperso", "dep:k=1"]
    table = (tmp_path / "nll.md").read_text()
    assert "| `dep:k=1` | 1.0000 | 2.72 | +0.0000 | 0.0000 | 0/2 |" in table
    assert table in capsys.readouterr().out


class _Lm:
    def pool_for(self, sample: str) -> None:
        return None


def test_a_malformed_model_spec_is_refused_naming_the_item() -> None:
    assert heldout.parse_model_spec("dep:with_text=false,k=1") == (
        "dep",
        {"with_text": "false", "k": "1"},
    )
    with pytest.raises(SystemExit, match="'with_text' is not key=value"):
        heldout.run_heldout(argparse.Namespace(data_dir="x", model=["nonperso", "dep:with_text"]))
    with pytest.raises(ValueError, match="needs the HF engine"):
        heldout.parse_model_spec("dep:backend=vllm")

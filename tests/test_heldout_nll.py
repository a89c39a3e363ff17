"""benchmarks/heldout_nll.py scores exactly the target tokens (+ EOS), no more, no less."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "heldout_nll.py"


def _load_benchmark():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("heldout_nll", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_nll_matches_the_models_own_loss(beauty_dir: Path) -> None:
    from dep_eval.data.loaders import load_split, resolve_source

    heldout = _load_benchmark()
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


def test_a_malformed_model_spec_is_refused_naming_the_item(capsys) -> None:  # noqa: ANN001
    heldout = _load_benchmark()
    assert heldout.parse_model_spec("dep:with_text=false,k=1") == (
        "dep",
        {"with_text": "false", "k": "1"},
    )
    with pytest.raises(SystemExit):
        heldout.main(["--data-dir", "x", "--model", "nonperso", "--model", "dep:with_text"])
    assert "'dep:with_text': 'with_text' is not key=value" in capsys.readouterr().err

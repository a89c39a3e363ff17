"""PPlug: the persona attention, training through the shared trainer, and inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dep_eval.baselines.pplug import PPlug, PPlugConfig, PPlugModule, PPlugModuleConfig

from dep_eval.train.trainer import TrainConfig, Trainer


def test_persona_is_the_similarity_weighted_sum_of_projected_history() -> None:
    torch.manual_seed(0)
    module = PPlugModule(PPlugModuleConfig(encoder_dim=3, llm_hidden_size=4))
    history = torch.nn.functional.normalize(torch.randn(2, 3, 3), dim=-1)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    query = torch.nn.functional.normalize(torch.randn(2, 3), dim=-1)
    instruction, persona = module(history, mask, query)

    scores = history[0, :2] @ query[0]
    weights = torch.exp(scores) / torch.exp(scores).sum()
    expected = (weights[:, None] * module.projector(history[0, :2])).sum(0)
    torch.testing.assert_close(persona[0], expected)
    assert torch.equal(persona[1], torch.zeros(4))  # empty profile: no persona
    assert torch.equal(instruction[0], module.instruction) and instruction.shape == (2, 4)


@pytest.mark.slow
def test_pplug_trains_with_the_shared_trainer_and_runs(beauty_dir: Path, tmp_path: Path) -> None:
    from dep_eval.data.loaders import load_pool, load_split, local_source

    config = TrainConfig(
        output=str(tmp_path / "run"),
        method="pplug",
        data_dir=str(beauty_dir),
        categories=("All_Beauty",),
        epochs=1,
        lr=1e-3,
        grad_accum=2,
        max_rows=4,
        max_target_tokens=8,
        val_rows=2,
        val_max_new_tokens=4,
        device="cpu",
    )
    trainer = Trainer(config)
    before = trainer.module.instruction.detach().clone()
    best = trainer.run()
    meta = json.loads((best / "config.json").read_text())
    assert meta["format"] == "dep-eval/pplug-module"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] == r["lm"] for r in log)

    method = PPlug(PPlugConfig(checkpoint=str(best)), trainer.llm)
    assert not torch.equal(method.module.instruction, before)  # it learned
    source = local_source(beauty_dir)
    pool = load_pool(source, "All_Beauty")
    method.setup(pool)
    sample = load_split(source, "All_Beauty", "test")[0]
    prompt = method.build_prompt(sample, pool)
    assert prompt.soft_vectors.shape == (2, trainer.llm.hidden_size)
    assert prompt.messages[-1]["content"].startswith("[PPLUG_INSTRUCTION][PPLUG_PERSONA]")
    torch.testing.assert_close(prompt.soft_vectors[0], method.module.instruction)


@pytest.mark.bad_input("pplug-given-dep-checkpoint")
def test_a_dep_checkpoint_is_not_a_pplug_checkpoint(llm, tmp_path: Path) -> None:
    from dep_eval.checkpoint import CheckpointError, save_checkpoint
    from dep_eval.dep.config import DEPConfig
    from dep_eval.dep.module import DEPModule

    save_checkpoint(DEPModule(DEPConfig()), tmp_path / "dep")
    with pytest.raises(CheckpointError, match="expected 'dep-eval/pplug-module'"):
        PPlug(PPlugConfig(checkpoint=str(tmp_path / "dep")), llm)


def test_without_a_checkpoint_pplug_uses_the_shipped_one(llm) -> None:
    method = PPlug(PPlugConfig(), llm)
    assert method.module.config.llm_hidden_size == llm.hidden_size
    assert method.module.config.encoder_name.endswith("all-MiniLM-L6-v2")


def test_another_llm_without_a_checkpoint_is_told_how_to_train_one() -> None:
    from types import SimpleNamespace

    from dep_eval.baselines.pplug.method import SHIPPED_CHECKPOINT

    from dep_eval.checkpoint import load_for_run

    qwen = SimpleNamespace(name="Qwen/Qwen2.5-7B-Instruct", hidden_size=3584, device="cpu")
    with pytest.raises(ValueError, match="dep-eval train --method pplug"):
        load_for_run(PPlugModule, None, method="pplug", shipped=SHIPPED_CHECKPOINT, llm=qwen)

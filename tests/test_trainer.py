"""The trainer's code path on the CPU: losses, checkpoints, logs, selection, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dep_eval.engine import Prompt
from dep_eval.train.common import select_rows
from dep_eval.train.trainer import TrainConfig, Trainer


def tiny_config(data_dir: Path, output: Path, **overrides: object) -> TrainConfig:
    values = dict(
        output=str(output),
        data_dir=str(data_dir),
        categories=("All_Beauty",),
        epochs=2,
        lr=1e-3,
        micro_batch_size=1,
        grad_accum=2,
        max_rows=4,
        max_target_tokens=8,
        val_rows=2,
        val_max_new_tokens=4,
        device="cpu",
        seed=3,
    )
    values["method_options"] = {"k": 2, "with_text": False}
    values.update(overrides)
    return TrainConfig(**values)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_training_writes_checkpoints_logs_and_best(beauty_dir: Path, tmp_path: Path) -> None:
    best = Trainer(tiny_config(beauty_dir, tmp_path / "run")).run()
    run = tmp_path / "run"
    assert best == run / "best"
    for folder in ("epoch-1", "epoch-2", "best"):
        assert (run / folder / "config.json").is_file()
        assert (run / folder / "model.safetensors").stat().st_size < 20_000_000  # no LLM copy
    meta = json.loads((run / "best" / "config.json").read_text())
    # the checkpoint records the prompt it was trained with, which inference then defaults to
    assert meta["config"]["trained_prompt"] == {
        "k": 2,
        "with_text": False,
        "with_items": True,
        "align_slots": True,
        "system": 1,
    }
    assert meta["extra"]["max_target_tokens"] == 8 and meta["format_version"] == 2
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # 4 rows / (2 x 2) per epoch, 2 epochs
    for record in log:
        assert {"lm", "reconstruction", "kl", "loss", "lr"} <= set(record)
        assert record["loss"] == pytest.approx(
            record["lm"] + 100 * (record["reconstruction"] + 1e-3 * record["kl"]), rel=1e-4
        )
    selection = json.loads((run / "selection.json").read_text())
    assert selection["best_epoch"] in (1, 2)
    best_weights = weights(run / "best")
    chosen = weights(run / f"epoch-{selection['best_epoch']}")
    assert all(torch.equal(best_weights[name], chosen[name]) for name in chosen)
    first, second = weights(run / "epoch-1"), weights(run / "epoch-2")
    assert any(not torch.equal(first[name], second[name]) for name in first)  # it learned


@pytest.mark.slow
def test_resume_continues_an_interrupted_run_exactly(
    beauty_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Trainer(tiny_config(beauty_dir, tmp_path / "straight", val_rows=1)).run()

    original_save = Trainer._save_epoch

    def save_then_crash(self: Trainer, epoch: int) -> None:
        original_save(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(Trainer, "_save_epoch", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(beauty_dir, tmp_path / "resumed", val_rows=1)).run()
    assert not (tmp_path / "resumed" / "epoch-2").exists()
    monkeypatch.setattr(Trainer, "_save_epoch", original_save)
    Trainer(tiny_config(beauty_dir, tmp_path / "resumed", val_rows=1, resume=True)).run()

    straight, resumed = (
        weights(tmp_path / "straight" / "epoch-2"),
        weights(tmp_path / "resumed" / "epoch-2"),
    )
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)
    log_a = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert len(log_a) == len(log_b)


def test_one_row_per_user_keeps_the_longest_profile(beauty_dir: Path) -> None:
    from dep_eval.data.loaders import load_split, local_source

    rows = load_split(local_source(beauty_dir), "All_Beauty", "train")
    chosen = select_rows(rows, all_rows=False)
    assert len(chosen) == len({r.user_id for r in rows})
    longest = {}
    for row in rows:
        longest[row.user_id] = max(longest.get(row.user_id, 0), len(row.profile))
    assert all(len(row.profile) == longest[row.user_id] for row in chosen)
    assert select_rows(rows, all_rows=True) == rows


def test_target_only_lm_loss_equals_the_models_own_loss(beauty_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(beauty_dir, tmp_path / "run"))
    llm = trainer.llm
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, 10], [-100, -100, 13, 14, -100, -100]])
    embeds = llm.tokens.embed(ids, [None, None])
    expected = llm.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(llm.lm_loss(embeds, mask, labels), expected)


def test_a_padded_training_batch_gives_each_rows_own_loss(beauty_dir: Path, tmp_path: Path) -> None:
    # the trainer's forward pads on the left like generation: padding must change nothing
    llm = Trainer(tiny_config(beauty_dir, tmp_path / "run")).llm
    prompts = [
        Prompt([{"role": "user", "content": "Review a lipstick."}]),
        Prompt([{"role": "user", "content": "Review a very long list of shampoos and soaps."}]),
    ]
    targets = [[5, 6, 7, 8], [9, 10]]
    alone = [llm.target_loss([p], [t]) for p, t in zip(prompts, targets, strict=True)]
    weighted = (alone[0] * 4 + alone[1] * 2) / 6
    torch.testing.assert_close(llm.target_loss(prompts, targets), weighted, atol=1e-4, rtol=1e-4)


def test_an_unknown_method_cannot_be_trained(beauty_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trainable methods: \\['dep', 'pplug'\\]"):
        Trainer(tiny_config(beauty_dir, tmp_path / "run", method="rag"))


def test_an_option_of_another_method_is_refused_before_training(tmp_path: Path) -> None:
    from dep_eval.cli import main

    with pytest.raises(SystemExit, match="--method pplug has no option\\(s\\) --k, --text"):
        main(
            [
                "train",
                "--output",
                str(tmp_path / "run"),
                "--method",
                "pplug",
                "--k",
                "3",
                "--no-text",
            ]
        )
    assert not (tmp_path / "run").exists()  # nothing started

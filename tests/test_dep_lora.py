"""DEP + LoRA: ``dep-eval train --method dep --lora-r R`` trains a LoRA of the LLM with DEP's
SAE and aligners; the checkpoint carries it in ``adapter/`` and ``checkpoint=`` merges it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dep_eval.checkpoint import ADAPTER_DIR, CheckpointError
from dep_eval.engine import EMBEDDED_LLM, GenerationSettings, Prompt
from dep_eval.engine.hf import HFEngine
from dep_eval.lm_eval_models import DEPLM
from dep_eval.train.trainer import TrainConfig, Trainer, _load_trainer_state

SETTINGS = GenerationSettings(max_new_tokens=6)
LAYER = "model.layers.0.self_attn.q_proj"


def lora_config(data_dir: Path, output: Path, lora_r: int = 4, **overrides: object) -> TrainConfig:
    """One optimizer step on one row with short targets: the code path, in seconds. The
    learning rate is high so that one step moves the LoRA visibly."""
    values: dict[str, object] = dict(
        output=str(output),
        data_dir=str(data_dir),
        categories=("All_Beauty",),
        epochs=1,
        lr=2e-2,
        micro_batch_size=1,
        grad_accum=1,
        max_rows=1,
        max_target_tokens=4,
        val_rows=1,
        val_max_new_tokens=2,
        device="cpu",
        seed=3,
        method_options={"k": 2, "with_text": False, "lora_r": lora_r},
    )
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def lora_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def lora_delta(folder: Path, module: str) -> torch.Tensor:
    """B @ A * alpha / r of one module, from the adapter's own files."""
    config = json.loads((folder / "adapter_config.json").read_text())
    state = lora_tensors(folder)
    a = next(v for k, v in state.items() if module in k and "lora_A" in k)
    b = next(v for k, v in state.items() if module in k and "lora_B" in k)
    return b @ a * config["lora_alpha"] / config["r"]


def has_lora_layers(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_modules())


@pytest.fixture(scope="module")
def trained(beauty_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real DEP + LoRA run, and the weights it started from."""
    run = tmp_path_factory.mktemp("dep-lora") / "run"
    trainer = Trainer(lora_config(beauty_dir, run))
    module_init = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    assert trainer.lora is not None
    lora_init = {
        name: p.detach().clone() for name, p in trainer.lora.named_parameters() if p.requires_grad
    }
    n_module = len(list(trainer.module.parameters()))
    best = trainer.run()
    return {
        "run": run,
        "best": best,
        "module_init": module_init,
        "lora_init": lora_init,
        "n_module": n_module,
    }


def without_adapter(best: Path, folder: Path) -> Path:
    """The same DEP weights as a checkpoint without the LoRA (as a lora_r=0 run writes it)."""
    folder.mkdir()
    shutil.copy(best / "model.safetensors", folder)
    meta = json.loads((best / "config.json").read_text())
    meta.pop("adapter")
    meta["format_version"] = 2
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_the_checkpoint_holds_dep_and_a_peft_adapter_both_trained(trained: dict) -> None:
    best = trained["best"]
    adapter = best / ADAPTER_DIR
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not list(adapter.glob("*.bin"))  # safetensors only
    meta = json.loads((best / "config.json").read_text())
    assert meta["format_version"] == 3  # an older dep-eval refuses it, not drops the LoRA
    assert meta["adapter"] == {
        "folder": "adapter",
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "n_parameters": 30 * 4 * ((576 + 576) + (576 + 192)),  # q_proj 576->576, v_proj ->192
    }
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == EMBEDDED_LLM  # what inference checks
    assert config["lora_dropout"] == 0.0
    size = sum(f.stat().st_size for f in best.rglob("*") if f.is_file())
    assert size < 20_000_000  # still megabytes: no copy of the LLM

    # LoRA's B starts at zero; one step moved every B and the DEP module
    saved = lora_tensors(adapter)
    b_init = {k: v for k, v in trained["lora_init"].items() if "lora_B" in k}
    assert b_init and all(torch.count_nonzero(v) == 0 for v in b_init.values())
    b_saved = [v for k, v in saved.items() if "lora_B" in k]
    assert len(b_saved) == len(b_init) and all(torch.count_nonzero(v) > 0 for v in b_saved)
    module = load_file(str(best / "model.safetensors"))
    assert any(not torch.equal(module[k], v) for k, v in trained["module_init"].items())

    # the trainer state (for resume) has the optimizer moments of the module and the LoRA
    state = _load_trainer_state(trained["run"] / "trainer-state-1.safetensors")
    assert len(state["optimizer"]["state"]) == trained["n_module"] + len(b_init) * 2


@pytest.mark.slow
def test_checkpoint_merges_the_lora_into_the_llm_and_changes_the_output(
    trained: dict, llm: HFEngine, beauty_dir: Path, tmp_path: Path
) -> None:
    from dep_eval.data.loaders import load_split, local_source

    best = trained["best"]
    plain_best = without_adapter(best, tmp_path / "no-lora")
    with_lora = DEPLM(checkpoint=str(best), device="cpu", batch_size=1, cache=False)
    without = DEPLM(checkpoint=str(plain_best), device="cpu", batch_size=1, cache=False)
    assert with_lora._engine_options["peft"] == str(best / ADAPTER_DIR)
    assert "peft" not in without._engine_options

    # folded in through the peft= path: base weight + B A alpha / r, a plain frozen model
    weight = with_lora.llm.model.get_submodule(LAYER).weight
    delta = lora_delta(best / ADAPTER_DIR, LAYER[len("model.") :])
    torch.testing.assert_close(weight, llm.model.get_submodule(LAYER).weight + delta)
    assert not has_lora_layers(with_lora.llm.model)
    assert not any(p.requires_grad for p in with_lora.llm.model.parameters())

    samples = load_split(local_source(beauty_dir), "All_Beauty", "test")[:1]
    prompts = [
        with_lora.method.build_prompt(sample, with_lora.pool_for(sample)) for sample in samples
    ]
    assert all(p.soft_vectors is not None for p in prompts)  # DEP's slots reach the LLM

    def logits(engine: HFEngine, prompt: Prompt) -> torch.Tensor:
        ids = engine.tokenize(prompt)
        input_ids, mask, positions = engine.left_pad([ids])
        embeds = engine.tokens.embed(input_ids, [prompt.soft_vectors])
        with torch.no_grad():
            hidden = engine.hidden_states(embeds, positions, mask)  # (1, T, H)
        return engine.last_logits(hidden[:, -1])

    # the same soft vectors (same DEP weights) through the LLM with and without the LoRA
    without.method  # noqa: B018 - registers the slot tokens on its engine
    assert not torch.allclose(
        logits(with_lora.llm, prompts[0]), logits(without.llm, prompts[0]), atol=1e-4
    )
    # and lm-eval's path generates through the merged LLM (a one-step module and LoRA write
    # nothing worth comparing: the logits above are the difference)
    texts = with_lora.run(samples, SETTINGS, progress=False)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_resume_restores_the_lora_and_its_optimizer_state(
    trained: dict, beauty_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    trainer = Trainer(lora_config(beauty_dir, run, epochs=2, resume=True))
    assert trainer._resume() == 1
    saved = lora_tensors(run / "epoch-1" / ADAPTER_DIR)
    assert trainer.lora is not None
    current = {name: p.detach() for name, p in trainer.lora.named_parameters() if p.requires_grad}
    assert len(saved) == len(current)
    for name, tensor in saved.items():
        # PEFT saves without the adapter name ("default") that the live module carries
        live = next(v for k, v in current.items() if k.replace(".default", "") == name)
        torch.testing.assert_close(live, tensor, rtol=0, atol=0)
    assert len(trainer.optimizer.state) == trained["n_module"] + len(saved)


@pytest.mark.bad_input("train-resume-lora-mismatch")
def test_resuming_a_lora_run_without_the_lora_is_refused(
    trained: dict, beauty_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    trainer = Trainer(lora_config(beauty_dir, run, lora_r=0, epochs=2, resume=True))
    with pytest.raises(ValueError, match="with a LoRA of the LLM, this run without.*lora-r"):
        trainer._resume()


def test_lora_r_0_trains_and_saves_no_adapter(beauty_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(lora_config(beauty_dir, tmp_path / "run", lora_r=0))
    assert trainer.lora is None and not has_lora_layers(trainer.llm.model)
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(optimized) == len(list(trainer.module.parameters()))
    trainer._save_epoch(1)
    folder = tmp_path / "run" / "epoch-1"
    assert not (folder / ADAPTER_DIR).exists()
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format_version"] == 2 and "adapter" not in meta


@pytest.mark.bad_input("dep-lora-with-peft")
def test_a_lora_checkpoint_with_peft_is_refused(trained: dict) -> None:
    best = trained["best"]
    with pytest.raises(ValueError, match="peft=.*carries its own LoRA.*drop peft="):
        DEPLM(checkpoint=str(best), peft=str(best / ADAPTER_DIR))


@pytest.mark.bad_input("dep-lora-adapter-missing")
def test_a_lora_checkpoint_without_its_adapter_folder_is_refused(
    trained: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(trained["best"], folder)
    shutil.rmtree(folder / ADAPTER_DIR)
    with pytest.raises(CheckpointError, match="records a LoRA of the LLM in .*missing"):
        DEPLM(checkpoint=str(folder))


def test_train_help_documents_lora_r(capsys: pytest.CaptureFixture[str]) -> None:
    from dep_eval.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lora-r LORA_R also train a LoRA of this rank on the LLM" in text


def test_the_shipped_dep_lora_checkpoint_is_named_by_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dep_eval.checkpoint import SHIPPED_DIR, checkpoint_for_run
    from dep_eval.dep.method import DEP, DEPArgs

    name = "dep-lora-smollm2-minilm"
    folder = checkpoint_for_run(name, "dep-smollm2-minilm", "SmolLM2-135M-Instruct")
    assert folder == str(SHIPPED_DIR / name)
    adapter = DEP.trained_adapter(DEPArgs(checkpoint=name), "SmolLM2-135M-Instruct")
    assert adapter == str(SHIPPED_DIR / name / ADAPTER_DIR)
    # a local folder of the same name is the user's, and wins
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    assert checkpoint_for_run(name, "dep-smollm2-minilm", "SmolLM2-135M-Instruct") == name


# -- a frozen base adapter (--base-adapter): DEP trained on an LLM with a LoRA folded in ------


@pytest.fixture(scope="module")
def base_adapter_run(beauty_dir: Path, llm: HFEngine, tmp_path_factory: pytest.TempPathFactory):
    from test_peft import make_lora

    root = tmp_path_factory.mktemp("dep-base-adapter")
    adapter = make_lora(llm.model, root / "task-lora", seed=5)
    trainer = Trainer(lora_config(beauty_dir, root / "run", lora_r=0, base_adapter=str(adapter)))
    return adapter, trainer, trainer.run()


def test_a_base_adapter_is_folded_in_frozen_and_carried_by_each_checkpoint(
    base_adapter_run: tuple, llm: HFEngine
) -> None:
    adapter, trainer, best = base_adapter_run
    assert trainer.lora is None and not has_lora_layers(trainer.llm.model)  # merged, not wrapped
    folded = trainer.llm.model.get_submodule(LAYER).weight
    plain = llm.model.get_submodule(LAYER).weight
    torch.testing.assert_close(folded - plain, lora_delta(adapter, LAYER), rtol=0, atol=1e-5)
    assert not any(p.requires_grad for p in trainer.llm.model.parameters())  # frozen
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(optimized) == len(list(trainer.module.parameters()))

    meta = json.loads((best / "config.json").read_text())
    assert meta["format_version"] == 3
    assert meta["adapter"] == {
        "folder": "adapter",
        "frozen": True,
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
    }
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (best / ADAPTER_DIR / name).read_bytes() == (adapter / name).read_bytes()


def test_a_base_adapter_checkpoint_folds_the_same_adapter_in_at_inference(
    base_adapter_run: tuple,
) -> None:
    _, trainer, best = base_adapter_run
    lm = DEPLM(checkpoint=str(best), device="cpu", batch_size=1, cache=False)
    torch.testing.assert_close(
        lm.llm.model.get_submodule(LAYER).weight,
        trainer.llm.model.get_submodule(LAYER).weight,
        rtol=0,
        atol=0,
    )


def test_resuming_a_base_adapter_run_keeps_its_adapter(
    base_adapter_run: tuple, beauty_dir: Path, tmp_path: Path
) -> None:
    adapter, trainer, _ = base_adapter_run
    run = tmp_path / "run"
    shutil.copytree(trainer.output, run)
    resumed = Trainer(
        lora_config(beauty_dir, run, lora_r=0, epochs=2, resume=True, base_adapter=str(adapter))
    )
    assert resumed._resume() == 1
    module = load_file(str(run / "epoch-1" / "model.safetensors"))
    for name, tensor in resumed.module.state_dict().items():
        torch.testing.assert_close(tensor, module[name], rtol=0, atol=0)


@pytest.fixture
def no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer fails the test if it loads the LLM."""
    import dep_eval.train.trainer as trainer_module

    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the LLM was loaded")

    monkeypatch.setattr(trainer_module, "load_trainable_engine", load)


@pytest.mark.bad_input("train-base-adapter-with-lora-r")
@pytest.mark.usefixtures("no_llm")
def test_a_base_adapter_with_lora_r_is_refused_before_the_llm_loads(
    beauty_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="--lora-r 4 with --base-adapter .*one LoRA of the LLM"):
        Trainer(lora_config(beauty_dir, tmp_path / "run", base_adapter=str(tmp_path)))


@pytest.mark.slow
def test_a_pplug_checkpoint_trained_on_a_base_adapter_folds_it_in(
    base_adapter_run: tuple, beauty_dir: Path, tmp_path: Path
) -> None:
    from dep_eval.baselines.pplug import PPlug

    from dep_eval.methods.lm_eval_model import lm_eval_model_for

    adapter, dep_trainer, _ = base_adapter_run
    trainer = Trainer(
        lora_config(
            beauty_dir,
            tmp_path / "run",
            method="pplug",
            method_options={},
            base_adapter=str(adapter),
        )
    )
    best = trainer.run()
    assert json.loads((best / "config.json").read_text())["adapter"]["frozen"] is True
    lm = lm_eval_model_for(PPlug)(checkpoint=str(best), device="cpu", batch_size=1, cache=False)
    torch.testing.assert_close(
        lm.llm.model.get_submodule(LAYER).weight,
        dep_trainer.llm.model.get_submodule(LAYER).weight,
        rtol=0,
        atol=0,
    )


@pytest.mark.bad_input("train-base-adapter-missing")
@pytest.mark.usefixtures("no_llm")
def test_a_missing_base_adapter_is_refused_before_the_llm_loads(
    beauty_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-lora"
    with pytest.raises(ValueError, match=f"--base-adapter={missing}: no adapter folder at"):
        Trainer(lora_config(beauty_dir, tmp_path / "run", lora_r=0, base_adapter=str(missing)))


@pytest.mark.bad_input("train-resume-base-adapter-mismatch")
def test_resuming_on_another_base_adapter_is_refused(
    base_adapter_run: tuple, beauty_dir: Path, llm: HFEngine, tmp_path: Path
) -> None:
    from test_peft import make_lora

    _, trainer, _ = base_adapter_run
    run = tmp_path / "run"
    shutil.copytree(trainer.output, run)
    other = make_lora(llm.model, tmp_path / "other-lora", seed=6)
    resumed = Trainer(
        lora_config(beauty_dir, run, lora_r=0, epochs=2, resume=True, base_adapter=str(other))
    )
    with pytest.raises(ValueError, match="was not trained on --base-adapter .*train_config.json"):
        resumed._resume()

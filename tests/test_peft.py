"""PEFT adapters: ``peft=`` on every HF-backend method, per-prompt adapters in mixed batches,
and the adapters dep-eval refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dep_eval.baselines.nonperso import NonPerso
from dep_eval.baselines.pplug import PPlug

from dep_eval.engine import GenerationSettings, Prompt, seed_for
from dep_eval.engine.adapters import AdapterError, per_row_adapters, quiet_peft
from dep_eval.engine.hf import HFEngine
from dep_eval.methods.lm_eval_model import lm_eval_model_for

SETTINGS = GenerationSettings(max_new_tokens=10)


def make_lora(model: torch.nn.Module, folder: Path, seed: int) -> Path:
    """A LoRA with random, non-zero A *and* B (PEFT's default B = 0 would change nothing),
    saved as PEFT saves any adapter; ``model`` is left as it was."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with quiet_peft():
        peft_model = get_peft_model(model, config)
    try:
        peft_model.save_pretrained(str(folder))
    finally:
        peft_model.unload()
    return folder


def has_lora_layers(model: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_modules())


@pytest.fixture(scope="module")
def loras(llm: HFEngine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("loras")
    first = make_lora(llm.model, root / "a", seed=1)
    second = make_lora(llm.model, root / "b", seed=2)
    assert not has_lora_layers(llm.model)
    return first, second


def chat(text: str) -> Prompt:
    return Prompt([{"role": "user", "content": text}])


PROMPTS = [chat(f"Write a short review of {x}.") for x in ("a lipstick", "nail files", "soap")]
SEEDS = [seed_for(1234, i) for i in range(len(PROMPTS))]


def with_adapters(adapters: list[Path | None]) -> list[Prompt]:
    return [
        Prompt(prompt.messages, adapter=str(adapter) if adapter else None)
        for prompt, adapter in zip(PROMPTS, adapters, strict=True)
    ]


@pytest.mark.slow
def test_mixed_adapter_batches_give_the_texts_of_one_row_batches(llm: HFEngine, loras) -> None:
    first, second = loras
    plain = [g.text for g in llm.generate(PROMPTS, SEEDS, SETTINGS, batch_size=3)]
    prompts = with_adapters([first, second, None])
    mixed = [g.text for g in llm.generate(prompts, SEEDS, SETTINGS, batch_size=3)]
    alone = [g.text for g in llm.generate(prompts, SEEDS, SETTINGS, batch_size=1)]
    assert mixed == alone
    assert mixed[0] != plain[0] and mixed[1] != plain[1]  # the adapters changed the text
    assert mixed[2] == plain[2]  # a row without an adapter is the plain LLM's
    assert not has_lora_layers(llm.model)  # unloaded after the batch
    again = [g.text for g in llm.generate(PROMPTS, SEEDS, SETTINGS, batch_size=3)]
    assert again == plain


@pytest.mark.slow
def test_per_row_adapters_route_each_row_through_its_own(llm: HFEngine, loras) -> None:
    first, second = loras
    ids, mask, positions = llm.left_pad([llm.tokenize(p) for p in PROMPTS[:2]])

    def last_hidden(adapters: list[Path | None]) -> torch.Tensor:
        with (
            torch.no_grad(),
            per_row_adapters(
                llm.model, [str(a) if a else None for a in adapters], llm.name
            ) as route,
            route(range(len(adapters))),
        ):
            out = llm.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions)
        return out.last_hidden_state[:, -1]

    both = last_hidden([first, second])
    torch.testing.assert_close(both[0], last_hidden([first, first])[0])
    torch.testing.assert_close(both[1], last_hidden([second, second])[1])
    assert not torch.allclose(both[0], last_hidden([None, None])[0])


def lora_delta(folder: Path, module: str) -> torch.Tensor:
    """B @ A * alpha / r of one module, read from the adapter's safetensors."""
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    state = load_file(str(folder / "adapter_model.safetensors"))
    a = next(v for k, v in state.items() if module in k and "lora_A" in k)
    b = next(v for k, v in state.items() if module in k and "lora_B" in k)
    return b @ a * config["lora_alpha"] / config["r"]


@pytest.mark.parametrize("method_class", [NonPerso, PPlug], ids=["nonperso", "pplug"])
def test_peft_argument_folds_the_adapter_into_the_llm(
    method_class, llm: HFEngine, loras, beauty_dir: Path
) -> None:
    from dep_eval.data.loaders import load_split, local_source

    first, _ = loras
    model_class = lm_eval_model_for(method_class)
    adapted = model_class(peft=str(first), device="cpu", batch_size=2)
    plain = model_class(device="cpu", batch_size=2)
    layer = "model.layers.0.self_attn.q_proj"
    weight = adapted.llm.model.get_submodule(layer).weight
    expected = llm.model.get_submodule(layer).weight + lora_delta(first, layer[len("model.") :])
    torch.testing.assert_close(weight, expected)
    assert not has_lora_layers(adapted.llm.model)  # merged: a plain frozen model
    assert not any(p.requires_grad for p in adapted.llm.model.parameters())

    samples = load_split(local_source(beauty_dir), "All_Beauty", "test")[:2]
    with_adapter = adapted.run(samples, SETTINGS, progress=False)
    without = plain.run(samples, SETTINGS, progress=False)
    assert with_adapter != without
    if method_class is PPlug:  # soft prompts still reach the adapted LLM
        prompt = adapted.method.build_prompt(samples[0], adapted.pool_for(samples[0]))
        assert prompt.soft_vectors is not None and prompt.soft_vectors.shape[0] == 2


@pytest.mark.bad_input("peft-missing-folder")
def test_a_missing_adapter_folder_is_refused_before_loading(tmp_path: Path) -> None:
    model_class = lm_eval_model_for(NonPerso)
    with pytest.raises(AdapterError, match="peft=.*no adapter folder at"):
        model_class(peft=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="has no adapter_config.json"):
        model_class(peft=str(tmp_path / "empty"))


@pytest.mark.bad_input("peft-pickle-only")
def test_an_adapter_saved_only_as_a_pickle_is_refused(tmp_path: Path, loras) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((loras[0] / "adapter_config.json").read_text())
    (folder / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(AdapterError, match="only adapter_model.bin, a pickle"):
        lm_eval_model_for(NonPerso)(peft=str(folder))


@pytest.mark.bad_input("peft-other-base-model")
def test_an_adapter_for_another_base_model_is_refused(tmp_path: Path, loras) -> None:
    import shutil

    folder = tmp_path / "qwen"
    shutil.copytree(loras[0], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-7B-Instruct"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="made for 'Qwen/Qwen2.5-7B-Instruct'.*pretrained="):
        lm_eval_model_for(NonPerso)(peft=str(folder))


@pytest.mark.bad_input("peft-shape-mismatch")
def test_an_adapter_whose_shapes_do_not_fit_is_refused(tmp_path: Path) -> None:
    """Same name as the embedded LLM, but made on a narrower model: loading must say so."""
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=30,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
    )
    narrow = LlamaForCausalLM(small)
    narrow.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    folder = make_lora(narrow, tmp_path / "narrow", seed=3)
    lm = lm_eval_model_for(NonPerso)(peft=str(folder), device="cpu")  # the name fits
    with pytest.raises(AdapterError, match="does not fit the loaded LLM.*size mismatch"):
        lm.llm  # noqa: B018 - the engine loads (and merges) on first use


@pytest.mark.slow
def test_vllm_gets_a_cached_folder_with_the_adapter_folded_in(
    llm: HFEngine, loras, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backend=vllm with peft=: vLLM loads a folder, so the merged LLM is written once to
    the cache (the vLLM run itself: tests/test_vllm_backend.py)."""
    from safetensors.torch import load_file

    from dep_eval.engine.adapters import merged_model_folder

    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path))
    first, second = loras
    path = llm.model.name_or_path
    folder = Path(merged_model_folder(path, str(first), "SmolLM2-135M-Instruct"))
    assert folder.is_relative_to(tmp_path / "models")
    weights = load_file(str(folder / "model.safetensors"))
    layer = "model.layers.0.self_attn.q_proj"
    expected = llm.model.get_submodule(layer).weight + lora_delta(first, layer[len("model.") :])
    torch.testing.assert_close(weights[f"{layer}.weight"], expected)
    assert not any("lora_" in name for name in weights)
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("*.bin"))

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert merged_model_folder(path, str(first), "SmolLM2-135M-Instruct") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # built once
    other = merged_model_folder(path, str(second), "SmolLM2-135M-Instruct")
    assert other != str(folder)  # keyed by the adapter's content
    assert not list((tmp_path / "models").glob(".*"))  # no staging folder left behind


def test_a_prompts_own_adapter_is_part_of_its_generation_key() -> None:
    from dep_eval.call_cache import final_key

    args = ("SmolLM2-135M-Instruct", "{}", SETTINGS, 10, 7, "rendered", None)
    assert final_key(*args) == final_key(*args, None)  # keys without adapters unchanged
    assert final_key(*args, "/cache/oppu/u1-abc") != final_key(*args, "/cache/oppu/u1-def")
    assert final_key(*args, "/cache/oppu/u1-abc") != final_key(*args)


def _copy_with_config(source: Path, folder: Path, **changes: object) -> Path:
    import shutil

    shutil.copytree(source, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.bad_input("peft-keys-mismatch")
def test_an_adapter_whose_weights_are_for_other_modules_is_refused(tmp_path: Path, loras) -> None:
    """target_modules that exist but are not the ones its weights are for: PEFT would leave
    those LoRAs at B = 0 and the plain LLM would be scored under the adapter's name."""
    folder = _copy_with_config(loras[0], tmp_path / "other", target_modules=["k_proj", "o_proj"])
    lm = lm_eval_model_for(NonPerso)(peft=str(folder), device="cpu")
    with pytest.raises(AdapterError) as caught:
        lm.llm  # noqa: B018 - the engine loads (and merges) on first use
    message = str(caught.value)
    assert message.startswith(f"peft={folder}: {folder / 'adapter_model.safetensors'} does not")
    assert "(target_modules ['k_proj', 'o_proj']): 120 adapter tensors missing" in message
    assert "120 tensors for modules it does not adapt (e.g. base_model.model" in message


@pytest.mark.slow
@pytest.mark.bad_input("peft-non-finite")
def test_non_finite_adapter_weights_or_logits_stop_the_run(
    tmp_path: Path, llm: HFEngine, loras
) -> None:
    from safetensors.torch import load_file, save_file

    # lora_alpha NaN: refused from the config, before the LLM loads
    nan_alpha = _copy_with_config(loras[0], tmp_path / "alpha", lora_alpha=float("nan"))
    with pytest.raises(AdapterError, match=r"adapter_config.json has lora_alpha = nan, not a fin"):
        lm_eval_model_for(NonPerso)(peft=str(nan_alpha), device="cpu")

    # a NaN in the weights: the merge says which module it broke
    nan_weight = _copy_with_config(loras[0], tmp_path / "weight")
    state = load_file(str(nan_weight / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"
    state[key][0, 0] = float("nan")
    save_file(state, str(nan_weight / "adapter_model.safetensors"))
    lm = lm_eval_model_for(NonPerso)(peft=str(nan_weight), device="cpu")
    with pytest.raises(AdapterError, match="non-finite weights .* in model.layers.3.self_attn.v_p"):
        lm.llm  # noqa: B018

    # the same adapter routed per prompt (not merged): the first step's logits stop the run
    prompts = with_adapters([None, nan_weight, None])
    with pytest.raises(FloatingPointError) as caught:
        llm.generate(prompts, SEEDS, SETTINGS, batch_size=3)
    message = str(caught.value)
    assert message.startswith("generation step 0: the LLM's logits are NaN or infinite for 1 ")
    assert f"(adapters: {nan_weight})" in message
    assert not has_lora_layers(llm.model)  # the adapters came out again


@pytest.mark.bad_input("peft-prompt-learning")
def test_a_prompt_learning_adapter_is_refused_before_the_llm_loads(
    tmp_path: Path, loras, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PREFIX_TUNING over a LoRA's config raised PEFT's ``TypeError: empty(): argument
    'size'``; a real prefix-tuning adapter, and one of a type PEFT does not know, likewise."""
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path / "cache"))  # LLM loads would fill it
    relabelled = _copy_with_config(loras[0], tmp_path / "prefix", peft_type="PREFIX_TUNING")
    with pytest.raises(AdapterError, match="a PREFIX_TUNING adapter adds virtual tokens"):
        lm_eval_model_for(NonPerso)(peft=str(relabelled))
    prompt = _copy_with_config(
        loras[0], tmp_path / "prompt", peft_type="PROMPT_TUNING", num_virtual_tokens=4
    )
    with pytest.raises(AdapterError, match="a PROMPT_TUNING adapter adds virtual tokens"):
        lm_eval_model_for(NonPerso)(peft=str(prompt))
    unknown = _copy_with_config(loras[0], tmp_path / "unknown", peft_type="LORAX")
    with pytest.raises(AdapterError, match="peft_type 'LORAX', which this PEFT does not know"):
        lm_eval_model_for(NonPerso)(peft=str(unknown))
    assert not (tmp_path / "cache" / "models").exists()

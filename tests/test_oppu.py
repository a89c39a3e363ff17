"""OPPU: what a user's LoRA learns from, the adapter cache and resume, and its bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from dep_eval.baselines.oppu import Oppu, OppuConfig
from dep_eval.baselines.oppu import method as oppu_method

from dep_eval import costs
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample
from dep_eval.engine import GenerationSettings
from dep_eval.engine.hf import HFEngine
from dep_eval.methods.lm_eval_model import PersonalizedLM, lm_eval_model_for

CATEGORY = "Toy"
SOURCE = "local:/synthetic"
SETTINGS = GenerationSettings(max_new_tokens=6)
# tiny but real training: one optimizer step on a few short rows
FAST = {"max_steps": 1, "max_target_tokens": 8, "lr": 1e-2}

ITEMS = {a: Item(a, f"Item {a}", f"A small {a} bottle.") for a in "ABCDEFGH"}


def review(asin: str, text: str, timestamp: int) -> Review:
    return Review(asin=asin, rating=4.0, title=f"about {asin}", text=text, timestamp=timestamp)


def sample(user: str, profile: list[Review], target: Review, split: str, row: int) -> Sample:
    return Sample(
        user_id=user,
        category=CATEGORY,
        profile=tuple(profile),
        target=target,
        item=ITEMS[target.asin],
        source=SOURCE,
        split=split,
        row=row,
    )


def toy_rows() -> list[Sample]:
    """Two users; each one's test profile holds their train row's target (as DPL-main's do)."""
    rows = []
    for n, user in enumerate(("u1", "u2")):
        past = [review(a, f"{user} liked {a} a lot", i) for i, a in enumerate("ABC")]
        train_target = review("D", f"{user} TRAIN TARGET on D", 10)
        test_target = review("E", f"{user} test target on E", 20)
        rows.append(sample(user, past, train_target, "train", n + 1))
        rows.append(sample(user, [*past, train_target], test_target, "test", n + 1))
    return rows


def toy_pool(rows: list[Sample]) -> DataPool:
    return DataPool.from_samples(CATEGORY, rows, ITEMS)


def runner(llm: HFEngine, pool: DataPool, batch_size: int = 2, **config) -> PersonalizedLM:
    lm = object.__new__(lm_eval_model_for(Oppu))
    lm.llm = llm  # type: ignore[assignment]
    lm.method = Oppu(OppuConfig(**config), llm)  # type: ignore[assignment]
    lm.batch_size = batch_size
    lm._pools = {(SOURCE, CATEGORY): pool}
    lm.call_cache = None
    lm.cache_generations = False  # these tests are about the adapters, not the texts' cache
    lm.auto_batch = False
    return lm


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "oppu"
    monkeypatch.setattr(oppu_method, "adapter_cache_dir", lambda: folder)
    return folder


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list]]:
    """Every (adapter folder name, training rows) that the method trains, in order."""
    calls: list[tuple[str, list]] = []
    real = oppu_method.train_adapter

    def spy(llm, examples, config, seed, folder):
        calls.append((folder.name, list(examples)))
        return real(llm, examples, config, seed, folder)

    monkeypatch.setattr(oppu_method, "train_adapter", spy)
    return calls


def has_lora_layers(llm: HFEngine) -> bool:
    return any("lora_" in name for name, _ in llm.model.named_modules())


def test_no_target_text_reaches_a_users_training_rows(llm: HFEngine, beauty_dir: Path) -> None:
    from dep_eval.data.loaders import load_pool, load_split, local_source

    source = local_source(beauty_dir)
    pool = load_pool(source, "All_Beauty")
    targets = {
        " ".join(s.target.text.split())
        for split in ("train", "val", "test")
        for s in load_split(source, "All_Beauty", split)
    }
    samples = load_split(source, "All_Beauty", "test")[:12]
    # the rule matters here: these test profiles hold other rows' targets
    assert any(" ".join(r.text.split()) in targets for s in samples for r in s.profile)
    for with_retrieval in (False, True):
        method = Oppu(OppuConfig(with_retrieval=with_retrieval, k=3), llm)
        for s in samples:
            examples = method.examples(s, pool)
            assert examples, f"user {s.user_id} has nothing to train on"
            for example in examples:
                learned = llm.tokenizer.decode(example.target_ids[:-1])
                assert " ".join(learned.split()) not in targets
                rendered = " ".join(llm.render(example.prompt).split())
                assert not any(text[:300] in rendered for text in targets)


@pytest.mark.slow
def test_training_rows_are_each_review_after_the_earlier_ones(llm: HFEngine, cache: Path) -> None:
    rows = toy_rows()
    pool = toy_pool(rows)
    test_row = rows[1]
    method = Oppu(OppuConfig(with_retrieval=True, k=5), llm)
    examples = method.examples(test_row, pool)
    assert len(examples) == 3  # A, B, C; the train target on D is left out
    for index, example in enumerate(examples):
        text = example.prompt.messages[-1]["content"]
        shown = [a for a in "ABCD" if f"u1 liked {a} a lot" in text]
        assert shown == list("ABC"[:index])  # only reviews written before this one
        assert "TRAIN TARGET" not in text
    # the target's prompt retrieves from the whole profile, as RAG's does
    assert "u1 liked A a lot" in method.build_prompt(test_row, pool).messages[-1]["content"]


@pytest.mark.slow
def test_each_user_is_trained_once_and_a_rerun_trains_none(
    llm: HFEngine, cache: Path, trained: list
) -> None:
    rows = toy_rows()
    pool = toy_pool(rows)
    tests = [r for r in rows if r.split == "test"]
    before = costs.setup_seconds()
    first = runner(llm, pool, batch_size=2, **FAST).run(tests, SETTINGS, progress=False)
    assert [name.split("-")[0] for name, _ in trained] == ["u1", "u2"]
    assert all(len(examples) == 3 for _, examples in trained)
    assert costs.setup_seconds() > before  # training time is one-off cost
    folders = sorted(p.name for p in cache.iterdir())
    assert folders == sorted(name for name, _ in trained)  # no temporary folder left
    for name in folders:
        assert {"adapter_config.json", "adapter_model.safetensors", "oppu.json"} <= {
            p.name for p in (cache / name).iterdir()
        }
    assert not has_lora_layers(llm)

    trained.clear()
    # a damaged cached LoRA (not something an interrupted write leaves) is trained again
    damaged = cache / folders[0] / "adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    runner(llm, pool, **FAST).run(tests, SETTINGS, progress=False)
    assert [name for name, _ in trained] == [folders[0]]
    trained.clear()
    # one user per batch now: the mixed batch above gave the same texts
    again = runner(llm, pool, batch_size=1, **FAST).run(tests, SETTINGS, progress=False)
    assert trained == [] and again == first
    # another setting is another adapter
    runner(llm, pool, **{**FAST, "r": 4}).run(tests[:1], SETTINGS, progress=False)
    assert len(trained) == 1 and len(list(cache.iterdir())) == 3


@pytest.mark.slow
def test_a_crash_while_saving_leaves_no_adapter_and_the_rerun_trains_the_rest(
    llm: HFEngine, cache: Path, trained: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel

    rows = toy_rows()
    pool = toy_pool(rows)
    tests = [r for r in rows if r.split == "test"]
    real_save = PeftModel.save_pretrained
    saves = []

    def crash_on_second(self, folder, **kwargs):
        saves.append(folder)
        real_save(self, folder, **kwargs)
        if len(saves) == 2:  # the second user's files are written, then the process "dies"
            raise KeyboardInterrupt

    monkeypatch.setattr(PeftModel, "save_pretrained", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        runner(llm, pool, **FAST).run(tests, SETTINGS, progress=False)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["u1"]  # nothing half-written
    assert not has_lora_layers(llm)  # the LLM is the plain model again
    monkeypatch.setattr(PeftModel, "save_pretrained", real_save)

    trained.clear()
    runner(llm, pool, **FAST).run(tests, SETTINGS, progress=False)
    assert [name.split("-")[0] for name, _ in trained] == ["u2"]
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["u1", "u2"]


@pytest.mark.slow
@pytest.mark.bad_input("oppu-one-review-profile")
def test_a_user_with_a_one_review_profile_trains_on_it(
    llm: HFEngine, cache: Path, trained: list, caplog: pytest.LogCaptureFixture
) -> None:
    only = review("A", "my one review of A", 1)
    row = sample("solo", [only], review("B", "solo target on B", 2), "test", 1)
    with caplog.at_level(logging.WARNING):
        (text,) = runner(llm, toy_pool([row]), **FAST).run([row], SETTINGS, progress=False)
    assert len(trained) == 1 and len(trained[0][1]) == 1
    assert "user solo has one profile review to train on" in caplog.text
    assert isinstance(text, str)


@pytest.mark.bad_input("oppu-no-training-review")
def test_a_user_whose_every_review_is_a_target_gets_no_adapter(
    llm: HFEngine, cache: Path, trained: list, caplog: pytest.LogCaptureFixture
) -> None:
    rows = toy_rows()
    # u3's only profile review is u1's train target text: the pool leaves it out
    copied = review("F", rows[0].target.text, 5)
    lonely = sample("u3", [copied], review("G", "u3 test target", 6), "test", 3)
    pool = toy_pool([*rows, lonely])
    lm = runner(llm, pool, **FAST)
    assert lm.method.build_prompt(lonely, pool).adapter is None
    with caplog.at_level(logging.WARNING):
        lm.run([lonely], SETTINGS, progress=False)
    assert trained == []
    assert "1 user(s) had no profile review to train on" in caplog.text


@pytest.mark.bad_input("oppu-no-adapter-engine")
def test_oppu_needs_an_engine_with_per_prompt_adapters() -> None:
    engine = SimpleNamespace(name="SmolLM2-135M-Instruct", per_prompt_adapters=False)
    with pytest.raises(ValueError, match="does not serve per-prompt adapters; use backend=hf"):
        Oppu(OppuConfig(), engine)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_steps=0 must be at least 1"):
        Oppu.check_before_loading(OppuConfig(max_steps=0), "SmolLM2-135M-Instruct")


def test_a_base_adapter_is_folded_in_and_keys_the_cache(
    llm: HFEngine, tmp_path: Path, cache: Path
) -> None:
    from test_peft import make_lora

    base = make_lora(llm.model, tmp_path / "task-lora", seed=5)
    fresh = HFEngine(device="cpu")
    layer = "model.layers.3.self_attn.v_proj"
    rows = toy_rows()
    pool = toy_pool(rows)
    plain = Oppu(OppuConfig(), llm)
    with_base = Oppu(OppuConfig(base_adapter=str(base)), fresh)
    assert not fresh.model.get_submodule(layer).weight.equal(llm.model.get_submodule(layer).weight)
    examples = plain.examples(rows[1], pool)
    assert plain.adapter_key(rows[1], examples) != with_base.adapter_key(rows[1], examples)


# -- the shared task LoRA: dep-eval train --method oppu-base ----------------------------------


@pytest.mark.slow
def test_the_task_lora_trains_on_train_rows_and_oppu_folds_it_in(
    llm: HFEngine, beauty_dir: Path, tmp_path: Path
) -> None:
    import json

    from dep_eval.baselines.oppu.training import INFO_FILE

    from dep_eval import cli
    from dep_eval.data.loaders import load_split, resolve_source

    folder = tmp_path / "oppu-base"
    cli.main(
        [
            "train", "--method", "oppu-base", "--data-dir", str(beauty_dir),
            "--category", "All_Beauty", "--output", str(folder),
            "--max-rows", "4", "--epochs", "1", "--max-target-tokens", "8",
        ]
    )  # fmt: skip
    info = json.loads((folder / INFO_FILE).read_text())
    assert (folder / "adapter_model.safetensors").is_file()
    assert info["examples"] == 4 and info["steps"] == 1  # 4 rows, one batch of 16, 1 epoch
    # not given, so the reference task LoRA's; given, so the user's
    assert info["config"]["lr"] == 1e-4 and info["config"]["max_steps"] is None
    assert info["config"]["epochs"] == 1 and info["config"]["max_target_tokens"] == 8
    assert info["categories"] == ["All_Beauty"]
    source = resolve_source({"data_dir": str(beauty_dir)})
    assert len(load_split(source, "All_Beauty", "train")) > 4  # a subset was taken

    Oppu.check_before_loading(OppuConfig(base_adapter=str(folder)), llm.name)
    fresh = HFEngine(device="cpu")
    layer = "model.layers.0.self_attn.q_proj"
    before = fresh.model.get_submodule(layer).weight.clone()
    Oppu(OppuConfig(base_adapter=str(folder)), fresh)
    assert not fresh.model.get_submodule(layer).weight.equal(before)  # trained B != 0


@pytest.mark.bad_input("oppu-base-options")
def test_the_task_lora_refuses_options_it_has_no_use_for(beauty_dir: Path) -> None:
    from dep_eval import cli

    base = ["train", "--method", "oppu-base", "--output", "unused"]
    for extra, named in (
        (["--val-rows", "8"], "--val-rows"),
        (["--lora-r", "8"], "--lora-r"),
        (["--resume"], "--resume"),
    ):
        with pytest.raises(SystemExit, match=f"oppu-base has no use for {named}"):
            cli.main([*base, *extra])
    with pytest.raises(SystemExit, match="epochs=0 must be at least 1"):
        cli.main([*base, "--epochs", "0"])
    with pytest.raises(ValueError, match="no train rows to learn from in All_Beauty"):
        data = ["--data-dir", str(beauty_dir), "--category", "All_Beauty"]
        cli.main([*base, *data, "--max-rows", "0"])


def test_the_task_lora_never_learns_a_val_or_test_target(
    beauty_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import shutil

    from dep_eval.baselines.oppu.task_lora import task_rows

    data = tmp_path / "data"
    shutil.copytree(beauty_dir, data)
    folder = data / "All_Beauty"
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    leaked = train[5]["data"]["text"]
    test[0]["data"]["text"] = leaked  # a test reference that is also a train row's review
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in test))
    with caplog.at_level(logging.WARNING):
        rows = task_rows(f"local:{data}", ["All_Beauty"], all_rows=True, max_rows=None, seed=0)
    assert len(rows) == len(train) - 1
    assert leaked not in {row.target.text for row, _ in rows}
    assert "1 All_Beauty train row(s) left out" in caplog.text

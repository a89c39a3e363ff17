"""One coercion of option values (``dep_eval.model_args``), and one checkpoint reading per run."""

from __future__ import annotations

import pytest

from dep_eval.model_args import coerce, to_bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True), ("True", True), ("YES", True), ("1", True), (1, True), (True, True),
        ("false", False), ("no", False), (" No ", False), ("0", False), (0, False), (False, False),
    ],
)  # fmt: skip
def test_one_vocabulary_of_booleans(value: object, expected: bool) -> None:
    assert to_bool("use_his", value) is expected
    assert coerce("use_his", value, bool) is expected
    assert coerce("with_text", value, bool | None) is expected


@pytest.mark.parametrize("value", ["off", "on", "maybe", "", "2", 2, 0.5, "flase"])
def test_anything_else_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"use_his=.* must be true or false \(true/yes/1"):
        to_bool("use_his", value)


def test_fields_get_their_types() -> None:
    assert coerce("k", "3", int) == 3 and coerce("k", 3.0, int) == 3
    assert coerce("k", "none", int | None) is None and coerce("k", None, int | None) is None
    assert coerce("lr", "1e-4", float) == 1e-4 and coerce("lr", 2, float) == 2.0
    assert coerce("encoder", "BAAI/bge-m3", str | None) == "BAAI/bge-m3"
    for value in ("3.5", 3.5, True, "three"):
        with pytest.raises(ValueError, match=f"k={value!r} must be int"):
            coerce("k", value, int)


def test_the_adapters_switches_use_the_same_vocabulary() -> None:
    from dep_eval.methods.lm_eval_model import generation_settings

    assert generation_settings({"do_sample": "no"}).do_sample is False
    with pytest.raises(ValueError, match="do_sample='off' must be true or false"):
        generation_settings({"do_sample": "off"})


def test_a_run_resolves_and_reads_its_checkpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lm-eval model checks the checkpoint, finds its adapter and (later) loads its
    weights from one resolution and one reading of its config.json."""
    from types import SimpleNamespace

    from dep_eval import checkpoint
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP
    from dep_eval.engine import EMBEDDED_LLM
    from dep_eval.lm_eval_models import DEPLM

    calls = {"resolve": 0, "read": 0}
    resolve, read = checkpoint.checkpoint_for_run, checkpoint._read_meta

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(checkpoint, "checkpoint_for_run", counted("resolve", resolve))
    monkeypatch.setattr(checkpoint, "_read_meta", counted("read", read))
    lm = DEPLM(device="cpu", cache=False)  # the LLM loads lazily: nothing heavy here
    assert calls == {"resolve": 1, "read": 1}
    assert lm._prepared.checkpoint.folder.name == "dep-smollm2-minilm"
    loaded = []
    monkeypatch.setattr(DEP, "__init__", lambda self, config, llm, **kw: loaded.append(kw))
    DEP.create(DEPArgs(), SimpleNamespace(name=EMBEDDED_LLM), lm._prepared)
    assert loaded == [{"checkpoint": lm._prepared.checkpoint}]  # handed on, not resolved again
    assert calls == {"resolve": 1, "read": 1}

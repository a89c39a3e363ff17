"""The auxiliary-call cache (PAG's summaries, DPL's comparisons) on damaged files: what a
crash or a stray editor leaves behind must cost single entries, never the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dep_eval.call_cache import CallCache, Generation

NAME = "some-llm"


def _entry(key: str) -> tuple[str, Generation]:
    return key, Generation(f"answer {key}", 10, 3, 0.5)


@pytest.mark.bad_input("call-cache-not-utf8")
def test_a_non_utf8_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CallCache(NAME, folder=tmp_path)
    cache.put_many([_entry("a"), _entry("b"), _entry("c")])
    lines = cache.path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"answer b", b"answer \xff\xfe")  # not UTF-8
    cache.path.write_bytes(b"\n".join(lines))

    with caplog.at_level(logging.WARNING, logger="dep_eval.call_cache"):
        reread = CallCache(NAME, folder=tmp_path)
    assert set(reread.entries) == {"a", "c"}
    assert f"{cache.path}:2: unreadable cache entry skipped (UnicodeDecodeError" in caplog.text


@pytest.mark.bad_input("call-cache-torn-tail")
def test_a_torn_last_line_does_not_swallow_the_next_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CallCache(NAME, folder=tmp_path)
    cache.put_many([_entry("a"), _entry("b")])
    whole = cache.path.read_bytes()
    cache.path.write_bytes(whole[: whole.rindex(b'"text"')])  # crash half-way through "b"

    with caplog.at_level(logging.WARNING, logger="dep_eval.call_cache"):
        resumed = CallCache(NAME, folder=tmp_path)
        assert set(resumed.entries) == {"a"}
        assert f"{cache.path}:2: unreadable cache entry skipped" in caplog.text
        resumed.put_many([_entry("b"), _entry("c")])  # the next batch of the resumed run
    assert f"{cache.path}: torn last line ended before appending" in caplog.text

    assert set(CallCache(NAME, folder=tmp_path).entries) == {"a", "b", "c"}
    lines = cache.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in (lines[0], *lines[2:])] == ["a", "b", "c"]


def test_appends_to_an_intact_file_add_no_blank_lines(tmp_path: Path) -> None:
    cache = CallCache(NAME, folder=tmp_path)
    cache.put_many([_entry("a")])
    cache.put_many([_entry("b")])
    assert cache.path.read_text(encoding="utf-8").count("\n") == 2
    assert CallCache(NAME, folder=tmp_path).entries == cache.entries


@pytest.mark.bad_input("generation-cache-mistyped")
@pytest.mark.parametrize(
    "field, value",
    [("text", None), ("text", 12345), ("prompt_tokens", "many"), ("seconds", True)],
)
def test_a_mistyped_entry_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str, value: object
) -> None:
    # the generation cache of lm_eval_model (<cache>/generations) is a CallCache too
    cache = CallCache(NAME, folder=tmp_path / "generations")
    cache.put_many([_entry("a"), _entry("b")])
    lines = cache.path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    row[field] = value
    cache.path.write_text("\n".join([json.dumps(row), lines[1]]) + "\n", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="dep_eval.call_cache"):
        reread = CallCache(NAME, folder=tmp_path / "generations")
    assert reread.get("a") is None  # never scored as the string "None" or "12345"
    assert reread.get("b") == _entry("b")[1]
    expected = f"{cache.path}:1: unreadable cache entry skipped (TypeError: field {field!r} is"
    assert expected in caplog.text, caplog.text


@pytest.mark.bad_input("generation-cache-disk-full")
def test_a_failed_cache_write_warns_once_and_keeps_the_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from dep_eval import call_cache

    cache = CallCache(NAME, folder=tmp_path)
    calls: list[int] = []

    def full_disk(path: object, rows: object) -> None:  # what append_jsonl meets on a full disk
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(call_cache, "append_jsonl", full_disk)
    with caplog.at_level(logging.WARNING, logger="dep_eval.call_cache"):
        cache.put_many([_entry("a")])
        cache.put_many([_entry("b")])  # the next batch of the run: no second try, no warning
    assert set(cache.entries) == {"a", "b"}  # the run still has both
    assert len(calls) == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"could not save to the cache {tmp_path} (No space left on device)" in warning
    assert "DEP_EVAL_CACHE_DIR" in warning


@pytest.mark.slow
@pytest.mark.bad_input("call-cache-keyed-by-engine")
def test_auxiliary_calls_of_two_adapters_are_cached_apart(
    llm: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dep_eval.baselines.pag import Pag

    from dep_eval.engine import GenerationSettings, Prompt
    from dep_eval.methods.lm_eval_model import lm_eval_model_for

    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    from test_peft import make_lora

    first = str(make_lora(llm.model, tmp_path / "a", seed=1))  # type: ignore[attr-defined]
    second = str(make_lora(llm.model, tmp_path / "b", seed=2))  # type: ignore[attr-defined]
    question = [Prompt([{"role": "user", "content": "Summarize: I love soft lipsticks."}])]
    settings = GenerationSettings(max_new_tokens=8)
    PagLM = lm_eval_model_for(Pag)

    def ask(adapter: str, dtype: str = "float32") -> tuple[str, int]:
        lm = PagLM(peft=adapter, device="cpu", dtype=dtype)
        [answer] = lm.auxiliary_calls(question, settings, None)
        return answer.text, len(CallCache(lm.llm.name).entries)

    with_first, count = ask(first)
    assert count == 1
    with_second, count = ask(second)  # PAG's summary on another adapter: a new call
    assert count == 2 and with_second != with_first
    assert ask(first) == (with_first, 2)  # the first adapter's answer is reused
    assert ask(first, "bfloat16")[1] == 3  # another dtype is another engine too

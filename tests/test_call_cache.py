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

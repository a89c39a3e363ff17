"""Issue 32: faults a real run meets (a misspelled metadata key, a category that is a path, a
field of a megabyte, an invisible target, a full disk, an unusable cache folder), each on
the path ``lm_eval`` takes: the task's ``load_dataset`` (as lm-eval calls it), the adapter's
generation cache, or a real ``lm_eval`` subprocess (marked slow)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dep_eval import preflight
from dep_eval.data.loaders import DataError, clear_caches

CHECK_METRICS = preflight._check_metrics  # the real one, for the tests about the cache


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_caches()
    monkeypatch.setattr(preflight, "_check_metrics", lambda: None)  # not what these are about


def _utils() -> Any:
    import dep_eval.tasks.utils as utils

    return utils


def _review(asin: str, timestamp: int, **overrides: Any) -> dict[str, Any]:
    review = {
        "asin": asin,
        "rating": 4.0,
        "title": f"about {asin}",
        "text": f"My review of {asin}, written at {timestamp}.",
        "timestamp": timestamp,
    }
    return review | overrides


def _row(user: str, asins: str, target: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "category": "Toys",
        "profile": [_review(asin, i) for i, asin in enumerate(asins)],
        "data": _review(target, len(asins)),
    }


def _data_dir(root: Path, test_rows: list[dict[str, Any]] | None = None) -> Path:
    folder = root / "Toys"
    folder.mkdir(parents=True)

    def write(name: str, rows: list[dict[str, Any]]) -> None:
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    write("meta.jsonl", [{"asin": a, "title": f"Toy {a}", "description": ""} for a in "ABCD"])
    write("train.jsonl", [_row("u1", "A", "B")])
    write("val.jsonl", [_row("u1", "AB", "C")])
    write("test.jsonl", test_rows or [_row("u1", "AB", "D"), _row("u2", "AB", "C")])
    return root


# ------------------------------------------------------------------ row 4: metadata keys


@pytest.mark.bad_input("metadata-key-misspelled")
@pytest.mark.parametrize(
    "key, meant", [("spilt", "split"), ("catgory", "category"), ("data-dir", "data_dir")]
)
def test_a_misspelled_metadata_key_is_refused(tmp_path: Path, key: str, meant: str) -> None:
    data_dir = _data_dir(tmp_path)
    options = {"data_dir": str(data_dir), "category": "Toys", "split": "val"}
    options[key] = options.pop(meant)
    expected = (
        f"key '{key}' is not one this task reads; did you mean '{meant}'\\? "
        "The task reads category, split, data_dir, source"
    )
    with pytest.raises(ValueError, match=expected):
        _utils().load_dataset(**options)


def test_model_arguments_and_lm_eval_keys_pass_the_metadata_check(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path)
    # what lm-eval hands load_dataset: --model_args and its own keys merged in
    loaded = _utils().load_dataset(
        data_dir=str(data_dir),
        category="Toys",
        split="val",
        pretrained="x",
        k=4,
        checkpoint="c",
        with_text=True,
        config_source="y",
        version=1,
    )
    assert [doc["split"] for doc in loaded["eval"]] == ["val"]


# ------------------------------------------------------------- row 5: category is a name


@pytest.mark.bad_input("category-is-a-path")
@pytest.mark.parametrize("category", ["../evil/Toys", "/etc", "..", ".", "Toys/../Toys", ""])
def test_a_category_that_is_a_path_is_refused(tmp_path: Path, category: str) -> None:
    data_dir = _data_dir(tmp_path / "data")
    _data_dir(tmp_path / "evil")  # a readable category outside data_dir
    with pytest.raises(DataError) as caught:
        _utils().load_dataset(data_dir=str(data_dir), category=category or "x/")
    message = str(caught.value)
    assert "is not the name of a folder inside the data folder" in message
    assert f"{data_dir.resolve()}" in message and "categories there: Toys" in message


# --------------------------------------------------------------- row 11: invisible target


@pytest.mark.bad_input("invisible-target-text")
@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200d \u2060", "\ufeff\n", "\u00ad"])
def test_a_target_of_invisible_characters_is_empty(tmp_path: Path, text: str) -> None:
    bad = _row("u2", "AB", "C")
    bad["data"]["text"] = text
    data_dir = _data_dir(tmp_path, [_row("u1", "AB", "D"), bad])
    with pytest.raises(DataError) as caught:
        _utils().load_dataset(data_dir=str(data_dir), category="Toys")
    assert f"{data_dir / 'Toys' / 'test.jsonl'}:2, field 'data.text': the target review text " \
           "is empty: nothing to score" in str(caught.value)  # fmt: skip


def test_visible_text_with_zero_width_characters_is_kept(tmp_path: Path) -> None:
    row = _row("u1", "AB", "D")
    row["data"]["text"] = "Nice\u200b cream 👍"
    docs = _utils().load_dataset(data_dir=str(_data_dir(tmp_path, [row])), category="Toys")
    assert docs["eval"][0]["target"]["text"] == "Nice\u200b cream 👍"


# ------------------------------------------------------------- row 10: every field capped


@pytest.mark.slow
@pytest.mark.bad_input("long-title-field")
def test_a_megabyte_title_is_clipped_and_history_kept(
    tmp_path: Path, llm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from dep_eval.baselines.rag import Rag, RagConfig

    from dep_eval.data.loaders import load_pool
    from dep_eval.data.records import Sample
    from dep_eval.prompts import SYSTEM

    row = _row("u1", "ABC", "D")
    row["data"]["title"] = "big " * 250_000  # 1 MB, the case
    row["profile"][0]["title"] = "past " * 200_000
    data_dir = _data_dir(tmp_path, [row, _row("u2", "AB", "C")])
    with caplog.at_level(logging.WARNING):
        docs = _utils().load_dataset(data_dir=str(data_dir), category="Toys")["eval"]
    assert "1 of 2 documents have a text longer than prompts show, clipped to its head " \
           "(past review title: 1, target title: 1;" in caplog.text  # fmt: skip
    assert len(_utils().doc_to_text(docs[0])) < 1000  # the plain prompt lm-eval logs, too

    sample = Sample.from_doc(docs[0])
    pool = load_pool(sample.source, sample.category)
    method = Rag(RagConfig(), llm)
    method.setup(pool)
    prompt = method.build_prompt(sample, pool)
    text = llm.render(prompt)
    assert len(llm.tokenize(prompt)) < 1000  # was 500,126 tokens
    assert SYSTEM in text and "Product: Toy D" in text  # the instructions survive
    assert text.count("Past review") == 3  # and the whole history
    assert ("big " * 25).strip() in text and "big " * 30 not in text


# ------------------------------------------------------- small disks (tmpfs), real lm_eval

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_disk(name, size, read_only=False)``: a tmpfs of ``size`` mounted at
    ``tmp_path/name`` (a real full or read-only disk); skips where mounting is not allowed."""
    import os
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, size: str, read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root; this test is about a real full disk")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"mount is not allowed here ({done.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(disk: Path) -> None:
    """Fill ``disk`` to the last block, as a disk that ran full."""
    with (disk / "filler").open("wb", buffering=0) as handle:  # unbuffered: no flush left
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:
            pass


def _readme_command(output: Path, metadata: dict[str, str] | None = None) -> list[str]:
    """The README's main command (as tests/test_readme_command.py reads it) with --limit 2,
    max_gen_toks=16 and the given output path and metadata."""
    import sys

    from test_readme_command import readme_main_command

    command = readme_main_command()
    command[0] = str(Path(sys.executable).parent / "lm_eval")
    for name, value in (("--limit", "2"), ("--gen_kwargs", "max_gen_toks=16")):
        command[command.index(name) + 1] = value
    command[command.index("--output_path") + 1] = str(output)
    if metadata is not None:
        command[command.index("--metadata") + 1] = json.dumps(metadata)
    return command


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    import subprocess

    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@pytest.mark.slow
@pytest.mark.bad_input("output-path-full-disk")
def test_lm_eval_refuses_an_output_disk_without_room(
    shared_data_dir: Path, tmp_path: Path, small_disk: Any
) -> None:
    disk = small_disk("out", "64k")  # room for an empty file, not for the results
    output = disk / "dep-smollm2" / "results.json"
    done = _run(_readme_command(output))
    assert done.returncode != 0
    expected = f"--output_path {output}: the run will write about "
    assert expected in done.stderr, done.stderr[-3000:]
    assert f"(results and samples of 2 documents) but only 64.0 KB is free on {disk}" in (
        done.stderr
    )
    assert list(disk.iterdir()) == []  # nothing half-written, no 0-byte results file


@pytest.mark.slow
@pytest.mark.bad_input("lm-eval-metadata-key-misspelled")
def test_lm_eval_refuses_a_misspelled_split(shared_data_dir: Path, tmp_path: Path) -> None:
    data_dir = str(shared_data_dir / "amazon_beauty")
    metadata = {"data_dir": data_dir, "category": "All_Beauty", "spilt": "val"}
    output = tmp_path / "out" / "results.json"
    done = _run(_readme_command(output, metadata))
    assert done.returncode != 0
    assert "--metadata key 'spilt' is not one this task reads; did you mean 'split'?" in (
        done.stderr
    ), done.stderr[-3000:]
    assert not output.parent.exists()  # the test split was not evaluated instead


@pytest.mark.slow
@pytest.mark.bad_input("lm-eval-cache-disk-full")
def test_lm_eval_on_a_full_cache_disk_still_writes_its_results(
    shared_data_dir: Path, tmp_path: Path, small_disk: Any
) -> None:
    from dep_eval.cache import cache_dir
    from dep_eval.data.loaders import load_task_dataset
    from dep_eval.engine import loading

    loading.embedded_llm_path()  # the converted LLM, in the user's cache (built once)
    shared = cache_dir()
    cache = small_disk("cache", "1m")
    # the LLM, WordNet and the pool's embeddings are there already; generations must be
    # written to the full disk
    for name in ("models", "nltk_data", "embeddings"):
        if (shared / name).is_dir():
            (cache / name).symlink_to(shared / name)
    _fill(cache)
    output = tmp_path / "out" / "dep-smollm2" / "results.json"
    done = _run(_readme_command(output), {"DEP_EVAL_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    warning = f"could not save to the cache {cache / 'generations'} (No space left on device)"
    assert done.stderr.count(warning) == 1, done.stderr[-3000:]
    assert "DEP_EVAL_CACHE_DIR" in done.stderr
    [results] = output.parent.glob("results_*.json")
    metrics = json.loads(results.read_text())["results"]["amazon_review_personalized_custom"]
    assert 0 < metrics["rouge1,none"] <= 1
    [samples] = output.parent.glob("samples_*.jsonl")
    assert len(samples.read_text().splitlines()) == 2
    # row output-path-full-disk's estimate is an upper bound of what lm_eval wrote
    data_dir = shared_data_dir / "amazon_beauty"
    docs = list(load_task_dataset({"data_dir": str(data_dir), "category": "All_Beauty",
                                   "split": "test"})["test"])[:2]  # fmt: skip
    written = results.stat().st_size + samples.stat().st_size
    assert written <= preflight.output_bytes(docs, _utils().doc_to_text, 16), written


# ---------------------------------------------------- row 9: an unusable cache folder


def _evaluate(data_dir: Path) -> Any:
    import lm_eval

    return lm_eval.simple_evaluate(
        model="nonperso",
        model_args="device=cpu",
        tasks=["amazon_review_personalized_custom"],
        limit=1,
        gen_kwargs="max_gen_toks=4",
        metadata={"data_dir": str(data_dir), "category": "Toys"},
    )


@pytest.mark.slow
@pytest.mark.bad_input("cache-folder-unusable")
@pytest.mark.parametrize("case", ["a file", "read-only", "too small for WordNet"])
def test_an_unusable_cache_folder_is_one_error_before_the_llm_loads(
    tmp_path: Path, small_disk: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from dep_eval.metrics import wordnet

    data_dir = _data_dir(tmp_path / "data")
    if case == "a file":
        cache = tmp_path / "cache"
        cache.write_text("not a folder")
        expected = f"dep-eval's cache folder {cache} is unusable: {cache} is a file, not a folder"
        error: type[Exception] = preflight.RunCheckError
    elif case == "read-only":
        cache = small_disk("cache", "1m", read_only=True)
        expected = (
            f"dep-eval's cache folder {cache} is unusable: cannot write in {cache} (Read-only"
        )
        error = preflight.RunCheckError
    else:
        cache = small_disk("cache", "4m")  # WordNet's copy needs 36 MB
        monkeypatch.setattr(preflight, "_check_metrics", CHECK_METRICS)
        CHECK_METRICS.cache_clear()
        monkeypatch.setenv("DEP_EVAL_BERTSCORE", "off")  # not what this case is about
        monkeypatch.setattr(wordnet, "_nltk_finds_wordnet", lambda: False)  # none elsewhere
        monkeypatch.delenv(wordnet.ROOT_ENV, raising=False)
        wordnet.ensure_wordnet.cache_clear()
        if not (wordnet.SYSTEM_WORDNET / "data.noun").is_file():
            pytest.skip("no system WordNet to copy")
        expected = f"cannot copy WordNet into {cache / 'nltk_data' / 'corpora'} (WordNet needs"
        error = wordnet.WordNetUnavailableError
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(cache))
    try:
        with pytest.raises(error) as caught:
            _evaluate(data_dir)
    finally:
        CHECK_METRICS.cache_clear()
        wordnet.ensure_wordnet.cache_clear()
    assert expected in str(caught.value)
    assert "DEP_EVAL_CACHE_DIR" in str(caught.value)
    assert not (tmp_path / "cache" / "models").exists()  # the LLM never loaded

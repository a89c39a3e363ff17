"""Build the benchmark of any Amazon Reviews 2023 category from its raw files (DPL's recipe).

``build_benchmark(reviews, meta, category, output)`` writes ``<output>/<category>/`` with
``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and ``meta.jsonl`` in the layout ``loaders.py``
reads (the DPL-main / DPL-meta layout), plus ``manifest.json``: the inputs (name, size,
sha256), every parameter, the row/user/item counts after each step, the tool versions.

The recipe restates DPL's ``data/data-create.py`` (steps 1-7 of issue 18); each step is one
commented block of ``build_benchmark`` below. Details that decide the exact output and are
easy to miss:

- Step 3 counts an item's users on the current rows *before* de-duplication, a user's
  reviews *after* it (greedy, newest first, skipping a review whose asin or text was already
  kept), and removes rows only by those two filters: duplicates stay until step 4, as in DPL.
  The 500-review cap makes the result depend on the schedule (dropping items can bring a
  user back under the cap after the user was dropped), so the loop applies both filters at
  once per round, exactly as DPL does, rather than computing some "core".
- Step 4 normalises text as Python does (``re.sub(r"\\s+", " ", text.strip())``: Unicode
  whitespace, not only ASCII) and de-duplicates again on the normalised text.
- Ties in time keep file order (Python's sorts are stable): every row carries its position
  in the raw file, and every ordering here ends on it, so the output is a function of the
  input files alone (byte-identical reruns, whatever the thread count).
- Step 5 stops when a round drops no user (DPL's test; as no user was dropped, the items
  kept still have their 5 profile users, so this is the fixed point).
- Output rows are in DPL's order: users by their first review in the file, then target order.
- Step 6's split is DPL's leave-last-out unless ``SplitSpec`` (``--split``) asks for
  user-disjoint or temporal splits (one global cutoff); steps 1-5 are the same for all three,
  and the manifest's ``split`` records which one and how (docs/benchmarks.md).

One deviation, for the loader's sake: a review whose text is only whitespace (200 spaces,
say) passes step 2 but is empty after step 4's normalisation; DPL would keep it, the loader
rejects an empty target text, so it is dropped after the de-duplication and counted
(``step4.empty_text_dropped``). Meta rows repeating a ``parent_asin`` keep the first
that passes step 1 (counted); DPL would keep both, which the loader rejects when they differ.

Why DuckDB: it streams JSON lines (plain or .gz) from disk into a columnar database file,
spills joins, windows and sorts to disk under a memory limit, and writes JSON lines itself,
so a category of tens of millions of reviews builds on one machine without holding them in
Python. The only per-row Python is the greedy de-duplication, and only for the rows that
share an asin or a text with another row of the same user (few in real data).

Malformed raw lines never stop a build: a line that is not a JSON object (bad JSON, invalid
UTF-8, an array), that lacks a required field or has one of the wrong JSON type is counted
by kind, logged with its first record numbers, recorded in the manifest and skipped.
Required in a review: ``user_id``, ``parent_asin``, ``text``, ``rating``, ``title``,
``timestamp``; in a meta row: ``parent_asin`` (a meta row with no title, description,
categories or rating_number fails step 1, as in DPL, where a missing value is falsy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from dep_eval.data.parsing import DataError
from dep_eval.io import atomic_folder

__all__ = [
    "HUB_REPO",
    "EngineSettings",
    "Recipe",
    "SplitSpec",
    "build_benchmark",
    "download_raw",
]

logger = logging.getLogger(__name__)

HUB_REPO = "McAuley-Lab/Amazon-Reviews-2023"
SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl", "meta.jsonl")
_SHOWN_PROBLEMS = 5  # first record numbers listed per kind of malformed line
_COPIES_PER_SLICE = 500_000  # profile reviews written per output slice (bounds memory)

# Every character for which Python's str.isspace() is true: what ``str.strip()`` and the
# ``\s`` of ``re`` (on str) match. RE2's own \s is ASCII-only, so the class is spelled out;
# tests check it against Python on every code point.
PY_WHITESPACE = (
    r"[\x{9}-\x{d}\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)


@dataclass(frozen=True)
class Recipe:
    """The thresholds of DPL's recipe (its values are the defaults)."""

    min_description_chars: int = 100  # step 1: joined description length, inclusive
    max_description_chars: int = 2000
    min_review_chars: int = 200  # step 2: raw review text length, inclusive
    min_item_users: int = 8  # step 3: users per item
    min_user_reviews: int = 18  # step 3: de-duplicated reviews per user, inclusive
    max_user_reviews: int = 500
    inputs_per_user: int = 10  # step 4: the last N reviews are targets, the rest the profile
    min_profile_item_users: int = 5  # step 5: profile users per profile item
    min_profile_reviews: int = 8  # step 5: profile reviews per user

    def check(self) -> None:
        if self.inputs_per_user < 2:
            raise DataError("inputs_per_user must be at least 2 (the val and test targets)")
        if self.min_description_chars > self.max_description_chars:
            raise DataError("min_description_chars is above max_description_chars")
        if self.min_user_reviews > self.max_user_reviews:
            raise DataError("min_user_reviews is above max_user_reviews")
        if self.min_profile_reviews < 1:
            raise DataError("min_profile_reviews must be at least 1 (an empty profile is no row)")
        for name, value in asdict(self).items():
            if value < 0:
                raise DataError(f"{name} must not be negative (got {value})")


@dataclass(frozen=True)
class EngineSettings:
    """DuckDB's resources; they change speed and memory, never the output."""

    memory_limit: str = "4GB"
    threads: int = 2
    temp_dir: Path | None = None  # work database and spill files; default: beside the output


SPLIT_KINDS = ("leave-last-out", "user", "temporal")


@dataclass(frozen=True)
class SplitSpec:
    """How step 6 assigns each user's N target reviews (the recipe's last N) to splits.

    - ``leave-last-out`` (DPL's): per user, targets 1..N-2 are train rows, N-1 val, N test;
    - ``user``: users are split (by the md5 of their id: deterministic, order-free) into
      ``test_fraction`` test users, ``val_fraction`` val users and the rest; a train user's N
      targets are all train rows; a val or test user has ONE row, its last review, whose
      profile is all its earlier reviews, and no row anywhere else;
    - ``temporal``: one global cutoff date (``cutoff``, else the timestamp below which
      ``1 - test_fraction`` of all targets fall) and a val cutoff before it (``val_cutoff``,
      else the ``val_fraction`` of targets before ``cutoff``): targets before the val cutoff
      are train rows, between the two val rows, at or after ``cutoff`` test rows.

    Every row's profile is everything its user wrote before the target, as in DPL. Steps 1-5
    are the same for every kind."""

    kind: str = "leave-last-out"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    cutoff: int | None = None  # temporal: the test cutoff, in the data's timestamp unit (ms)
    val_cutoff: int | None = None

    def check(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise DataError(f"split {self.kind!r}: use one of {', '.join(SPLIT_KINDS)}")
        fractions = (self.val_fraction, self.test_fraction)
        if not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
            raise DataError(
                "val and test fractions must each be in [0, 1) and sum to less than 1 "
                f"(got {self.val_fraction} and {self.test_fraction})"
            )
        if self.kind != "temporal" and (self.cutoff is not None or self.val_cutoff is not None):
            raise DataError("--cutoff/--val-cutoff apply to --split temporal only")
        if (
            self.cutoff is not None
            and self.val_cutoff is not None
            and self.val_cutoff > self.cutoff
        ):
            raise DataError(f"val cutoff {self.val_cutoff} is after the test cutoff {self.cutoff}")


# --------------------------------------------------------------------------- raw columns

# (field, accepted JSON types). Every field is read as JSON so that a wrong type is seen
# (DuckDB would otherwise cast "five" to NULL and 3.5 to 4 silently).
_INT = ("UBIGINT", "BIGINT")
_NUMBER = (*_INT, "DOUBLE")
REVIEW_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("user_id", ("VARCHAR",)),
    ("parent_asin", ("VARCHAR",)),
    ("text", ("VARCHAR",)),
    ("rating", _NUMBER),
    ("title", ("VARCHAR",)),
    ("timestamp", _INT),
)
META_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parent_asin", ("VARCHAR",)),
    ("title", ("VARCHAR",)),
    ("description", ("ARRAY",)),
    ("categories", ("ARRAY",)),
    ("rating_number", _NUMBER),
)
REVIEW_REQUIRED = tuple(name for name, _ in REVIEW_FIELDS)
META_REQUIRED = ("parent_asin",)


def _read_json_sql(path: Path, fields: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    columns = ", ".join(f"'{name}': 'JSON'" for name, _ in fields)
    # ignore_errors: an unreadable line becomes a row of NULLs (counted below), not a crash.
    return (
        f"read_json({_quote(str(path))}, format='newline_delimited', ignore_errors=true, "
        f"maximum_object_size=67108864, columns={{{columns}}})"
    )


def _problem_sql(fields: tuple[tuple[str, tuple[str, ...]], ...], required: tuple[str, ...]) -> str:
    """A CASE giving the first problem of a raw row ('malformed: ...'), NULL if well formed."""
    names = [name for name, _ in fields]
    cases = [f"WHEN {' AND '.join(f'{n} IS NULL' for n in names)} THEN 'not a JSON object'"]
    for name, types in fields:
        if name in required:
            cases.append(f"WHEN {name} IS NULL THEN 'missing {name}'")
        accepted = ", ".join(f"'{t}'" for t in types)
        cases.append(
            f"WHEN {name} IS NOT NULL AND json_type({name}) NOT IN ({accepted}) "
            f"THEN 'wrong type {name}'"
        )
        if types == ("VARCHAR",) and name in ("user_id", "parent_asin"):
            cases.append(f"WHEN ({name} ->> '$') = '' THEN 'empty {name}'")
        if types == ("ARRAY",) and name == "description":  # joined below: strings only
            cases.append(
                f"WHEN {name} IS NOT NULL AND len(list_filter(json_type({name}, '$[*]'), "
                f"lambda t: t <> 'VARCHAR')) > 0 THEN 'wrong type {name}'"
            )
    return "CASE " + " ".join(cases) + " END"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- the build


def build_benchmark(
    reviews: str | os.PathLike[str],
    meta: str | os.PathLike[str],
    category: str,
    output: str | os.PathLike[str],
    recipe: Recipe | None = None,
    engine: EngineSettings | None = None,
    *,
    overwrite: bool = False,
    input_names: tuple[str, str] | None = None,
    split: SplitSpec | None = None,
) -> Path:
    """Build ``<output>/<category>/`` from a raw review file and a raw meta file.

    Both may be plain or gzipped JSON lines in the Amazon Reviews 2023 schema. The folder is
    written into a temporary sibling and renamed into place at the end, so a failed build
    leaves nothing half-written. Raises ``DataError`` when an input is missing, the folder
    exists (unless ``overwrite``), or no user survives the recipe."""
    import duckdb

    recipe = recipe or Recipe()
    engine = engine or EngineSettings()
    split = split or SplitSpec()
    recipe.check()
    split.check()
    reviews, meta, output = Path(reviews), Path(meta), Path(output)
    for label, path in (("reviews", reviews), ("meta", meta)):
        if not path.is_file():
            raise DataError(f"{label} file {path} does not exist", file=str(path))
    if not category or "/" in category or category.startswith("."):
        raise DataError(f"category {category!r} is not a folder name")
    final = output / category
    if final.exists() and not overwrite:
        raise DataError(
            f"{final} already exists; remove it or pass --overwrite to replace it",
            file=str(final),
        )
    started = time.monotonic()
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".dep-eval-build-", dir=engine.temp_dir or output))
    try:
        with atomic_folder(final) as staging:
            con = duckdb.connect(
                str(work / "work.duckdb"),
                config={
                    "memory_limit": engine.memory_limit,
                    "threads": engine.threads,
                    "temp_directory": str(work / "spill"),
                    "preserve_insertion_order": True,  # rowid = position in the raw file
                },
            )
            try:
                steps = _run_recipe(con, reviews, meta, category, recipe, staging, split)
            finally:
                con.close()
            names = input_names or (reviews.name, meta.name)
            manifest = {
                "category": category,
                "tool": _versions(),
                "inputs": {
                    "reviews": _describe_file(reviews, names[0]),
                    "meta": _describe_file(meta, names[1]),
                },
                "recipe": asdict(recipe),
                "split": steps.pop("split"),
                "steps": steps,
                "outputs": {name: _describe_file(staging / name, name) for name in SPLIT_FILES},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            staging.chmod(0o777 & ~_umask())  # a staging folder is private; the result is not
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("built %s in %.1f s", final, time.monotonic() - started)
    return final


def _run_recipe(
    con: Any,
    reviews: Path,
    meta: Path,
    category: str,
    recipe: Recipe,
    out: Path,
    split: SplitSpec | None = None,
) -> dict[str, Any]:
    """Steps 1-7 on an open DuckDB connection; returns the manifest's per-step counts."""
    steps: dict[str, Any] = {}
    q = _Query(con)
    _step1_items(q, meta, recipe, steps)
    _step2_reviews(q, reviews, recipe, steps)
    _step3_core(q, recipe, steps)
    n = recipe.inputs_per_user
    _step4_normalise_split(q, n, steps)
    _step5_profile_core(q, recipe, steps)
    splits = _step6_final(q, split, n, steps)
    _step7_write(q, splits, category, out, n, steps)
    return steps


def _step1_items(q: _Query, meta: Path, recipe: Recipe, steps: dict[str, Any]) -> None:
    """Step 1: the items kept from the meta file."""
    # ---- Step 1: items. Meta rows whose description (joined with spaces, a leading
    # "Product Description" element dropped) has 100-2,000 characters and that have a title,
    # categories and a rating_number; the item id is parent_asin.
    problem = _problem_sql(META_FIELDS, META_REQUIRED)
    described = (
        "CASE WHEN d IS NULL OR len(d) = 0 THEN '' "
        "WHEN d[1] = 'Product Description' THEN array_to_string(d[2:], ' ') "
        "ELSE array_to_string(d, ' ') END"
    )
    q.run(
        f"""
        CREATE TABLE meta_read AS
        WITH raw AS (SELECT *, {problem} AS problem FROM {_read_json_sql(meta, META_FIELDS)}),
        parsed AS (
            SELECT problem, parent_asin ->> '$' AS asin, title ->> '$' AS title,
                   CASE WHEN problem IS NULL THEN from_json(description, '["VARCHAR"]') END AS d,
                   json_array_length(categories) AS n_categories,
                   CASE WHEN problem IS NULL THEN rating_number::DOUBLE END AS rating_number
            FROM raw),
        joined AS (SELECT *, {described} AS description FROM parsed)
        SELECT CASE
                 WHEN problem IS NOT NULL THEN 'malformed: ' || problem
                 WHEN length(description) NOT BETWEEN {recipe.min_description_chars}
                      AND {recipe.max_description_chars} THEN 'description length out of range'
                 WHEN coalesce(title, '') = '' THEN 'no title'
                 WHEN coalesce(n_categories, 0) = 0 THEN 'no categories'
                 WHEN coalesce(rating_number, 0) = 0 THEN 'no rating_number'
               END AS status,
               asin, title, description
        FROM joined""",
        reading=meta,
    )
    meta_status = _status_counts(q, "meta_read", meta)
    q.run("""
        CREATE TABLE items AS
        SELECT asin, title, description, line FROM (
            SELECT rowid AS line, asin, title, description FROM meta_read WHERE status IS NULL)
        QUALIFY row_number() OVER (PARTITION BY asin ORDER BY line) = 1""")
    q.run("DROP TABLE meta_read")
    kept_meta = sum(n for s, n in meta_status["by_status"].items() if s == "kept")
    n_items = q.one("SELECT count(*) FROM items")
    steps["step1_items"] = {
        **meta_status,
        "duplicate_parent_asin_dropped": kept_meta - n_items,
        "items": n_items,
    }
    _log_step(q, "step 1 (items)", steps["step1_items"])
    _require(n_items, "step 1 (items)", steps)


def _step2_reviews(q: _Query, reviews: Path, recipe: Recipe, steps: dict[str, Any]) -> None:
    """Step 2: the reviews kept from the reviews file."""
    # ---- Step 2: reviews. Text of at least 200 characters, and a rating, a title and a
    # timestamp (non-zero, non-empty: DPL tests truthiness); asin := parent_asin; only items
    # kept in step 1. ``line`` is the row's position in the raw file: the tie-breaker.
    problem = _problem_sql(REVIEW_FIELDS, REVIEW_REQUIRED)
    q.run(
        f"""
        CREATE TABLE reviews_read AS
        WITH raw AS (
            SELECT *, {problem} AS problem FROM {_read_json_sql(reviews, REVIEW_FIELDS)}),
        parsed AS (
            SELECT problem, user_id ->> '$' AS user_id, parent_asin ->> '$' AS asin,
                   text ->> '$' AS text, title ->> '$' AS title,
                   CASE WHEN problem IS NULL THEN rating::DOUBLE END AS rating,
                   CASE WHEN problem IS NULL THEN timestamp::BIGINT END AS timestamp
            FROM raw),
        judged AS (
            SELECT *, CASE
                     WHEN problem IS NOT NULL THEN 'malformed: ' || problem
                     WHEN length(text) < {recipe.min_review_chars} THEN 'text too short'
                     WHEN rating = 0 THEN 'no rating'
                     WHEN title = '' THEN 'no title'
                     WHEN timestamp = 0 THEN 'no timestamp'
                   END AS status
            FROM parsed)
        SELECT status,
               -- only kept rows carry their columns: the table stays small otherwise
               CASE WHEN status IS NULL THEN user_id END AS user_id,
               CASE WHEN status IS NULL THEN asin END AS asin,
               CASE WHEN status IS NULL THEN text END AS text,
               CASE WHEN status IS NULL THEN title END AS title,
               CASE WHEN status IS NULL THEN rating END AS rating,
               CASE WHEN status IS NULL THEN timestamp END AS timestamp
        FROM judged""",
        reading=reviews,
    )
    review_status = _status_counts(q, "reviews_read", reviews)
    q.run("""
        CREATE TABLE step2 AS
        SELECT rowid AS line, user_id, asin, text, title, rating, timestamp
        FROM reviews_read WHERE status IS NULL AND asin IN (SELECT asin FROM items)""")
    q.run("DROP TABLE reviews_read")
    kept_reviews = review_status["by_status"].get("kept", 0)
    steps["step2_reviews"] = {
        **review_status,
        "item_not_kept_in_step1": kept_reviews - q.one("SELECT count(*) FROM step2"),
        **_counts(q, "step2"),
    }
    _log_step(q, "step 2 (reviews)", steps["step2_reviews"])
    _require(steps["step2_reviews"]["rows"], "step 2 (reviews)", steps)


def _step3_core(q: _Query, recipe: Recipe, steps: dict[str, Any]) -> None:
    """Step 3: the item/user core, round by round."""
    # ---- Step 3: until nothing changes: per user, greedy de-duplication newest first by
    # asin and by text (it decides the user's review count; the rows stay, as in DPL); keep
    # items with >= 8 users (on all current rows) and users with 18-500 de-duplicated reviews.
    # ``text_group`` names equal raw texts of one user (the first line holding that text),
    # so the rounds compare integers, not texts.
    q.run("""
        CREATE TABLE cur AS
        SELECT *, min(line) OVER (PARTITION BY user_id, text) AS text_group FROM step2""")
    q.run("DROP TABLE step2")
    rounds: list[dict[str, int]] = []
    while True:
        _greedy_duplicates(q, "cur", "text_group", "dropped")
        q.run(f"""
            CREATE OR REPLACE TABLE nxt AS
            WITH users_ok AS (
                SELECT user_id FROM cur LEFT JOIN dropped USING (line)
                GROUP BY user_id
                HAVING count(*) - count(dropped.line)
                       BETWEEN {recipe.min_user_reviews} AND {recipe.max_user_reviews}),
            items_ok AS (
                SELECT asin FROM cur GROUP BY asin
                HAVING count(DISTINCT user_id) >= {recipe.min_item_users})
            SELECT * FROM cur
            WHERE user_id IN (SELECT user_id FROM users_ok)
              AND asin IN (SELECT asin FROM items_ok)""")
        before, after = q.one("SELECT count(*) FROM cur"), q.one("SELECT count(*) FROM nxt")
        q.run("DROP TABLE cur")
        q.run("ALTER TABLE nxt RENAME TO cur")
        rounds.append(_counts(q, "cur"))
        _log_step(q, f"step 3 round {len(rounds)}", rounds[-1])
        if after == before or after == 0:
            break
    steps["step3_core"] = {"rounds": rounds, **rounds[-1]}
    _require(rounds[-1]["rows"], "step 3 (item/user filters)", steps)


def _step4_normalise_split(q: _Query, n: int, steps: dict[str, Any]) -> None:
    """Step 4: normalised texts, duplicates dropped, each user's last ``n`` reviews the inputs."""
    # ---- Step 4: normalise whitespace (strip, then runs of whitespace -> one space), the
    # greedy de-duplication again on the normalised text, this time dropping rows; sort each
    # user's reviews by time (file order on ties); the last 10 are the inputs, the rest the
    # profile. Items and user order (first review in the file) are fixed here, as in DPL.
    q.run("""
        CREATE TABLE meta_items AS SELECT DISTINCT asin FROM cur""")
    q.run("""
        CREATE TABLE user_order AS SELECT user_id, min(line) AS first_line FROM cur
        GROUP BY user_id""")
    strip = f"regexp_replace(text, '^{PY_WHITESPACE}+|{PY_WHITESPACE}+$', '', 'g')"
    q.run(f"""
        CREATE TABLE normalised AS
        SELECT line, user_id, asin, title, rating, timestamp,
               regexp_replace({strip}, '{PY_WHITESPACE}+', ' ', 'g') AS text
        FROM cur""")
    q.run("DROP TABLE cur")
    q.run("""
        CREATE TABLE norm AS
        SELECT *, min(line) OVER (PARTITION BY user_id, text) AS text_group FROM normalised""")
    q.run("DROP TABLE normalised")
    _greedy_duplicates(q, "norm", "text_group", "dropped")
    duplicates = q.one("SELECT count(*) FROM dropped")
    empty = q.one(
        "SELECT count(*) FROM norm WHERE text = '' AND line NOT IN (SELECT line FROM dropped)"
    )
    q.run(f"""
        CREATE TABLE step4 AS
        WITH kept AS (
            SELECT * FROM norm
            WHERE line NOT IN (SELECT line FROM dropped) AND text <> ''),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY timestamp, line) - 1
                          AS position,
                      count(*) OVER (PARTITION BY user_id) AS n_reviews
            FROM kept)
        SELECT line, user_id, asin, title, rating, timestamp, text, position,
               CASE WHEN position >= n_reviews - {n} THEN position - (n_reviews - {n}) END
                   AS input_index  -- NULL: a profile review
        FROM ranked""")
    q.run("DROP TABLE norm")
    steps["step4_normalise_split"] = {
        "duplicates_dropped": duplicates,
        "empty_text_dropped": empty,
        **_counts(q, "step4"),
        "profile_rows": q.one("SELECT count(*) FROM step4 WHERE input_index IS NULL"),
    }
    _log_step(q, "step 4 (normalise, de-duplicate, split)", steps["step4_normalise_split"])


def _step5_profile_core(q: _Query, recipe: Recipe, steps: dict[str, Any]) -> None:
    """Step 5: the profile core, round by round."""
    # ---- Step 5: until no user is dropped: drop profile reviews of items with fewer than
    # 5 profile users, then users with fewer than 8 profile reviews. Input reviews are
    # never dropped here (their items stay in meta.jsonl: it holds every step-3 item).
    q.run("CREATE TABLE prof AS SELECT * FROM step4 WHERE input_index IS NULL")
    q.run("CREATE TABLE users5 AS SELECT DISTINCT user_id FROM step4")
    rounds = []
    while True:
        q.run(f"""
            CREATE OR REPLACE TABLE prof_items AS
            SELECT * FROM prof WHERE asin IN (
                SELECT asin FROM prof GROUP BY asin
                HAVING count(DISTINCT user_id) >= {recipe.min_profile_item_users})""")
        q.run(f"""
            CREATE OR REPLACE TABLE users_new AS
            SELECT user_id FROM prof_items GROUP BY user_id
            HAVING count(*) >= {recipe.min_profile_reviews}""")
        q.run("""
            CREATE OR REPLACE TABLE prof AS
            SELECT * FROM prof_items WHERE user_id IN (SELECT user_id FROM users_new)""")
        before = q.one("SELECT count(*) FROM users5")
        after = q.one("SELECT count(*) FROM users_new")
        q.run("DROP TABLE users5")
        q.run("ALTER TABLE users_new RENAME TO users5")
        rounds.append(_counts(q, "prof"))
        _log_step(q, f"step 5 round {len(rounds)}", rounds[-1])
        if after == before or after == 0:
            break
    steps["step5_profile_core"] = {
        "rounds": rounds,
        "users": rounds[-1]["users"],
        "profile_rows": rounds[-1]["rows"],
        "profile_items": rounds[-1]["items"],
    }
    _require(rounds[-1]["users"], "step 5 (profile filters)", steps)


def _step6_final(
    q: _Query, split: SplitSpec | None, n: int, steps: dict[str, Any]
) -> dict[str, str]:
    """Step 6: every user's final history, and each split's row filter."""
    # ---- Step 6: splits (``SplitSpec``; DPL's leave-last-out by default). The final
    # history of a user is the kept profile then the N inputs; the target input[i] has
    # everything before it as its profile. Leave-last-out: train i = 0..N-3, val i = N-2,
    # test i = N-1.
    q.run("""
        CREATE TABLE final AS
        SELECT user_id, asin, rating, title, text, timestamp, input_index,
               row_number() OVER (PARTITION BY user_id ORDER BY timestamp, line) AS seq
        FROM (SELECT * FROM prof
              UNION ALL
              SELECT * FROM step4 WHERE input_index IS NOT NULL
                                    AND user_id IN (SELECT user_id FROM users5))""")
    q.run("DROP TABLE prof")
    q.run("DROP TABLE step4")
    splits, steps["split"] = _split_conditions(q, split or SplitSpec(), n)
    return splits


def _step7_write(
    q: _Query, splits: dict[str, str], category: str, out: Path, n: int, steps: dict[str, Any]
) -> None:
    """Step 7: the split files and meta.jsonl in the layout loaders.py reads."""
    # ---- Step 7: the DPL-main / DPL-meta layout loaders.py reads. Users in the order of
    # their first review in the file, targets in time order; meta in file order. A row
    # repeats its user's history, so the rows are built a slice of users at a time (about
    # _COPIES_PER_SLICE reviews in all their profiles), each slice appended to the files:
    # one statement for a big category would hold every profile list in memory at once.
    q.run(f"""
        CREATE TABLE slices AS
        SELECT user_id, first_line,
               (sum(weight) OVER (ORDER BY first_line ROWS UNBOUNDED PRECEDING) - 1)
                   // {_COPIES_PER_SLICE} AS slice
        FROM (SELECT user_id, first_line, count(*) * {n} AS weight
              FROM final JOIN user_order USING (user_id) GROUP BY user_id, first_line)""")
    n_slices = q.one("SELECT coalesce(max(slice), -1) + 1 FROM slices")
    part = out / ".part.jsonl"
    for name, condition in splits.items():
        with (out / f"{name}.jsonl").open("wb") as target:
            for index in range(n_slices):
                q.run(f"""
                    COPY (
                        WITH f AS (
                            SELECT final.*, slices.first_line FROM final JOIN slices
                            USING (user_id) WHERE slices.slice = {index}),
                        profiles AS (
                            SELECT t.user_id, t.seq,
                                   list({_review_struct("p")} ORDER BY p.seq) AS profile
                            FROM f t JOIN f p ON p.user_id = t.user_id AND p.seq < t.seq
                            WHERE {condition}
                            GROUP BY t.user_id, t.seq)
                        SELECT user_id, {_quote(category)} AS category, profile,
                               {_review_struct("t")} AS data
                        FROM f t JOIN profiles USING (user_id, seq)
                        ORDER BY t.first_line, seq
                    ) TO {_quote(str(part))} (FORMAT json)""")
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, target, 1 << 20)
        part.unlink(missing_ok=True)
    written = {split: _line_count(out / f"{split}.jsonl") for split in splits}
    q.run(f"""
        COPY (SELECT asin, title, description FROM items
              WHERE asin IN (SELECT asin FROM meta_items) ORDER BY line)
        TO {_quote(str(out / "meta.jsonl"))} (FORMAT json)""")
    written["meta"] = _line_count(out / "meta.jsonl")
    steps["step6_splits"] = {f"{name}_rows": count for name, count in written.items()}
    for name in splits:
        if not written[name]:
            logger.warning("%s: the %s split has no rows (see the manifest's split)", out, name)
    _log_step(q, "steps 6-7 (splits written)", steps["step6_splits"])


def _split_conditions(q: _Query, spec: SplitSpec, n: int) -> tuple[dict[str, str], dict]:
    """Step 6's row filter per split (on ``final t``) and what the manifest records."""
    info: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "leave-last-out":
        conditions = {
            "train": f"t.input_index < {n - 2}",
            "val": f"t.input_index = {n - 2}",
            "test": f"t.input_index = {n - 1}",
        }
    elif spec.kind == "user":
        conditions = _user_split(q, spec, n, info)
    else:
        conditions = _temporal_split(q, spec, info)
    for name, condition in conditions.items():
        info[f"{name}_users"] = q.one(
            f"SELECT count(DISTINCT user_id) FROM final t WHERE {condition}"
        )
    return conditions, info


def _user_split(q: _Query, spec: SplitSpec, n: int, info: dict[str, Any]) -> dict[str, str]:
    """Disjoint users: ranked by md5(user_id) (then the id), the first test_fraction of
    them are test users, the next val_fraction val users."""
    users = q.one("SELECT count(DISTINCT user_id) FROM final")
    n_test = max(1, round(spec.test_fraction * users)) if spec.test_fraction else 0
    n_val = max(1, round(spec.val_fraction * users)) if spec.val_fraction else 0
    if n_test + n_val >= users:
        raise DataError(
            f"--split user: {users} users cannot give {n_test} test and {n_val} val users and "
            "keep any for training; lower --test-fraction/--val-fraction"
        )
    q.run(f"""
        CREATE TABLE user_groups AS
        SELECT user_id, CASE WHEN rank < {n_test} THEN 'test'
                             WHEN rank < {n_test + n_val} THEN 'val' ELSE 'train' END AS grp
        FROM (SELECT user_id, row_number() OVER (ORDER BY md5(user_id), user_id) - 1 AS rank
              FROM (SELECT DISTINCT user_id FROM final))""")
    info.update(val_fraction=spec.val_fraction, test_fraction=spec.test_fraction)
    info["assignment"] = "users ranked by md5(user_id); first test, then val, then train"

    def group(name: str) -> str:
        return f"t.user_id IN (SELECT user_id FROM user_groups WHERE grp = '{name}')"

    return {
        "train": f"t.input_index IS NOT NULL AND {group('train')}",
        "val": f"t.input_index = {n - 1} AND {group('val')}",
        "test": f"t.input_index = {n - 1} AND {group('test')}",
    }


def _temporal_split(q: _Query, spec: SplitSpec, info: dict[str, Any]) -> dict[str, str]:
    """One global test cutoff (and a val cutoff before it) on the targets' timestamps."""
    targets = "FROM final WHERE input_index IS NOT NULL"
    cutoff = spec.cutoff
    if cutoff is None and not spec.test_fraction:
        cutoff = q.one(f"SELECT max(timestamp) + 1 {targets}")  # nothing after it
    elif cutoff is None:
        cutoff = q.one(f"SELECT quantile_disc(timestamp, {1 - spec.test_fraction}) {targets}")
    val_cutoff = spec.val_cutoff
    if val_cutoff is None:
        before = q.one(f"SELECT count(*) {targets} AND timestamp < {cutoff}")
        share = spec.val_fraction * q.one(f"SELECT count(*) {targets}") / max(1, before)
        val_cutoff = q.one(
            f"SELECT coalesce(quantile_disc(timestamp, {max(0.0, 1 - share)}), {cutoff}) "
            f"{targets} AND timestamp < {cutoff}"
        )
    info.update(
        test_cutoff=int(cutoff),
        test_cutoff_utc=_utc(cutoff),
        val_cutoff=int(val_cutoff),
        val_cutoff_utc=_utc(val_cutoff),
        chosen_by="given" if spec.cutoff is not None else "quantile of the targets' timestamps",
        val_fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
    )
    return {
        "train": f"t.input_index IS NOT NULL AND t.timestamp < {val_cutoff}",
        "val": f"t.input_index IS NOT NULL AND t.timestamp >= {val_cutoff} "
        f"AND t.timestamp < {cutoff}",
        "test": f"t.input_index IS NOT NULL AND t.timestamp >= {cutoff}",
    }


def _utc(timestamp: int) -> str:
    """An Amazon Reviews 2023 timestamp (Unix milliseconds) as an ISO date-time."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(timestamp) / 1000, UTC).isoformat(timespec="seconds")


def parse_cutoff(text: str) -> int:
    """``--cutoff``: Unix milliseconds, or an ISO date (``2021-06-01``, taken as UTC)."""
    from datetime import UTC, datetime

    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(f"cutoff {text!r}: give a date (2021-06-01) or Unix milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- helpers


class _Query:
    """A DuckDB connection's ``execute`` that fully consumes each result (DuckDB 2 refuses
    new work while a result is pending) and names the failing statement."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.started = time.monotonic()

    def run(self, sql: str, reading: Path | None = None) -> None:
        try:
            self.con.execute(sql).fetchall()
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else ""
            if reading is not None:  # a truncated .gz, an unreadable file, ...
                raise DataError(
                    f"could not read it ({type(exc).__name__}: {reason}); check or "
                    "re-download the file",
                    file=str(reading),
                ) from exc
            raise DataError(f"DuckDB failed ({type(exc).__name__}: {exc}) running: {sql}") from exc

    def one(self, sql: str) -> Any:
        return self.con.execute(sql).fetchone()[0]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()


def _status_counts(q: _Query, table: str, path: Path) -> dict[str, Any]:
    """Records read and why each was dropped; malformed ones logged with first positions."""
    by_status = {
        (status or "kept"): count
        for status, count in q.rows(f"SELECT status, count(*) FROM {table} GROUP BY ALL ORDER BY 1")
    }
    malformed = {s: c for s, c in by_status.items() if s.startswith("malformed")}
    for status in malformed:
        first = [
            row[0] + 1
            for row in q.rows(
                f"SELECT rowid FROM {table} WHERE status = {_quote(status)} "
                f"ORDER BY rowid LIMIT {_SHOWN_PROBLEMS}"
            )
        ]
        logger.warning(
            "%s: %d records skipped, %s (first at records %s; blank lines not counted)",
            path,
            malformed[status],
            status,
            ", ".join(map(str, first)),
        )
    return {
        "records": sum(by_status.values()),
        "malformed": sum(malformed.values()),
        "by_status": by_status,
    }


def _counts(q: _Query, table: str) -> dict[str, int]:
    rows, users, items = q.rows(
        f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT asin) FROM {table}"
    )[0]
    return {"rows": rows, "users": users, "items": items}


def _greedy_duplicates(q: _Query, table: str, text_group: str, result: str) -> None:
    """Create table ``result(line)``: the rows DPL's per-user de-duplication drops.

    DPL walks each user's reviews newest first (file order on ties) and keeps a review
    unless an already *kept* review has its asin or its text. That is sequential (a review
    dropped for its text does not block its asin), so it runs in Python, but only on the
    rows sharing an asin or a text with another row of the same user: a row sharing neither
    is always kept and never blocks another."""
    import pyarrow as pa

    query = f"""
        SELECT user_id, asin, {text_group} AS text_group, line FROM (
            SELECT *, count(*) OVER (PARTITION BY user_id, asin) AS same_asin,
                      count(*) OVER (PARTITION BY user_id, {text_group}) AS same_text
            FROM {table})
        WHERE same_asin > 1 OR same_text > 1
        ORDER BY user_id, timestamp DESC, line"""
    dropped: list[int] = []
    reader = q.con.sql(query)
    user, seen_asins, seen_texts = None, set(), set()
    for batch in reader.to_arrow_reader(65536):
        columns = batch.to_pydict()
        for user_id, asin, group, line in zip(
            columns["user_id"],
            columns["asin"],
            columns["text_group"],
            columns["line"],
            strict=True,
        ):
            if user_id != user:
                user, seen_asins, seen_texts = user_id, set(), set()
            if asin in seen_asins or group in seen_texts:
                dropped.append(line)
            else:
                seen_asins.add(asin)
                seen_texts.add(group)
    q.con.register("_dropped_lines", pa.table({"line": pa.array(dropped, pa.int64())}))
    q.run(f"CREATE OR REPLACE TABLE {result} AS SELECT line FROM _dropped_lines")
    q.con.unregister("_dropped_lines")


def _review_struct(table: str) -> str:
    """A review as the loader reads it (the shared data's field order)."""
    fields = ("asin", "rating", "title", "text", "timestamp")
    return "{" + ", ".join(f"'{name}': {table}.{name}" for name in fields) + "}"


def _require(count: int, step: str, steps: dict[str, Any]) -> None:
    if not count:
        raise DataError(
            f"nobody survives the recipe: {step} leaves nothing (counts so far: "
            f"{json.dumps(steps)}); check that the reviews and meta files belong to the same "
            "category, or loosen the thresholds (see dep-eval build-benchmark --help)"
        )


def _log_step(q: _Query, step: str, counts: dict[str, Any]) -> None:
    logger.info("%s (%.1f s): %s", step, time.monotonic() - q.started, json.dumps(counts))


def _line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _describe_file(path: Path, name: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _versions() -> dict[str, str]:
    import duckdb

    try:
        dep_eval_version = importlib_metadata.version("dep-eval")
    except importlib_metadata.PackageNotFoundError:
        from dep_eval import __version__ as dep_eval_version
    return {"dep-eval": dep_eval_version, "duckdb": duckdb.__version__}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- hub


def hub_filenames(category: str) -> tuple[str, str]:
    """The raw files of a category in the McAuley-Lab/Amazon-Reviews-2023 dataset repo."""
    return (
        f"raw/review_categories/{category}.jsonl",
        f"raw/meta_categories/meta_{category}.jsonl",
    )


def download_raw(
    category: str,
    repo: str = HUB_REPO,
    cache_dir: str | os.PathLike[str] | None = None,
    download: Callable[..., str] | None = None,
) -> tuple[Path, Path]:
    """Fetch a category's raw review and meta files (plain downloads, no remote code)."""
    if download is None:
        from huggingface_hub import hf_hub_download as download
    paths = []
    for filename in hub_filenames(category):
        try:
            paths.append(
                Path(
                    download(
                        repo_id=repo, filename=filename, repo_type="dataset", cache_dir=cache_dir
                    )
                )
            )
        except Exception as exc:  # network, unknown category, ...: say what was asked
            raise DataError(
                f"could not download {filename} from the dataset repo {repo} "
                f"({type(exc).__name__}: {exc}); check the category name (e.g. Video_Games) "
                "or download the raw files yourself and pass --reviews/--meta"
            ) from exc
    return paths[0], paths[1]


# --------------------------------------------------------------------------- command line

_RECIPE_HELP = {
    "min_description_chars": "step 1: an item's description (joined, a leading 'Product "
    "Description' element dropped) has at least this many characters",
    "max_description_chars": "step 1: ... and at most this many",
    "min_review_chars": "step 2: a review's raw text has at least this many characters",
    "min_item_users": "step 3: an item keeps at least this many users (repeated to a fixed point)",
    "min_user_reviews": "step 3: a user keeps at least this many de-duplicated reviews",
    "max_user_reviews": "step 3: ... and at most this many",
    "inputs_per_user": "step 4: a user's last N reviews are the targets (N-2 train, 1 val, "
    "1 test), the earlier ones the profile",
    "min_profile_item_users": "step 5: a profile review is kept only if its item has at least "
    "this many profile users (repeated to a fixed point)",
    "min_profile_reviews": "step 5: a user keeps at least this many profile reviews",
}

BUILD_EPILOG = """examples:
  dep-eval build-benchmark --reviews raw/review_categories/Video_Games.jsonl.gz \\
      --meta raw/meta_categories/meta_Video_Games.jsonl.gz --category Video_Games --output data/
  dep-eval build-benchmark --from-hub McAuley-Lab/Amazon-Reviews-2023 --category Video_Games \\
      --output data/
  dep-eval build-benchmark --reviews ... --meta ... --category Video_Games --output data-users/ \\
      --split user --test-fraction 0.1 --val-fraction 0.1
  dep-eval build-benchmark --reviews ... --meta ... --category Video_Games --output data-time/ \\
      --split temporal --cutoff 2021-01-01
  lm_eval --model nonperso --tasks amazon_review_personalized_custom \\
      --metadata '{"data_dir": "data", "category": "Video_Games"}'
"""


def add_build_parser(subparsers: Any) -> Any:
    import argparse

    parser = subparsers.add_parser(
        "build-benchmark",
        help="build the benchmark of any Amazon Reviews 2023 category from its raw files",
        description="Build <OUTPUT>/<CATEGORY>/{train,val,test,meta}.jsonl and manifest.json "
        "from raw Amazon Reviews 2023 files (JSON lines, plain or .gz) with DPL's recipe "
        "(steps 1-7; every threshold below, DPL's value as default). Out of core (DuckDB), "
        "deterministic, written atomically.",
        epilog=BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reviews", type=Path, help="raw review file, e.g. Video_Games.jsonl.gz")
    parser.add_argument("--meta", type=Path, help="raw meta file, e.g. meta_Video_Games.jsonl.gz")
    parser.add_argument(
        "--from-hub",
        metavar="REPO",
        help=f"download both raw files of CATEGORY from this dataset repo (e.g. {HUB_REPO}) "
        "with huggingface_hub (plain file downloads, no remote code) instead of "
        "--reviews/--meta",
    )
    parser.add_argument("--category", required=True, help="category name, e.g. Video_Games")
    parser.add_argument("--output", type=Path, required=True, help="data folder (created)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT/CATEGORY if it exists"
    )
    defaults = Recipe()
    for name, text in _RECIPE_HELP.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            help=f"{text} (default: {getattr(defaults, name)})",
        )
    engine = EngineSettings()
    parser.add_argument(
        "--memory-limit",
        default=engine.memory_limit,
        help="DuckDB's memory limit; beyond it, work spills to disk (default: "
        f"{engine.memory_limit}; raise it for speed on big categories)",
    )
    parser.add_argument(
        "--threads", type=int, default=engine.threads, help=f"default: {engine.threads}"
    )
    parser.add_argument(
        "--temp-dir",
        type=Path,
        help="work database and spill files (default: a temporary folder inside OUTPUT)",
    )
    add_split_arguments(parser)
    parser.set_defaults(handler=run_build)
    return parser


def add_split_arguments(parser: Any) -> None:
    defaults = SplitSpec()
    group = parser.add_argument_group("splits (step 6)")
    group.add_argument(
        "--split",
        choices=SPLIT_KINDS,
        default=defaults.kind,
        help="leave-last-out: DPL's (each user's last target is test, the one before val); "
        "user: disjoint train/val/test users (a val/test user has one row, its last review); "
        "temporal: one global cutoff date, train targets before it, test after "
        f"(default: {defaults.kind})",
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="user: share of users in val; temporal: share of the targets before the test "
        f"cutoff that fall after the val cutoff (default: {defaults.val_fraction})",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help="user: share of users in test; temporal: share of all targets at or after the "
        f"cutoff, when --cutoff is not given (default: {defaults.test_fraction})",
    )
    group.add_argument(
        "--cutoff",
        help="temporal: the test cutoff, a date (2021-06-01, UTC) or Unix milliseconds",
    )
    group.add_argument(
        "--val-cutoff", help="temporal: the val cutoff (default: from --val-fraction)"
    )


def _split_spec(args: Any) -> SplitSpec:
    return SplitSpec(
        kind=args.split,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        cutoff=parse_cutoff(args.cutoff) if args.cutoff else None,
        val_cutoff=parse_cutoff(args.val_cutoff) if args.val_cutoff else None,
    )


def run_build(args: Any) -> None:
    if args.from_hub and (args.reviews or args.meta):
        raise SystemExit("build-benchmark: give either --from-hub or --reviews/--meta, not both")
    if not args.from_hub and not (args.reviews and args.meta):
        raise SystemExit("build-benchmark: give --reviews and --meta (or --from-hub REPO)")
    recipe = Recipe(**{name: getattr(args, name) for name in _RECIPE_HELP})
    engine = EngineSettings(args.memory_limit, args.threads, args.temp_dir)
    try:
        split = _split_spec(args)
        split.check()
        names = None
        reviews, meta = args.reviews, args.meta
        if args.from_hub:
            reviews, meta = download_raw(args.category, repo=args.from_hub)
            names = tuple(f"hub:{args.from_hub}/{name}" for name in hub_filenames(args.category))
        folder = build_benchmark(
            reviews,
            meta,
            args.category,
            args.output,
            recipe,
            engine,
            overwrite=args.overwrite,
            input_names=names,
            split=split,
        )
    except DataError as exc:
        raise SystemExit(f"build-benchmark: {exc}") from exc
    logger.info("wrote %s (manifest.json says what it holds)", folder)

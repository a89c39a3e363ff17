"""``dep-eval build-benchmark``: DPL's recipe on small raw-format files the tests write.

Each step has a hand-checked case (the fixed points of steps 3 and 5 included); a seeded
random world full of duplicates, ties and whitespace variants is compared with a plain-Python
reading of the recipe written here (``reference_build``); the rest covers malformed lines,
.gz input, determinism, the empty result, the command line, the hub path (download mocked)
and one real ``lm_eval`` run on a built folder.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dep_eval.data import loaders
from dep_eval.data.build import PY_WHITESPACE, EngineSettings, Recipe, build_benchmark
from dep_eval.data.parsing import DataError

ENGINE = EngineSettings(memory_limit="1GB", threads=1)
# Small thresholds keep hand-checked cases small; the defaults are DPL's.
SMALL = Recipe(
    min_description_chars=10,
    max_description_chars=50,
    min_review_chars=20,
    min_item_users=2,
    min_user_reviews=4,
    max_user_reviews=6,
    inputs_per_user=3,
    min_profile_item_users=2,
    min_profile_reviews=1,
)


# --------------------------------------------------------------------------- raw records


def review(user: str, item: str, ts: int, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """A raw review in the Amazon Reviews 2023 schema."""
    if text is None:
        text = f"{user} on {item} at {ts}: " + "lovely product, works well. " * 8
    return {
        "rating": 4.0,
        "title": f"title {user} {item}",
        "text": text,
        "images": [],
        "asin": f"{item}-variant",
        "parent_asin": item,
        "user_id": user,
        "timestamp": ts,
        "helpful_vote": 0,
        "verified_purchase": True,
        **fields,
    }


def meta(item: str, description: Any = None, **fields: Any) -> dict[str, Any]:
    """A raw meta row in the Amazon Reviews 2023 schema."""
    return {
        "main_category": "Toys",
        "title": f"Item {item}",
        "average_rating": 4.2,
        "rating_number": 12,
        "features": ["a feature"],
        "description": [f"Description of {item}. " * 6] if description is None else description,
        "price": None,
        "images": [],
        "videos": [],
        "store": "Shop",
        "categories": ["Toys", "Games"],
        "details": {},
        "parent_asin": item,
        "bought_together": None,
        **fields,
    }


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, (str, bytes)) else json.dumps(r) for r in records]
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def base_world(users: int = 10, items: int = 20) -> tuple[list[dict], list[dict]]:
    """Every user reviews every item, item i at time 1000 + i: all survive DPL's defaults
    (20 reviews a user, 10 users an item, profile items I0..I9 with 10 profile users)."""
    reviews = [review(f"U{u}", f"I{i}", 1000 + i) for u in range(users) for i in range(items)]
    return reviews, [meta(f"I{i}") for i in range(items)]


def build(
    tmp_path: Path,
    reviews: list[Any],
    metas: list[Any],
    recipe: Recipe | None = None,
    name: str = "out",
    suffix: str = ".jsonl",
    **kwargs: Any,
) -> Path:
    raw = tmp_path / f"raw-{name}"
    raw.mkdir(exist_ok=True)
    r = write_jsonl(raw / f"reviews{suffix}", reviews)
    m = write_jsonl(raw / f"meta{suffix}", metas)
    return build_benchmark(r, m, "Cat", tmp_path / name, recipe, ENGINE, **kwargs)


def read_rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# --------------------------------------------------------------------------- the reference


def _greedy(reviews: list[dict]) -> list[dict]:
    """DPL's per-user de-duplication: newest first (stable), skip a seen asin or text."""
    seen_asins: set[str] = set()
    seen_texts: set[str] = set()
    kept = []
    for r in sorted(reviews, key=lambda r: r["timestamp"], reverse=True):
        if r["asin"] not in seen_asins and r["text"] not in seen_texts:
            seen_asins.add(r["asin"])
            seen_texts.add(r["text"])
            kept.append(r)
    return kept


def reference_build(reviews: list[dict], metas: list[dict], rc: Recipe) -> dict[str, list]:
    """The recipe read literally, in memory, for small well-formed inputs."""

    def description(d: list[str]) -> str:
        return " ".join(d[1:] if d and d[0] == "Product Description" else d)

    items: dict[str, dict] = {}  # asin -> the first row passing step 1, in file order
    for m in metas:  # step 1
        d = description(m["description"] or [])
        if (
            rc.min_description_chars <= len(d) <= rc.max_description_chars
            and m["title"]
            and m["categories"]
            and m["rating_number"]
        ):
            items.setdefault(m["parent_asin"], {"title": m["title"], "description": d})
    rows = [  # step 2 (file order is the list order)
        {k: r[k] for k in ("user_id", "title", "text", "rating", "timestamp")}
        | {"asin": r["parent_asin"]}
        for r in reviews
        if r["text"]
        and len(r["text"]) >= rc.min_review_chars
        and r["rating"]
        and r["title"]
        and r["timestamp"]
        and r["parent_asin"] in items
    ]
    while True:  # step 3
        by_user: dict[str, list[dict]] = defaultdict(list)
        item_users: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            by_user[r["user_id"]].append(r)
            item_users[r["asin"]].add(r["user_id"])
        counts = {u: len(_greedy(rs)) for u, rs in by_user.items()}
        new = [
            r
            for r in rows
            if len(item_users[r["asin"]]) >= rc.min_item_users
            and rc.min_user_reviews <= counts[r["user_id"]] <= rc.max_user_reviews
        ]
        if len(new) == len(rows):
            break
        rows = new
    meta_items = {r["asin"] for r in rows}
    histories: dict[str, list[dict]] = {}  # step 4, users in order of first review
    for r in rows:
        histories.setdefault(r["user_id"], []).append(
            r | {"text": re.sub(r"\s+", " ", r["text"].strip())}
        )
    split: dict[str, tuple[list[dict], list[dict]]] = {}
    for user, rs in histories.items():
        kept = sorted((r for r in _greedy(rs) if r["text"]), key=lambda r: r["timestamp"])
        n = rc.inputs_per_user
        split[user] = (kept[:-n] if len(kept) > n else [], kept[-n:])
    while True:  # step 5
        users_of: dict[str, set[str]] = defaultdict(set)
        for user, (profile, _) in split.items():
            for r in profile:
                users_of[r["asin"]].add(user)
        new_split = {}
        for user, (profile, inputs) in split.items():
            profile = [r for r in profile if len(users_of[r["asin"]]) >= rc.min_profile_item_users]
            if len(profile) >= rc.min_profile_reviews:
                new_split[user] = (profile, inputs)
        done = len(new_split) == len(split)
        split = new_split
        if done:
            break

    def out(r: dict) -> dict:
        return {k: r[k] for k in ("asin", "rating", "title", "text", "timestamp")}

    result: dict[str, list] = {"train": [], "val": [], "test": []}
    for user, (profile, inputs) in split.items():  # step 6
        for i, target in enumerate(inputs):
            name = "test" if i == len(inputs) - 1 else "val" if i == len(inputs) - 2 else "train"
            history = [out(r) for r in profile + inputs[:i]]
            result[name].append(
                {"user_id": user, "category": "Cat", "profile": history, "data": out(target)}
            )
    for name in ("train", "val", "test"):  # DPL writes train rows user by user
        order = {u: k for k, u in enumerate(split)}
        result[name].sort(key=lambda row: order[row["user_id"]])
    result["meta"] = [{"asin": a, **item} for a, item in items.items() if a in meta_items]
    return result


def random_world(seed: int) -> tuple[list[dict], list[dict]]:
    """Skewed users and items, duplicates by asin and by text, whitespace variants, time
    ties, short texts and descriptions, a repeated meta row."""
    rng = random.Random(seed)
    texts = [f"text {k} " + "words " * rng.randint(0, 6) for k in range(14)]
    reviews = []
    for _ in range(400):
        user = f"U{min(rng.randint(0, 14), rng.randint(0, 30))}"
        item = f"I{min(rng.randint(0, 15), rng.randint(0, 15))}"
        text = rng.choice(texts)
        if rng.random() < 0.3:  # the same text once whitespace is normalised
            text = "  " + text.replace(" ", rng.choice([" \u00a0", "\n", "\t "])) + "\u2003"
        rating = float(rng.randint(1, 5))
        reviews.append(review(user, item, rng.randint(1, 40), text, rating=rating))
    metas = [
        meta(f"I{i}", [rng.choice(["Product Description", "x"]), "d" * rng.randint(5, 60)])
        for i in range(16)
    ]
    metas.append(meta("I3", ["another description, first row wins"]))
    return reviews, metas


RANDOM_RECIPE = Recipe(
    min_description_chars=10,
    max_description_chars=50,
    min_review_chars=12,
    min_item_users=4,
    min_user_reviews=6,
    max_user_reviews=10,
    inputs_per_user=4,
    min_profile_item_users=3,
    min_profile_reviews=2,
)


# --------------------------------------------------------------------------- tests


def test_whitespace_class_is_pythons() -> None:
    import duckdb

    spaces = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    assert re.fullmatch(r"\s+", spaces)
    con = duckdb.connect()
    probe = "".join(chr(c) for c in range(0x3100)) + spaces  # every candidate below U+3100
    ours = con.execute(f"SELECT regexp_replace(?, '{PY_WHITESPACE}', '', 'g')", [probe])
    assert ours.fetchone()[0] == "".join(c for c in probe if not c.isspace())


def test_builds_the_base_world_with_dpl_defaults(tmp_path: Path) -> None:
    folder = build(tmp_path, *base_world())
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "meta.jsonl",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    train, val, test = (read_rows(folder, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    # Step 6: input[i] of a user is item I(10 + i); its profile is everything before it.
    first = [row for row in train if row["user_id"] == "U0"]
    assert [row["data"]["asin"] for row in first] == [f"I{10 + i}" for i in range(8)]
    assert [len(row["profile"]) for row in first] == list(range(10, 18))
    assert val[0]["data"]["asin"] == "I18" and len(val[0]["profile"]) == 18
    assert test[0]["data"]["asin"] == "I19" and len(test[0]["profile"]) == 19
    assert [r["asin"] for r in test[0]["profile"]] == [f"I{i}" for i in range(19)]
    assert [row["user_id"] for row in test] == [f"U{u}" for u in range(10)]  # file order
    assert test[0]["data"] == {
        "asin": "I19",
        "rating": 4.0,
        "title": "title U0 I19",
        "text": review("U0", "I19", 1019)["text"].strip(),
        "timestamp": 1019,
    }
    assert set(test[0]) == {"user_id", "category", "profile", "data"}
    # The project's own loader reads it, with its strict local checks.
    source = loaders.local_source(folder.parent)
    loaders.clear_caches()
    assert len(loaders.load_split(source, "Cat", "train")) == 80
    assert len(loaders.load_items(source, "Cat")) == 20
    steps = manifest(folder)["steps"]
    assert steps["step3_core"]["rounds"] == [{"rows": 200, "users": 10, "items": 20}]
    assert steps["step6_splits"] == {
        "train_rows": 80,
        "val_rows": 10,
        "test_rows": 10,
        "meta_rows": 20,
    }


def test_step1_items(tmp_path: Path) -> None:
    reviews, metas = base_world()
    edge = {  # item -> (meta fields, kept?, description written)
        "E100": ({"description": ["x" * 100]}, True),
        "E099": ({"description": ["x" * 99]}, False),
        "E2000": ({"description": ["x" * 2000]}, True),
        "E2001": ({"description": ["x" * 2001]}, False),
        "EJOIN": ({"description": ["a" * 50, "b" * 49]}, True),  # 50 + space + 49
        "EPD": ({"description": ["Product Description", "p" * 100]}, True),
        "EPDONLY": ({"description": ["Product Description"]}, False),
        "EPDLATE": ({"description": ["q" * 80, "Product Description"]}, True),  # 100 chars
        "ENOTITLE": ({"title": ""}, False),
        "ENOCAT": ({"categories": []}, False),
        "ENORATING": ({"rating_number": 0}, False),
        "ENULLRATING": ({"rating_number": None}, False),
    }
    metas += [meta(item, **fields) for item, (fields, _) in edge.items()]
    metas.append(meta("E100", ["a later, different row for the same item " * 3]))
    # Every user reviews every edge item early on, so each kept one survives every step.
    reviews += [review(f"U{u}", item, 100 + k) for u in range(10) for k, item in enumerate(edge)]
    folder = build(tmp_path, reviews, metas)
    items = {m["asin"]: m for m in read_rows(folder, "meta")}
    assert set(items) == {f"I{i}" for i in range(20)} | {i for i, (_, ok) in edge.items() if ok}
    assert items["EJOIN"]["description"] == "a" * 50 + " " + "b" * 49
    assert items["EPD"]["description"] == "p" * 100
    assert items["EPDLATE"]["description"] == "q" * 80 + " Product Description"
    assert items["E100"]["description"] == "x" * 100  # the first row of a repeated asin
    step1 = manifest(folder)["steps"]["step1_items"]
    assert step1["by_status"] == {
        "description length out of range": 3,
        "kept": 26,
        "no categories": 1,
        "no rating_number": 2,
        "no title": 1,
    }
    assert step1["duplicate_parent_asin_dropped"] == 1 and step1["items"] == 25


def test_step2_reviews(tmp_path: Path) -> None:
    reviews, metas = base_world()
    long_enough = "e\u0301" + "a" * 198  # 200 code points, 199 graphemes: kept (len() counts)
    extra = [
        review("U0", "I0", 10, "a" * 199),
        review("U0", "I0", 11, "a" * 200),
        review("U0", "I0", 12, long_enough),
        review("U0", "I0", 13, rating=0.0),
        review("U0", "I0", 14, title=""),
        review("U0", "I0", 0),
        review("U0", "NOMETA", 15),
        review("U0", "I0", 16, rating=5),  # an int rating is a rating
    ]
    folder = build(tmp_path, reviews + extra, metas)
    step2 = manifest(folder)["steps"]["step2_reviews"]
    assert step2["by_status"] == {
        "kept": 204,
        "no rating": 1,
        "no timestamp": 1,
        "no title": 1,
        "text too short": 1,
    }
    assert step2["item_not_kept_in_step1"] == 1
    assert step2["rows"] == 203 and step2["items"] == 20
    # The older extra reviews of I0 are duplicates by asin: step 4 keeps the newest (1000).
    test = read_rows(folder, "test")
    assert [r["timestamp"] for r in test[0]["profile"]][:1] == [1000]


def test_step3_rounds_to_a_fixed_point(tmp_path: Path) -> None:
    """min_item_users=2, 4-6 reviews a user. Round 1: Z has one user (A) and E has 7
    reviews; both go. Round 2: A is left with P, Q, R (3 < 4) and goes. Round 3: P, Q, R
    each lose A, R is left with B alone and goes. Round 4: B has 3 reviews and goes, which
    leaves P and Q with C and D only. Round 5: nothing changes."""
    rc = Recipe(**{**SMALL.__dict__, "min_review_chars": 10})
    reviews = [review("A", item, ts) for ts, item in enumerate(["Z", "P", "Q", "R"], 1)]
    reviews += [review("B", item, ts) for ts, item in enumerate(["P", "Q", "R", "S"], 1)]
    reviews += [review(u, item, ts) for u in "CD" for ts, item in enumerate("PQST", 1)]
    reviews += [review("E", item, ts) for ts, item in enumerate("PQSTVWX", 1)]
    metas = [meta(i, ["d" * 20]) for i in "ZPQRSTVWX"]
    folder = build(tmp_path, reviews, metas, rc)
    rounds = manifest(folder)["steps"]["step3_core"]["rounds"]
    assert rounds == [
        {"rows": 15, "users": 4, "items": 5},  # A: P Q R; B: P Q R S; C, D: P Q S T
        {"rows": 12, "users": 3, "items": 5},
        {"rows": 11, "users": 3, "items": 4},
        {"rows": 8, "users": 2, "items": 4},
        {"rows": 8, "users": 2, "items": 4},
    ]
    # E's 7 reviews fell to 4 in the same round its items went: a cap is applied per round,
    # never revisited (E would fit a "core" of 4-6 reviews on P Q S T).
    assert {row["user_id"] for row in read_rows(folder, "test")} == {"C", "D"}
    assert {m["asin"] for m in read_rows(folder, "meta")} == set("PQST")


def test_dedup_is_greedy_newest_first(tmp_path: Path) -> None:
    """Newest first: (A, x) kept; (A, y) dropped, same asin; (B, y) kept: the dropped
    review did not claim its text; (C, x) dropped, same text. Ties keep file order."""
    rc = Recipe(
        **{
            **SMALL.__dict__,
            "min_review_chars": 5,
            "min_user_reviews": 5,
            "min_profile_item_users": 1,
        }
    )
    x, y = "the x text, long enough", "the y text, long enough"
    mine = [
        review("M", "A", 90, x),
        review("M", "A", 80, y),
        review("M", "B", 70, y),
        review("M", "C", 60, x),
        review("M", "D", 50, "tie one, first in the file"),
        review("M", "D", 50, "tie two, second in the file"),
        review("M", "E", 40),
        review("M", "F", 30),
    ]  # greedy keeps A B D E F: 5 reviews, enough; "first of asin and of text" keeps 4
    others = [review(u, i, 5) for u in ("N", "O") for i in "ABCDEF"]
    metas = [meta(i, ["d" * 20]) for i in "ABCDEF"]
    folder = build(tmp_path, mine + others, metas, rc)
    test = {row["user_id"]: row for row in read_rows(folder, "test")}
    history = test["M"]["profile"] + [test["M"]["data"]]
    assert [(r["asin"], r["timestamp"]) for r in history] == [
        ("F", 30),
        ("E", 40),
        ("D", 50),
        ("B", 70),
        ("A", 90),
    ]
    assert history[2]["text"] == "tie one, first in the file"
    assert history[3]["text"] == y and history[4]["text"] == x


def test_step3_counts_item_users_before_dedup_and_step4_on_normalised_text(
    tmp_path: Path,
) -> None:
    """Item K's second user (N) reviewed it with the text of a newer review: step 3 still
    counts N for K (as DPL does; K stays in meta), and step 4 drops that review. Texts that
    differ only in whitespace are one text in step 4, two in step 3."""
    rc = Recipe(**{**SMALL.__dict__, "min_review_chars": 5, "min_profile_item_users": 1})
    same = "same words here, and more"
    users = {
        "M": [("A", 1, None), ("B", 2, None), ("C", 3, None), ("K", 4, None), ("D", 5, None)],
        "N": [("K", 1, same), ("A", 2, None), ("B", 3, None), ("C", 4, None), ("D", 5, same)],
        "O": [
            ("A", 1, None),
            ("B", 2, " same\n words  here,\u00a0and more"),
            ("C", 3, None),
            ("D", 4, None),
            ("E", 5, same),
        ],
    }
    reviews = [review(u, i, ts, t) for u, rs in users.items() for i, ts, t in rs]
    reviews += [review(u, "E", 9) for u in ("M", "N")]
    metas = [meta(i, ["d" * 20]) for i in "ABCDEK"]
    folder = build(tmp_path, reviews, metas, rc)
    assert "K" in {m["asin"] for m in read_rows(folder, "meta")}
    test = {row["user_id"]: row for row in read_rows(folder, "test")}
    n_history = [r["asin"] for r in test["N"]["profile"]] + [test["N"]["data"]["asin"]]
    assert n_history == ["A", "B", "C", "D", "E"]  # K dropped in step 4, not in step 3
    o_history = [r["asin"] for r in test["O"]["profile"]] + [test["O"]["data"]["asin"]]
    assert o_history == ["A", "C", "D", "E"]  # B's text equals E's once normalised
    assert manifest(folder)["steps"]["step4_normalise_split"]["duplicates_dropped"] == 2


def test_step5_rounds_to_a_fixed_point(tmp_path: Path) -> None:
    """Profiles (3 inputs a user, profile items need 2 profile users, users 2 profile
    reviews): A: X Y, B: X Z, C: Y W W2. Round 1: Z and W, W2 have one profile user; B and C
    keep one review and go. Round 2: X and Y are left with A alone; A goes. Nobody is left:
    a clear error. With min_profile_reviews=1 round 1 keeps all three users and stops."""
    rc = Recipe(
        **{
            **SMALL.__dict__,
            "min_review_chars": 5,
            "min_item_users": 1,
            "min_user_reviews": 1,
            "max_user_reviews": 99,
            "min_profile_reviews": 2,
        }
    )
    profiles = {"A": "XY", "B": "XZ", "C": ["Y", "W", "W2"]}
    reviews = []
    for user, items in profiles.items():
        reviews += [review(user, i, ts) for ts, i in enumerate(items, 1)]
        reviews += [review(user, f"T{k}", 50 + k) for k in range(3)]
    metas = [meta(i, ["d" * 20]) for i in ["X", "Y", "Z", "W", "W2", "T0", "T1", "T2"]]
    with pytest.raises(DataError, match=r"nobody survives.*step 5"):
        build(tmp_path, reviews, metas, rc)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # nothing half-written
    rc1 = Recipe(**{**rc.__dict__, "min_profile_reviews": 1})
    folder = build(tmp_path, reviews, metas, rc1, name="out1")
    step5 = manifest(folder)["steps"]["step5_profile_core"]
    assert step5["rounds"] == [{"rows": 4, "users": 3, "items": 2}]
    test = {
        row["user_id"]: [r["asin"] for r in row["profile"]] for row in read_rows(folder, "test")
    }
    assert test == {"A": ["X", "Y", "T0", "T1"], "B": ["X", "T0", "T1"], "C": ["Y", "T0", "T1"]}


def test_step5_iterates_until_no_user_is_dropped(tmp_path: Path) -> None:
    rc = Recipe(
        **{
            **SMALL.__dict__,
            "min_review_chars": 5,
            "min_item_users": 1,
            "min_user_reviews": 1,
            "max_user_reviews": 99,
            "min_profile_reviews": 2,
        }
    )
    profiles = {"A": "XYV", "B": "XYV", "C": "XQ", "D": "QR"}
    reviews = []
    for user, items in profiles.items():
        reviews += [review(user, i, ts) for ts, i in enumerate(items, 1)]
        reviews += [review(user, f"T{k}", 50 + k) for k in range(3)]
    metas = [meta(i, ["d" * 20]) for i in "XYVQRT"] + [meta(f"T{k}", ["d" * 20]) for k in range(3)]
    # Round 1: R has one profile user: D keeps Q alone and goes. Round 2: Q is left with C
    # alone: C keeps X alone and goes. Round 3: A and B keep X Y V: no user dropped.
    folder = build(tmp_path, reviews, metas, rc)
    rounds = manifest(folder)["steps"]["step5_profile_core"]["rounds"]
    assert [r["users"] for r in rounds] == [3, 2, 2]
    assert [r["rows"] for r in rounds] == [8, 6, 6]
    assert {row["user_id"] for row in read_rows(folder, "test")} == {"A", "B"}


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_matches_the_reference_on_a_random_world(tmp_path: Path, seed: int) -> None:
    reviews, metas = random_world(seed)
    rc = RANDOM_RECIPE
    expected = reference_build(reviews, metas, rc)
    assert expected["test"], "the random world should keep someone"
    folder = build(tmp_path, reviews, metas, rc)
    for name, rows in expected.items():
        assert read_rows(folder, name) == rows, name


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path, caplog: Any) -> None:
    reviews, metas = base_world()
    bad = [
        '{"user_id": "U0", "text": "cut off',
        "[1, 2, 3]",
        b'{"user_id": "U0", "text": "\xff\xfe"}',
        json.dumps({k: v for k, v in review("U0", "I0", 1).items() if k != "text"}),
        json.dumps(review("U0", "I0", 2, rating="five")),
        json.dumps(review("U0", "I0", 3.5)),
        json.dumps(review("", "I0", 4)),
        "",
    ]
    metas_bad = metas + [
        "{oops",
        json.dumps(meta("I0", description="not a list")),
        json.dumps(meta("I1", description=["ok", 3])),
    ]
    with caplog.at_level(logging.WARNING, logger="dep_eval.data.build"):
        folder = build(tmp_path, reviews[:7] + bad + reviews[7:], metas_bad)
    step2 = manifest(folder)["steps"]["step2_reviews"]
    assert step2["records"] == 207 and step2["malformed"] == 7  # the blank line is no record
    assert step2["by_status"] == {
        "kept": 200,
        "malformed: empty user_id": 1,
        "malformed: missing text": 1,
        "malformed: not a JSON object": 3,
        "malformed: wrong type rating": 1,
        "malformed: wrong type timestamp": 1,
    }
    step1 = manifest(folder)["steps"]["step1_items"]
    assert step1["malformed"] == 3 and step1["by_status"]["malformed: wrong type description"] == 2
    assert (
        "3 records skipped, malformed: not a JSON object (first at records 8, 9, 10" in caplog.text
    )
    assert len(read_rows(folder, "test")) == 10


def test_gz_and_plain_build_the_same_bytes_and_reruns_are_identical(tmp_path: Path) -> None:
    reviews, metas = random_world(5)
    rc = RANDOM_RECIPE
    plain = build(tmp_path, reviews, metas, rc, name="plain")
    again = build(tmp_path, reviews, metas, rc, name="again")
    gz = build(tmp_path, reviews, metas, rc, name="gz", suffix=".jsonl.gz")
    two = build_benchmark(
        tmp_path / "raw-plain" / "reviews.jsonl",
        tmp_path / "raw-plain" / "meta.jsonl",
        "Cat",
        tmp_path / "threads",
        rc,
        EngineSettings("1GB", 2),
    )
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "meta.jsonl", "manifest.json"):
        assert (plain / name).read_bytes() == (again / name).read_bytes(), name
        assert (plain / name).read_bytes() == (two / name).read_bytes(), name
        if name != "manifest.json":  # which names the inputs
            assert (plain / name).read_bytes() == (gz / name).read_bytes(), name
    inputs = manifest(gz)["inputs"]
    assert inputs["reviews"]["name"] == "reviews.jsonl.gz"
    assert inputs["reviews"]["bytes"] == (tmp_path / "raw-gz" / "reviews.jsonl.gz").stat().st_size


def test_rows_written_in_slices_are_the_same_bytes(tmp_path: Path, monkeypatch: Any) -> None:
    from dep_eval.data import build as build_module

    reviews, metas = random_world(5)
    whole = build(tmp_path, reviews, metas, RANDOM_RECIPE, name="whole")
    monkeypatch.setattr(build_module, "_COPIES_PER_SLICE", 40)  # a slice per user or two
    sliced = build(tmp_path, reviews, metas, RANDOM_RECIPE, name="sliced")
    assert len(read_rows(whole, "test")) > 5
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "meta.jsonl", "manifest.json"):
        assert (whole / name).read_bytes() == (sliced / name).read_bytes(), name
    assert not list(sliced.glob(".part*"))


def test_empty_result_is_a_clear_error(tmp_path: Path) -> None:
    reviews, _ = base_world()
    metas = [meta(f"I{i}", ["too short"]) for i in range(20)]
    with pytest.raises(DataError, match=r"nobody survives the recipe: step 1"):
        build(tmp_path, reviews, metas)
    assert list((tmp_path / "out").iterdir()) == []
    few = [r for r in reviews if r["user_id"] == "U0"]
    with pytest.raises(DataError, match=r"nobody survives the recipe: step 3"):
        build(tmp_path, few, base_world()[1], name="few")


def test_a_truncated_gz_is_a_clear_error(tmp_path: Path) -> None:
    reviews, metas = base_world()
    raw = tmp_path / "raw"
    raw.mkdir()
    whole = write_jsonl(raw / "reviews.jsonl.gz", reviews).read_bytes()
    (raw / "reviews.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    m = write_jsonl(raw / "meta.jsonl", metas)
    with pytest.raises(DataError, match=r"reviews.jsonl.gz: could not read it .*GZIP"):
        build_benchmark(raw / "reviews.jsonl.gz", m, "Cat", tmp_path / "out", None, ENGINE)
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_folder_needs_overwrite(tmp_path: Path) -> None:
    reviews, metas = base_world()
    folder = build(tmp_path, reviews, metas)
    (folder / "stale.txt").write_text("from an older build")
    with pytest.raises(DataError, match="already exists; remove it or pass --overwrite"):
        build(tmp_path, reviews, metas)
    folder = build(tmp_path, reviews, metas, overwrite=True)
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["Cat"]


def test_cli_builds_and_the_loader_logs_the_manifest(tmp_path: Path, caplog: Any) -> None:
    from dep_eval import cli

    reviews, metas = base_world()
    r = write_jsonl(tmp_path / "reviews.jsonl.gz", reviews)
    m = write_jsonl(tmp_path / "meta.jsonl.gz", metas)
    out = tmp_path / "data"
    cli.main(
        [
            "build-benchmark",
            "--reviews",
            str(r),
            "--meta",
            str(m),
            "--category",
            "Cat",
            "--output",
            str(out),
            "--threads",
            "1",
            "--min-profile-reviews",
            "9",
        ]
    )
    assert manifest(out / "Cat")["recipe"]["min_profile_reviews"] == 9
    loaders.clear_caches()
    with caplog.at_level(logging.INFO, logger="dep_eval.data.loaders"):
        loaders.load_items(loaders.local_source(out), "Cat")
    assert "built by dep-eval" in caplog.text and "reviews.jsonl.gz (sha256" in caplog.text
    assert "10 users, 80/10/10 train/val/test rows" in caplog.text
    with pytest.raises(SystemExit, match="either --from-hub or --reviews"):
        cli.main(
            [
                "build-benchmark",
                "--from-hub",
                "X/Y",
                "--reviews",
                str(r),
                "--meta",
                str(m),
                "--category",
                "Cat",
                "--output",
                str(out),
            ]
        )
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(
            [
                "build-benchmark",
                "--reviews",
                str(r),
                "--meta",
                str(m),
                "--category",
                "Cat",
                "--output",
                str(out),
            ]
        )


def test_from_hub_downloads_the_category_files(tmp_path: Path, monkeypatch: Any) -> None:
    import huggingface_hub

    from dep_eval import cli

    reviews, metas = base_world()
    files = {
        "raw/review_categories/Cat.jsonl": write_jsonl(tmp_path / "Cat.jsonl", reviews),
        "raw/meta_categories/meta_Cat.jsonl": write_jsonl(tmp_path / "meta_Cat.jsonl", metas),
    }
    calls = []

    def fake_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        return str(files[kwargs["filename"]])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cli.main(
        [
            "build-benchmark",
            "--from-hub",
            "McAuley-Lab/Amazon-Reviews-2023",
            "--category",
            "Cat",
            "--output",
            str(tmp_path / "data"),
            "--threads",
            "1",
        ]
    )
    assert [c["filename"] for c in calls] == list(files)
    assert all(c["repo_id"] == "McAuley-Lab/Amazon-Reviews-2023" for c in calls)
    assert all(c["repo_type"] == "dataset" for c in calls)
    names = [v["name"] for v in manifest(tmp_path / "data" / "Cat")["inputs"].values()]
    assert names == [f"hub:McAuley-Lab/Amazon-Reviews-2023/{f}" for f in files]

    def failing(**kwargs: Any) -> str:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(SystemExit, match="could not download raw/review_categories/Nope.jsonl"):
        cli.main(
            [
                "build-benchmark",
                "--from-hub",
                "McAuley-Lab/Amazon-Reviews-2023",
                "--category",
                "Nope",
                "--output",
                str(tmp_path / "data"),
            ]
        )


@pytest.mark.slow
def test_a_built_folder_runs_through_lm_eval(tmp_path: Path) -> None:
    folder = build(tmp_path, *base_world(), name="data")
    lm_eval = Path(sys.executable).parent / "lm_eval"
    metadata = json.dumps({"data_dir": str(folder.parent), "category": "Cat"})
    out = tmp_path / "results"
    command = [
        str(lm_eval),
        "--model",
        "nonperso",
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        metadata,
        "--limit",
        "2",
        "--gen_kwargs",
        "max_gen_toks=8",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rouge1" in result.stdout
    [samples_file] = out.rglob("samples_amazon_review_personalized_custom_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 2
    assert {s["doc"]["category"] for s in samples} == {"Cat"}
    assert all(s["resps"][0][0].strip() for s in samples)


# --------------------------------------------------------------------------- other splits


def staggered_world(users: int = 20) -> tuple[list[dict], list[dict]]:
    """base_world with each user's reviews shifted in time (user u by 37 * u), so that a
    global cutoff cuts users at different points of their histories."""
    reviews, metas = base_world(users=users)
    for r in reviews:
        r["timestamp"] += 37 * int(r["user_id"][1:])
    return reviews, metas


def loaded(folder: Path) -> dict[str, list]:
    loaders.clear_caches()
    source = loaders.local_source(folder.parent)
    return {s: loaders.load_split(source, "Cat", s) for s in ("train", "val", "test")}


def test_user_split_keeps_test_users_out_of_training(tmp_path: Path) -> None:
    from dep_eval.data.build import SplitSpec

    folder = build(tmp_path, *base_world(users=20), split=SplitSpec(kind="user"))
    rows = loaded(folder)
    users = {split: {s.user_id for s in samples} for split, samples in rows.items()}
    assert not users["train"] & users["val"] and not users["train"] & users["test"]
    assert not users["val"] & users["test"]
    assert (len(users["train"]), len(users["val"]), len(users["test"])) == (16, 2, 2)
    # a val/test user has one row: the last review, everything before it as its profile
    assert len(rows["test"]) == 2 and all(len(s.profile) == 19 for s in rows["test"])
    assert all(s.target.asin == "I19" for s in rows["test"] + rows["val"])
    assert len(rows["train"]) == 16 * 10  # a train user's 10 targets are all train rows
    split = manifest(folder)["split"]
    assert split["kind"] == "user" and split["test_users"] == 2 and split["train_users"] == 16
    # test-only users: in the pool through their profiles, with no training row anywhere
    pool = loaders.load_pool(loaders.local_source(folder.parent), "Cat")
    assert users["test"] <= set(pool.reviews)
    again = build(tmp_path, *base_world(users=20), name="again", split=SplitSpec(kind="user"))
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()


def test_temporal_split_has_one_global_cutoff(tmp_path: Path) -> None:
    from dep_eval import cli

    reviews, metas = staggered_world()
    r = write_jsonl(tmp_path / "reviews.jsonl", reviews)
    m = write_jsonl(tmp_path / "meta.jsonl", metas)
    args = ["build-benchmark", "--reviews", str(r), "--meta", str(m), "--category", "Cat"]
    args += ["--output", str(tmp_path / "data"), "--threads", "1", "--split", "temporal"]
    cli.main([*args, "--cutoff", "1600", "--val-cutoff", "1500"])
    folder = tmp_path / "data" / "Cat"
    rows = loaded(folder)
    assert all(s.target.timestamp < 1500 for s in rows["train"])
    assert all(1500 <= s.target.timestamp < 1600 for s in rows["val"])
    assert all(s.target.timestamp >= 1600 for s in rows["test"])
    assert all(r.timestamp < s.target.timestamp for s in rows["test"] for r in s.profile)
    test_only = {s.user_id for s in rows["test"]} - {s.user_id for s in rows["train"]}
    assert test_only  # users whose every target is after the cutoff: no training rows
    split = manifest(folder)["split"]
    assert (split["test_cutoff"], split["val_cutoff"], split["chosen_by"]) == (1600, 1500, "given")
    counts = manifest(folder)["steps"]["step6_splits"]
    assert counts["test_rows"] == len(rows["test"]) and counts["train_rows"] == len(rows["train"])


def test_temporal_cutoff_from_the_test_fraction(tmp_path: Path) -> None:
    from dep_eval.data.build import SplitSpec

    split = SplitSpec(kind="temporal", test_fraction=0.25, val_fraction=0.2)
    folder = build(tmp_path, *staggered_world(), split=split)
    rows = loaded(folder)
    total = sum(len(v) for v in rows.values())
    assert abs(len(rows["test"]) / total - 0.25) < 0.05
    info = manifest(folder)["split"]
    assert info["chosen_by"] == "quantile of the targets' timestamps"
    assert min(s.target.timestamp for s in rows["test"]) == info["test_cutoff"]
    assert max(s.target.timestamp for s in rows["train"]) < info["val_cutoff"]


def test_split_options_are_checked(tmp_path: Path) -> None:
    from dep_eval import cli
    from dep_eval.data.build import SplitSpec, parse_cutoff

    with pytest.raises(DataError, match="sum to less than 1"):
        build(
            tmp_path,
            *base_world(),
            split=SplitSpec(kind="user", val_fraction=0.5, test_fraction=0.5),
        )
    with pytest.raises(DataError, match="cannot give"):
        two = Recipe(min_item_users=2, min_profile_item_users=2)
        build(tmp_path, *base_world(users=2), two, split=SplitSpec(kind="user"))
    assert parse_cutoff("1970-01-01T00:00:01") == 1000
    reviews, metas = base_world()
    r = write_jsonl(tmp_path / "r.jsonl", reviews)
    m = write_jsonl(tmp_path / "m.jsonl", metas)
    base = ["build-benchmark", "--reviews", str(r), "--meta", str(m), "--category", "Cat"]
    base += ["--output", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="apply to --split temporal only"):
        cli.main([*base, "--split", "user", "--cutoff", "2021-01-01"])
    with pytest.raises(SystemExit, match="give a date"):
        cli.main([*base, "--split", "temporal", "--cutoff", "next year"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["user", "temporal"])
def test_other_splits_run_through_lm_eval(tmp_path: Path, kind: str) -> None:
    from dep_eval.data.build import SplitSpec

    folder = build(tmp_path, *staggered_world(), name="data", split=SplitSpec(kind=kind))
    metadata = json.dumps({"data_dir": str(folder.parent), "category": "Cat", "split": "test"})
    out = tmp_path / "results"
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "nonperso"]
    command += ["--tasks", "amazon_review_personalized_custom", "--metadata", metadata]
    command += ["--limit", "2", "--gen_kwargs", "max_gen_toks=16", "--output_path", str(out)]
    result = subprocess.run(
        [*command, "--log_samples"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [samples_file] = out.rglob("samples_amazon_review_personalized_custom_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 2 and {s["doc"]["split"] for s in samples} == {"test"}
    assert all(s["resps"][0][0].strip() for s in samples)

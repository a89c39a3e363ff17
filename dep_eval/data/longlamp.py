"""LongLaMP's personalized product-review tasks (Kumar et al. 2024) as this project's samples.

LongLaMP (``LongLaMP/LongLaMP`` on the Hugging Face hub) has two product-review configs,
``product_review_user`` (users of the test split are not in train: a method meets users it
never trained on) and ``product_review_temporal`` (the same users in every split; val and
test hold later reviews), each with the splits ``train``, ``val`` and ``test``. A row is

    {"reviewerId": str, "input": str, "output": str,
     "profile": [{"overall": float, "summary": str, "reviewText": str, "description": str}]}

``input`` is LongLaMP's own prompt for the review to write, in one template (the typo "has
a given an" is the data's)::

    Generate the review text written by a reviewer who has a given an overall rating of
    "{overall}" for a product with description "{description}". The summary of the review
    text is "{summary}".

and ``output`` is the review text to score against. docs/benchmarks.md maps every field
to ``Sample`` and lists the quirks; in short:

- user_id <- ``reviewerId``; category <- the config name; split <- the split;
- target: rating, title (<- summary) and item description are parsed from ``input``, text
  <- ``output``; a profile entry: rating <- ``overall``, title <- ``summary``, text <-
  ``reviewText``, its item's description <- ``description``;
- LongLaMP has no item ids, no product titles and no dates. Each review gets a content id
  (``ll-`` + a hash of reviewer, description, summary and text: the same review in two
  rows' profiles gets the same id, and no two users share one, so no method finds peers);
  items have an empty title; a profile entry's timestamp is its position in the list (the
  list order is kept: "most recent" means "last in the list"), the target's is the
  profile's length.

Sources: ``longlamp-hub:LongLaMP/LongLaMP`` (``datasets.load_dataset(repo, config,
split=...)``) or ``longlamp-local:/abs/dir``, a folder ``<dir>/<config>/{train,val,test}.jsonl``
of rows in the hub's schema (what ``Dataset.to_json`` writes). The error and skip policy is
``loaders.py``'s: every problem in a local file is a ``DataError`` naming file, line and
field; on the hub (which the user cannot fix) a bad profile entry is dropped and a bad row
skipped, both logged with their row; a row whose profile ends up empty is skipped (logged)
in both. The pool is the profiles of every split present minus every target text, as for
DPL-main (``dep_eval.data.pool``).

The real LongLaMP data was not reachable from where this was written: the schema and the
template come from the dataset's public loaders and evaluation code (docs/benchmarks.md
says which); tests run on a fixture written in that schema (tests/fixtures/longlamp/).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dep_eval.data import loaders
from dep_eval.data.parsing import (
    DataError,
    Lenient,
    Where,
    as_rating,
    as_str,
    check_text_length,
    get_field,
    require_dict,
)
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample

if TYPE_CHECKING:
    import datasets

__all__ = [
    "CONFIGS",
    "HUB_REPO",
    "INPUT_FIELD",
    "SPLITS",
    "clear_caches",
    "format_input",
    "hub_source",
    "is_longlamp_source",
    "items_with_peers",
    "load_pool",
    "load_split",
    "load_task_dataset",
    "local_source",
    "parse_input",
    "resolve_source",
]

logger = logging.getLogger(__name__)

HUB_REPO = "LongLaMP/LongLaMP"
CONFIGS = ("product_review_user", "product_review_temporal")
SPLITS = ("train", "val", "test")
PREFIX = "longlamp-"  # of every LongLaMP source string
INPUT_FIELD = "longlamp_input"  # the row's own ``input``, kept in the lm-eval document

INPUT_TEMPLATE = (
    'Generate the review text written by a reviewer who has a given an overall rating of "{}" '
    'for a product with description "{}". The summary of the review text is "{}".'
)
# The template above, read back. Lenient where re-typed copies of it differ ("has given"
# without the stray "a"; single quotes): the fields are what matters. The description may
# hold quotes itself, so it runs to the LAST ". The summary ..." marker.
_INPUT = re.compile(
    r"\s*Generate the review text written by a reviewer who has (?:a )?given an overall "
    r"rating of (?P<rq>[\"']?)(?P<rating>[^\"']*?)(?P=rq) for a product with description "
    r"(?P<dq>[\"'])(?P<description>.*)(?P=dq)\. The summary of the review text is "
    r"(?P<sq>[\"'])(?P<summary>.*)(?P=sq)\.?\s*",
    re.DOTALL,
)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    kind: str  # "local" or "hub"
    location: str  # absolute folder, or hub repo


def local_source(path: str | Path) -> str:
    return f"{PREFIX}local:{Path(path).expanduser().resolve()}"


def hub_source(repo: str = HUB_REPO) -> str:
    return f"{PREFIX}hub:{repo}"


def is_longlamp_source(source: str) -> bool:
    return source.startswith(PREFIX)


def _parse_source(source: str) -> _Source:
    kind, sep, rest = source.removeprefix(PREFIX).partition(":")
    if not is_longlamp_source(source) or not sep or not rest or kind not in ("local", "hub"):
        raise DataError(
            f"source {source!r} is not a LongLaMP source; use '{PREFIX}local:/abs/dir' or "
            f"'{hub_source()}'"
        )
    if kind == "local":
        return _Source("local", str(Path(rest).expanduser().resolve()))
    return _Source("hub", rest)


def resolve_source(options: Mapping[str, Any]) -> str:
    """``source`` (a LongLaMP source string), else ``data_dir`` (a local folder), else the
    hub. ``DEP_EVAL_DATA_DIR`` is not read: it names DPL-layout data."""
    if options.get("source"):
        return str(_canonical(str(options["source"])))
    if options.get("data_dir"):
        return local_source(str(options["data_dir"]))
    return hub_source()


def _canonical(source: str) -> str:
    parsed = _parse_source(source)
    return f"{PREFIX}{parsed.kind}:{parsed.location}"


def _check(config: str, split: str) -> None:
    if config not in CONFIGS:
        raise DataError(f"unknown LongLaMP config {config!r}; use one of {', '.join(CONFIGS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- raw rows

LOCAL_ROUTE = (
    "Offline, export the config once where the hub is reachable "
    '(datasets.load_dataset("LongLaMP/LongLaMP", CONFIG, split=S).to_json("DIR/CONFIG/S.jsonl")) '
    'and pass --metadata \'{"data_dir": "DIR"}\''
)


def _local_file(root: Path, config: str, split: str) -> Path:
    folder = root / config
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(
            f"LongLaMP config folder {folder} not found; data_dir must hold one folder per "
            f"config ({', '.join(CONFIGS)}) with train/val/test.jsonl (folders there: "
            f"{', '.join(present) or 'none'})"
        )
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.jsonl"))
        raise DataError(
            f"missing file {path}; expected train.jsonl, val.jsonl, test.jsonl in LongLaMP's "
            f"row schema (present: {', '.join(present) or 'none'})"
        )
    return path


def _hub_load(repo: str, config: str, split: str) -> datasets.Dataset:
    """The one network call (mocked in tests): ``datasets.load_dataset``."""
    import datasets

    reason = loaders._hub_unreachable_reason()
    if reason:
        raise loaders.HubUnreachable(
            f"cannot load {repo} from the Hugging Face hub: {reason}. {LOCAL_ROUTE}"
        )
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as exc:
        raise DataError(
            f"could not load config {config!r} split {split!r} of {repo} from the Hugging Face "
            f"hub ({type(exc).__name__}: {exc}). {LOCAL_ROUTE}"
        ) from exc


def _raw_rows(src: _Source, config: str, split: str) -> tuple[str, Iterator[tuple[Where, Any]]]:
    if src.kind == "local":
        path = _local_file(Path(src.location), config, split)
        return str(path), loaders._iter_jsonl(path)
    label = f"hub:{src.location}[{config}/{split}]"

    def rows() -> Iterator[tuple[Where, Any]]:
        for index, row in enumerate(_hub_load(src.location, config, split)):
            yield Where(label, index, line_word="row"), row

    return label, rows()


# --------------------------------------------------------------------------- parsing


def format_input(rating: float, description: str, summary: str) -> str:
    """LongLaMP's ``input`` for a review (the template, its typo included)."""
    return INPUT_TEMPLATE.format(f"{rating:.1f}", description, summary)


def parse_input(text: str) -> tuple[str, str, str] | None:
    """(rating text, description, summary) of a LongLaMP ``input``, or None when it does not
    follow the template."""
    match = _INPUT.fullmatch(text)
    if match is None:
        return None
    return match["rating"], match["description"], match["summary"]


def review_id(user_id: str, description: str, summary: str, text: str) -> str:
    """A stable id for one review: LongLaMP has no item ids (see the module docstring)."""
    digest = hashlib.sha256("\x1f".join((user_id, description, summary, text)).encode())
    return "ll-" + digest.hexdigest()[:16]


def _rating(value: Any, where: Where, field_name: str) -> float:
    """``overall``: a number, or a number written as a string ("5.0")."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise where.error(
                field_name, f"expected a star rating such as 5.0, got {value!r}"
            ) from None
    return as_rating(value, where, field_name)


def _description(value: Any, where: Where, field_name: str) -> str:
    """A string; None is ""; a list of strings (the Amazon meta's own type) is joined."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return " ".join(part.strip() for part in value if part.strip())
    return as_str(value, where, field_name)


@dataclass(frozen=True)
class _Entry:
    review: Review
    item: Item


def _profile_entry(raw: Any, where: Where, index: int, user_id: str) -> _Entry:
    prefix = f"profile[{index}]."
    row = require_dict(raw, where, prefix[:-1])
    summary = as_str(get_field(row, "summary", where, prefix), where, prefix + "summary")
    text = as_str(get_field(row, "reviewText", where, prefix), where, prefix + "reviewText")
    if not text.strip():
        raise where.error(prefix + "reviewText", "empty review text: nothing to learn from")
    description = _description(
        get_field(row, "description", where, prefix), where, prefix + "description"
    )
    rating = _rating(get_field(row, "overall", where, prefix), where, prefix + "overall")
    check_text_length(text, where, prefix + "reviewText")
    asin = review_id(user_id, description, summary, text)
    return _Entry(Review(asin, rating, summary, text, index), Item(asin, "", description))


def _target(row: dict[str, Any], where: Where, user_id: str, position: int) -> _Entry:
    prompt = as_str(get_field(row, "input", where), where, "input", non_empty=True)
    text = as_str(get_field(row, "output", where), where, "output")
    if not text.strip():
        raise where.error("output", "the target review text is empty: nothing to score")
    parsed = parse_input(prompt)
    if parsed is None:
        raise where.error(
            "input",
            "does not follow LongLaMP's product-review template (Generate the review text "
            'written by a reviewer who has a given an overall rating of "R" for a product with '
            'description "D". The summary of the review text is "S".); write it that way',
        )
    rating_text, description, summary = parsed
    rating = _rating(rating_text, where, "input (its rating)")
    check_text_length(text, where, "output")
    asin = review_id(user_id, description, summary, text)
    return _Entry(Review(asin, rating, summary, text, position), Item(asin, "", description))


@dataclass
class _Parsed:
    samples: list[Sample]
    inputs: dict[str, str]  # Sample.key -> the row's input
    items: dict[str, Item]
    skipped: list[str]


def _parse_rows(
    label: str,
    rows: Iterator[tuple[Where, Any]],
    *,
    source: str,
    config: str,
    split: str,
    strict: bool,
) -> _Parsed:
    out = _Parsed([], {}, {}, [])
    dropped, skipped = Lenient(), Lenient()
    seen: dict[str, int | None] = {}
    interned: dict[Review, Review] = _interner(source, config)
    for where, raw in rows:
        row = require_dict(raw, where, None)
        user_id = as_str(get_field(row, "reviewerId", where), where, "reviewerId", non_empty=True)
        raw_profile = get_field(row, "profile", where)
        if not isinstance(raw_profile, list):
            raise where.error("profile", f"expected a list of objects, got {type(raw_profile)}")
        try:
            target = _target(row, where, user_id, len(raw_profile))
        except DataError as error:
            if strict:
                raise
            skipped.skip(where, error.reason)
            continue
        profile = _profile(raw_profile, where, user_id, target, strict, dropped, out.items)
        if not profile:
            skipped.skip(where, f"user {user_id!r} has an empty profile")
            continue
        sample = Sample(
            user_id=user_id,
            category=config,
            profile=tuple(interned.setdefault(r, r) for r in profile),
            target=interned.setdefault(target.review, target.review),
            item=target.item,
            source=source,
            split=split,
            row=where.line if where.line is not None else len(out.samples),
        )
        if sample.key in seen:
            message = (
                f"duplicate row: same reviewer and target as {where.line_word} {seen[sample.key]}"
            )
            if strict:
                raise where.error("output", message + "; remove one")
            skipped.skip(where, message)
            continue
        seen[sample.key] = where.line
        out.items[target.item.asin] = target.item
        out.inputs[sample.key] = row["input"]
        out.samples.append(sample)
    loaders._log_skips(label, "profile entries dropped", dropped)
    loaders._log_skips(label, "rows skipped", skipped)
    out.skipped = skipped.skipped
    return out


def _profile(
    raw_profile: list[Any],
    where: Where,
    user_id: str,
    target: _Entry,
    strict: bool,
    dropped: Lenient,
    items: dict[str, Item],
) -> list[Review]:
    profile: list[Review] = []
    target_text = " ".join(target.review.text.split())
    for index, raw in enumerate(raw_profile):
        try:
            entry = _profile_entry(raw, where, index, user_id)
            if " ".join(entry.review.text.split()) == target_text:
                raise where.error(
                    f"profile[{index}].reviewText",
                    "this profile entry is the target review itself (same text as output), "
                    "which would leak the reference; remove it from the profile",
                )
        except DataError as error:
            if strict:
                raise
            dropped.skip(where, f"profile[{index}]: {error.reason}")
            continue
        items[entry.item.asin] = entry.item
        profile.append(entry.review)
    return profile


# --------------------------------------------------------------------------- cached loads


@functools.cache
def _interner(source: str, config: str) -> dict[Review, Review]:
    return {}  # one object per review: a temporal user's rows repeat their profile


@functools.cache
def _split_cached(source: str, config: str, split: str) -> _Parsed:
    src = _parse_source(source)
    label, rows = _raw_rows(src, config, split)
    parsed = _parse_rows(
        label, rows, source=source, config=config, split=split, strict=src.kind == "local"
    )
    logger.info("%s: %d samples", label, len(parsed.samples))
    return parsed


def _pool_splits(source: str, config: str) -> tuple[str, ...]:
    src = _parse_source(source)
    if src.kind == "hub":
        return SPLITS
    folder = Path(src.location) / config
    present = tuple(s for s in SPLITS if (folder / f"{s}.jsonl").is_file())
    if not present:
        _local_file(Path(src.location), config, "test")  # raises, saying what is there
    if len(present) < len(SPLITS):
        logger.warning("%s: pool built from %s only", folder, ", ".join(present))
    return present


@functools.cache
def _pool_cached(source: str, config: str) -> DataPool:
    loaded = [_split_cached(source, config, s) for s in _pool_splits(source, config)]
    items = {asin: item for part in loaded for asin, item in part.items.items()}
    samples = [sample for part in loaded for sample in part.samples]
    pool = DataPool.from_samples(config, samples, items)
    logger.info(
        "LongLaMP pool of %s: %d users, %d reviews, no item with two reviewers (no item ids)",
        config,
        len(pool.reviews),
        sum(map(len, pool.reviews.values())),
    )
    return pool


def load_split(source: str, config: str, split: str) -> list[Sample]:
    """The validated samples of one split, in row order."""
    _check(config, split)
    parsed = _split_cached(_canonical(source), config, split)
    if not parsed.samples:
        shown = "; ".join(parsed.skipped[:5]) or "the split holds no rows"
        raise DataError(
            f"LongLaMP {config}/{split} from {source} has no usable rows "
            f"({len(parsed.skipped)} skipped: {shown})"
        )
    return list(parsed.samples)


def load_pool(source: str, config: str) -> DataPool:
    """Every split's profiles minus every target text (treat as read-only)."""
    if config not in CONFIGS:
        raise DataError(f"unknown LongLaMP config {config!r}; use one of {', '.join(CONFIGS)}")
    return _pool_cached(_canonical(source), config)


def items_with_peers(pool: DataPool) -> int:
    """How many items of ``pool`` at least two users reviewed (0 on LongLaMP: no item ids).
    DEP's diff embeddings and DPL's comparisons need such items."""
    return sum(len({user for user, _ in reviewers}) > 1 for reviewers in pool.reviewers.values())


def clear_caches() -> None:
    for cached in (_interner, _split_cached, _pool_cached):
        cached.cache_clear()


# --------------------------------------------------------------------------- lm-eval entry


def doc_features() -> datasets.Features:
    """``loaders.doc_features`` plus the row's own ``input`` (LongLaMP's prompt)."""
    import datasets

    features = loaders.doc_features()
    features[INPUT_FIELD] = datasets.Value("string")
    return features


def load_task_dataset(options: Mapping[str, Any]) -> dict[str, datasets.Dataset]:
    """``{split: Dataset}`` of ``options["category"]`` (a config) and ``options["split"]``."""
    import datasets

    config, split = options.get("category"), options.get("split") or "test"
    if not isinstance(config, str) or not config:
        raise DataError(f"no LongLaMP config given; use one of {', '.join(CONFIGS)}")
    source = resolve_source(options)
    samples = load_split(source, config, split)
    inputs = _split_cached(_canonical(source), config, split).inputs
    docs = [{**sample.to_doc(), INPUT_FIELD: inputs[sample.key]} for sample in samples]
    return {split: datasets.Dataset.from_list(docs, features=doc_features())}

"""Loading DPL-style review data into ``Sample``s, item tables and the data pool.

Sources
-------
A *source* is a string, stored in every ``Sample`` (and so in every lm-eval document), from
which the model side can rebuild the same pool and item table from a document alone:

- ``local:/abs/dir`` -- a directory laid out as ``<dir>/<Category>/{train,val,test,meta}.jsonl``
  (the layout of ``shared/data/amazon_beauty``). Chosen by the ``data_dir`` metadata key or the
  ``DEP_EVAL_DATA_DIR`` environment variable.
- ``hub:SnowCharmQ/DPL-main`` -- the paper's data on the Hugging Face hub, read with
  ``datasets.load_dataset(main, category, split=...)``; the item table comes from
  ``SnowCharmQ/DPL-meta`` (one config per category, as in the data set's creation script, with
  a single split ``full`` and columns ``asin``, ``title``, ``description``). A main repository
  whose name ends in ``-main`` pairs with the same name ending in ``-meta``; any other pairing
  is written ``hub:<main>+<meta>``. Hub rows carry ``user_id``, ``profile`` and ``data`` but no
  ``category`` column (the reference code adds it after loading); the config name is used.

Error and skip policy
---------------------
Every problem is either a ``DataError`` (file, line or hub row, field, and what to fix) or a
logged skip; nothing is dropped or patched silently.

Errors everywhere: unreadable or invalid JSON, a row or review that is not an object, a
missing field, a wrong type (a rating that is not a number, a timestamp that is not an
integer, a text that is not a string), a rating outside 1-5, a timestamp outside 64 bits, a
string holding a lone surrogate escape (``"\\ud800"``, not text), an empty
``user_id``/``asin``, an empty target text (nothing to score against), a row whose
``category`` differs from the folder/config it was loaded as, two rows with the same
``Sample.key``, a missing data folder (or a file where the folder should be), category
folder, meta file or evaluated split file (the message lists what exists), and a split asked
for that has no usable row at all (the message gives how many were skipped and why).

Local files are the user's own and can be fixed, so there these are errors too:
a target or profile review whose asin is not in ``meta.jsonl``; a profile review that is the
target itself (same asin and timestamp: it would leak the reference into the prompt); two
meta rows for one asin with different content.

Hub data cannot be fixed by the user, so there the same three are logged skips: the profile
review is dropped, the row whose *target* item is unknown is dropped, the first meta row wins.

Both sources: a row whose profile is empty (or becomes empty after the drops above) is
skipped with a warning -- every method needs at least one past review, and an empty profile
says nothing about the user. Blank lines in a JSON-lines file are ignored. A review text
over ``parsing.LONG_TEXT_CHARS`` characters is kept but logged with its line: prompts show
only its head and scoring reads only its first ``LONG_TEXT_CHARS`` (docs/bad_inputs.md).

Normalisations (lossless, never a changed meaning): int ratings become floats, integral float
timestamps become ints, a missing or null item description becomes ``""``, a profile not in
time order is stably sorted oldest first (logged at debug level).

The pool
--------
``load_pool`` is built once per (source, category) from the profiles of ALL splits and cached
in-process, so it never depends on which documents a run evaluates (``--limit``) or on the
split. (A local folder may lack train.jsonl and/or val.jsonl -- a test-only benchmark, or users
with no other history: the pool is then built from the split files present, and a warning says
which.) A review whose text is the *target* text of any row of any split is left out of it: in
DPL-main a later row's profile holds the earlier rows' targets (the test profile holds the val
target), so a pool shared by all splits must drop every target to be sure no evaluated
reference text reaches a prompt through another user's peers. The match is on the (whitespace-
normalised) text, not only on (user, asin, timestamp): the real All_Beauty data has a user who
pasted one text under two items and one person split into two user ids (``..._1``/``..._2``)
whose reviews coincide. What remains is each user's base history, the set on which the data
set's creators enforced "every item has at least 5 reviewers", so peers stay plentiful
(All_Beauty: 856 pool reviews, every test profile keeps >= 3 reviews with peers). (The
reference code builds its pool from the evaluated split's profiles only; that keeps the val
targets of other users in a test-time pool. This project trades those few peers for a pool that
is the same for every split.)

Caches are keyed on the source string; call ``clear_caches()`` after editing files in place.
``datasets`` is imported only where needed (hub reads, ``load_task_dataset``), keeping the
local path fast and import-light.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonlines

from dep_eval.data.parsing import (
    DataError,
    Lenient,
    Where,
    as_str,
    check_category_name,
    get_field,
    is_blank,
    parse_item,
    parse_review,
    require_dict,
)
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample

if TYPE_CHECKING:
    import datasets

__all__ = [
    "DEFAULT_HUB_MAIN",
    "DEFAULT_HUB_META",
    "ENV_DATA_DIR",
    "HUB_CATEGORIES",
    "SPLITS",
    "DataError",
    "HubSource",
    "LocalSource",
    "clear_caches",
    "doc_features",
    "hub_source",
    "load_items",
    "load_pool",
    "load_split",
    "load_task_dataset",
    "local_source",
    "parse_source",
    "resolve_source",
]

logger = logging.getLogger(__name__)

DEFAULT_HUB_MAIN = "SnowCharmQ/DPL-main"
DEFAULT_HUB_META = "SnowCharmQ/DPL-meta"
HUB_CATEGORIES = ("Books", "Movies_and_TV", "CDs_and_Vinyl")
HUB_META_SPLIT = "full"
SPLITS = ("train", "val", "test")
ENV_DATA_DIR = "DEP_EVAL_DATA_DIR"
_MAX_LISTED_SKIPS = 5


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class LocalSource:
    root: Path  # absolute; holds one folder per category

    def __str__(self) -> str:
        return f"local:{self.root}"


@dataclass(frozen=True)
class HubSource:
    main: str
    meta: str

    def __str__(self) -> str:
        if self.meta == _paired_meta(self.main):
            return f"hub:{self.main}"
        return f"hub:{self.main}+{self.meta}"


def _paired_meta(main: str) -> str | None:
    return main[: -len("-main")] + "-meta" if main.endswith("-main") else None


def local_source(path: str | os.PathLike[str]) -> str:
    """The source string of a local data directory (made absolute)."""
    return str(LocalSource(Path(path).expanduser().resolve()))


def hub_source(main: str = DEFAULT_HUB_MAIN, meta: str | None = None) -> str:
    """The source string of a hub pair (``meta`` defaults to ``main`` with ``-meta``)."""
    meta = meta or _paired_meta(main)
    if not meta:
        raise DataError(f"hub repository {main!r} does not end in '-main'; name its meta repo too")
    return str(HubSource(main, meta))


def parse_source(source: str) -> LocalSource | HubSource:
    """``"local:/dir"`` / ``"hub:main"`` / ``"hub:main+meta"`` -> a source object."""
    kind, sep, rest = source.partition(":")
    if sep and kind == "local" and rest:
        return LocalSource(Path(rest).expanduser().resolve())
    if sep and kind == "hub" and rest:
        main, _, meta = rest.partition("+")
        meta = meta or _paired_meta(main) or ""
        if not meta:
            raise DataError(
                f"source {source!r}: hub repository {main!r} does not end in '-main'; "
                f"write 'hub:{main}+<owner>/<meta repo>'"
            )
        return HubSource(main, meta)
    raise DataError(
        f"source {source!r} is not understood; use 'local:/abs/data/dir' or "
        f"'hub:{DEFAULT_HUB_MAIN}'"
    )


def resolve_source(metadata: Mapping[str, Any] | None = None) -> str:
    """Pick the source for a run: ``source`` key, else ``data_dir`` key, else the
    ``DEP_EVAL_DATA_DIR`` environment variable, else the hub (``SnowCharmQ/DPL-main``)."""
    metadata = metadata or {}
    if metadata.get("source"):
        return str(parse_source(str(metadata["source"])))
    if metadata.get("data_dir"):
        return local_source(str(metadata["data_dir"]))
    if os.environ.get(ENV_DATA_DIR):
        return local_source(os.environ[ENV_DATA_DIR])
    return hub_source()


def _canonical(source: str) -> str:
    return str(parse_source(source))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- raw rows

# Raw rows come with the location used in error messages.
RawRows = Iterable[tuple[Where, Any]]


def _category_dir(src: LocalSource, category: str) -> Path:
    check_category_name(category, src.root)  # a folder name, never a path out of data_dir
    if src.root.exists() and not src.root.is_dir():
        raise DataError(
            f"data directory {src.root} is a file, not a folder; point data_dir (or "
            f"{ENV_DATA_DIR}) at the folder holding <Category>/{{train,val,test,meta}}.jsonl"
        )
    if not src.root.is_dir():
        raise DataError(
            f"data directory {src.root} does not exist; point data_dir (or {ENV_DATA_DIR}) "
            "at a folder holding <Category>/{train,val,test,meta}.jsonl"
        )
    folder = src.root / category
    if not folder.is_dir():
        existing = sorted(p.name for p in src.root.iterdir() if p.is_dir())
        hint = ""
        if (src.root / "meta.jsonl").is_file():
            hint = f" ({src.root} itself holds meta.jsonl: data_dir must be its parent folder)"
        raise DataError(
            f"category {category!r} not found in {src.root}; categories there: "
            f"{', '.join(existing) or 'none'}{hint}"
        )
    return folder


def _local_file(src: LocalSource, category: str, name: str) -> Path:
    path = _category_dir(src, category) / f"{name}.jsonl"
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is a folder, not a file; it must be a JSON-lines file")
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob("*.jsonl"))
        raise DataError(
            f"missing file {path}; expected meta.jsonl and the split files train.jsonl, "
            "val.jsonl, test.jsonl (the one evaluated is required; the pool uses those there) "
            f"(present: {', '.join(present) or 'none'})"
        )
    return path


def _iter_jsonl(path: Path) -> Iterator[tuple[Where, Any]]:
    line_number = 0

    def counted(handle: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal line_number
        for line_number, raw in enumerate(handle, start=1):
            # jsonlines drops a byte-order mark silently; the data contract says plain UTF-8
            if line_number == 1 and raw.startswith(codecs.BOM_UTF8):
                raise Where(str(path), 1).error(
                    None,
                    "invalid JSON at column 1: Unexpected UTF-8 BOM (decode using utf-8-sig); "
                    "one object per line",
                )
            yield raw

    with path.open("rb") as handle, jsonlines.Reader(counted(handle)) as reader:
        try:
            for value in reader.iter(skip_empty=True, allow_none=True):
                yield Where(str(path), line_number), value
        except jsonlines.InvalidLineError as exc:
            where = Where(str(path), exc.lineno)
            cause = exc.__cause__
            if isinstance(cause, UnicodeDecodeError):
                raise where.error(None, f"not valid UTF-8 ({cause}); re-save as UTF-8") from exc
            if isinstance(cause, json.JSONDecodeError):
                detail = f"invalid JSON at column {cause.colno}: {cause.msg}"
            else:
                detail = str(exc)
            raise where.error(None, f"{detail}; one object per line") from exc


class HubUnreachable(DataError):
    """The hub cannot be reached at all (no network, ``HF_HUB_OFFLINE``): nothing to retry."""


HUB_PROBE_SECONDS = 5.0
LOCAL_ROUTE = (
    f"Offline, set data_dir (or {ENV_DATA_DIR}) to a local copy in the "
    "<Category>/{train,val,test,meta}.jsonl layout: --tasks amazon_review_personalized_custom "
    '--metadata \'{"data_dir": "DIR", "category": "CAT"}\''
)


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached, in one quick try; ``None`` when it answers (or when
    ``HF_HUB_OFFLINE`` is set: then ``datasets`` reads its own cache, in milliseconds).
    ``datasets`` retries a refused connection with back-off for tens of seconds."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return None  # it answered, if only with an error status
    except OSError as exc:  # URLError, timeouts, refused connections
        return f"{constants.ENDPOINT} does not answer ({getattr(exc, 'reason', exc)})"
    return None


def _hub_load(repo: str, category: str, split: str) -> datasets.Dataset:
    """The one network call (mocked in tests): ``datasets.load_dataset``."""
    import datasets
    from huggingface_hub import constants

    reason = _hub_unreachable_reason()
    if reason:
        raise HubUnreachable(
            f"cannot load {repo} from the Hugging Face hub: {reason}. {LOCAL_ROUTE}"
        )
    try:
        return datasets.load_dataset(repo, category, split=split)
    except Exception as exc:  # unknown config, not cached while offline, ...
        if constants.HF_HUB_OFFLINE:
            raise HubUnreachable(
                f"HF_HUB_OFFLINE is set and config {category!r} of {repo} is not in the local "
                f"datasets cache. {LOCAL_ROUTE}"
            ) from exc
        configs = f"; its configs: {', '.join(HUB_CATEGORIES)}" if repo == DEFAULT_HUB_MAIN else ""
        raise DataError(
            f"could not load config {category!r} split {split!r} of {repo} from the Hugging "
            f"Face hub ({type(exc).__name__}: {exc}){configs}. {LOCAL_ROUTE}"
        ) from exc


def _iter_hub(repo: str, category: str, split: str) -> Iterator[tuple[Where, Any]]:
    label = f"hub:{repo}[{category}/{split}]"
    for index, row in enumerate(_hub_load(repo, category, split)):
        yield Where(label, index, line_word="row"), row


def _raw_rows(src: LocalSource | HubSource, category: str, split: str) -> tuple[str, RawRows]:
    if isinstance(src, LocalSource):
        path = _local_file(src, category, split)
        return str(path), _iter_jsonl(path)
    return f"hub:{src.main}[{category}/{split}]", _iter_hub(src.main, category, split)


def _raw_meta(src: LocalSource | HubSource, category: str) -> tuple[str, RawRows]:
    if isinstance(src, LocalSource):
        path = _local_file(src, category, "meta")
        return str(path), _iter_jsonl(path)
    label = f"hub:{src.meta}[{category}/{HUB_META_SPLIT}]"
    return label, _iter_hub(src.meta, category, HUB_META_SPLIT)


# --------------------------------------------------------------------------- parsing


def _parse_meta(label: str, rows: RawRows, strict: bool) -> dict[str, Item]:
    items: dict[str, Item] = {}
    first_seen: dict[str, int | None] = {}
    lenient = Lenient()
    for where, raw in rows:
        item = parse_item(raw, where)
        previous = items.get(item.asin)
        if previous is None:
            items[item.asin] = item
            first_seen[item.asin] = where.line
        elif previous != item:
            if strict:
                raise where.error(
                    "asin",
                    f"asin {item.asin!r} already described differently at "
                    f"{where.line_word} {first_seen[item.asin]}; keep one row per item",
                )
            lenient.skip(where, f"duplicate meta row for asin {item.asin!r} (first kept)")
    _log_skips(label, "meta rows", lenient)
    if not items:
        raise DataError(f"{label}: no items; the meta table must describe every reviewed item")
    return items


def _parse_rows(
    label: str,
    rows: RawRows,
    *,
    source: str,
    category: str,
    split: str,
    items: Mapping[str, Item],
    strict: bool,
    interned: dict[Review, Review],
) -> tuple[list[Sample], list[str]]:
    """The split's samples, and the reasons of the rows skipped (``Lenient`` entries)."""
    meta_name = "meta.jsonl" if strict else "the meta data set"
    dropped_reviews = Lenient()
    skipped_rows = Lenient()
    seen: dict[str, int | None] = {}
    samples: list[Sample] = []
    for where, raw in rows:
        row = require_dict(raw, where, None)
        user_id, raw_profile = _row_user_and_profile(row, where, category, strict)
        target = parse_review(get_field(row, "data", where), where, "data.")
        if is_blank(target.text):  # whitespace or zero-width characters only
            raise where.error("data.text", "the target review text is empty: nothing to score")
        item = items.get(target.asin)
        if item is None:
            if strict:
                raise where.error(
                    "data.asin",
                    f"asin {target.asin!r} is not in {meta_name}; add the item there",
                )
            skipped_rows.skip(where, f"target item {target.asin!r} is not in {meta_name}")
            continue
        profile = _parse_profile(
            raw_profile, target, where, items, strict, dropped_reviews, interned
        )
        if not profile:
            skipped_rows.skip(where, f"user {user_id!r} has an empty profile")
            continue
        if any(a.timestamp > b.timestamp for a, b in zip(profile, profile[1:], strict=False)):
            logger.debug("%s %s: profile sorted oldest first", label, where.line)
            profile.sort(key=lambda review: review.timestamp)
        sample = Sample(
            user_id=user_id,
            category=category,
            profile=tuple(profile),
            target=interned.setdefault(target, target),
            item=item,
            source=source,
            split=split,
            row=where.line if where.line is not None else len(samples),
        )
        if sample.key in seen:
            raise where.error(
                "data",
                f"duplicate row: same user, target asin and timestamp as {where.line_word} "
                f"{seen[sample.key]} (key {sample.key}); remove one",
            )
        seen[sample.key] = where.line
        samples.append(sample)
    _log_skips(label, "profile reviews dropped", dropped_reviews)
    _log_skips(label, "rows skipped", skipped_rows)
    return samples, skipped_rows.skipped


def _row_user_and_profile(
    row: dict[str, Any], where: Where, category: str, strict: bool
) -> tuple[str, list[Any]]:
    """A row's checked ``user_id`` and its raw profile list (the category checked too)."""
    user_id = as_str(get_field(row, "user_id", where), where, "user_id", non_empty=True)
    if strict or "category" in row:
        row_category = as_str(get_field(row, "category", where), where, "category")
        if row_category != category:
            raise where.error(
                "category",
                f"row says {row_category!r} but was loaded as category {category!r}; "
                "fix the field or move the row to its category's folder",
            )
    raw_profile = get_field(row, "profile", where)
    if not isinstance(raw_profile, list):
        raise where.error(
            "profile", f"expected a list of review objects, got {type(raw_profile).__name__}"
        )
    return user_id, raw_profile


def _parse_profile(
    raw_profile: list[Any],
    target: Review,
    where: Where,
    items: Mapping[str, Item],
    strict: bool,
    dropped_reviews: Lenient,
    interned: dict[Review, Review],
) -> list[Review]:
    """A row's profile reviews: an unknown item or the target itself is an error on local
    files (``strict``) and a logged drop on the hub."""
    meta_name = "meta.jsonl" if strict else "the meta data set"
    profile: list[Review] = []
    for index, raw_review in enumerate(raw_profile):
        prefix = f"profile[{index}]."
        review = parse_review(raw_review, where, prefix)
        if review.asin not in items:
            if strict:
                raise where.error(
                    prefix + "asin",
                    f"asin {review.asin!r} is not in {meta_name}; add the item there "
                    "or remove the review",
                )
            dropped_reviews.skip(where, f"{prefix}asin {review.asin!r} not in {meta_name}")
            continue
        if review.asin == target.asin and review.timestamp == target.timestamp:
            if strict:
                raise where.error(
                    prefix + "asin",
                    "this profile review is the target review itself (same asin and "
                    "timestamp), which would leak the reference; remove it from the profile",
                )
            dropped_reviews.skip(where, f"{prefix[:-1]} is the target itself")
            continue
        profile.append(interned.setdefault(review, review))
    return profile


def _log_skips(label: str, what: str, lenient: Lenient) -> None:
    if lenient.skipped:
        shown = "; ".join(lenient.skipped[:_MAX_LISTED_SKIPS])
        more = len(lenient.skipped) - _MAX_LISTED_SKIPS
        logger.warning(
            "%s: %d %s: %s%s",
            label,
            len(lenient.skipped),
            what,
            shown,
            f"; ... and {more} more" if more > 0 else "",
        )


# --------------------------------------------------------------------------- cached loads


@functools.cache
def _items_cached(source: str, category: str) -> dict[str, Item]:
    src = parse_source(source)
    if isinstance(src, LocalSource):
        _log_manifest(_category_dir(src, category) / "manifest.json")
    label, rows = _raw_meta(src, category)
    return _parse_meta(label, rows, strict=isinstance(src, LocalSource))


def _log_manifest(path: Path) -> None:
    """Say how a folder built by ``dep-eval build-benchmark`` was made (once per load)."""
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        inputs = ", ".join(
            f"{entry['name']} (sha256 {entry['sha256'][:12]})"
            for entry in manifest["inputs"].values()
        )
        splits = manifest["steps"]["step6_splits"]
        logger.info(
            "%s: built by dep-eval %s from %s; %d users, %d/%d/%d train/val/test rows; recipe %s",
            path,
            manifest["tool"]["dep-eval"],
            inputs,
            manifest["steps"]["step5_profile_core"]["users"],
            splits["train_rows"],
            splits["val_rows"],
            splits["test_rows"],
            json.dumps(manifest["recipe"]),
        )
    except (ValueError, KeyError, TypeError) as exc:  # informative only: never block a load
        logger.warning("%s: unreadable build manifest (%s: %s)", path, type(exc).__name__, exc)


@functools.cache
def _interner(source: str, category: str) -> dict[Review, Review]:
    # Equal reviews recur in many rows (a user's later rows repeat the earlier profile);
    # sharing one object per review keeps big categories' memory in check.
    return {}


@dataclass(frozen=True)
class _LoadedSplit:
    label: str  # the file (or hub split) it came from
    samples: tuple[Sample, ...]
    skipped: tuple[str, ...]  # why rows were skipped, one entry per row


@functools.cache
def _split_cached(source: str, category: str, split: str) -> _LoadedSplit:
    src = parse_source(source)
    items = _items_cached(source, category)
    label, rows = _raw_rows(src, category, split)
    samples, skipped = _parse_rows(
        label,
        rows,
        source=source,
        category=category,
        split=split,
        items=items,
        strict=isinstance(src, LocalSource),
        interned=_interner(source, category),
    )
    logger.info("%s: %d samples", label, len(samples))
    return _LoadedSplit(label, tuple(samples), tuple(skipped))


def _pool_splits(source: str, category: str) -> tuple[str, ...]:
    """The splits the pool is built from: all of them on the hub; locally, those whose file
    exists (a test-only benchmark, or users with no other history, has just test.jsonl), at
    least one. Which ones is logged, since it changes the peers and the pool's size."""
    src = parse_source(source)
    if not isinstance(src, LocalSource):
        return SPLITS
    folder = _category_dir(src, category)
    present = tuple(split for split in SPLITS if (folder / f"{split}.jsonl").is_file())
    if not present:
        _local_file(src, category, "test")  # raises, listing what is there
    missing = [f"{split}.jsonl" for split in SPLITS if split not in present]
    if missing:
        logger.warning(
            "%s: pool built from %s only (%s absent)",
            folder,
            ", ".join(f"{split}.jsonl" for split in present),
            ", ".join(missing),
        )
    return present


@functools.cache
def _pool_cached(source: str, category: str) -> DataPool:
    splits = _pool_splits(source, category)
    samples = [s for split in splits for s in _split_cached(source, category, split).samples]
    pool = DataPool.from_samples(category, samples, _items_cached(source, category))
    logger.info(
        "pool of %s from %s: %d users, %d reviews",
        category,
        "+".join(splits),
        len(pool.reviews),
        sum(map(len, pool.reviews.values())),
    )
    return pool


def load_items(source: str, category: str) -> dict[str, Item]:
    """asin -> ``Item`` for one category (a fresh dict over the cached table)."""
    return dict(_items_cached(_canonical(source), category))


def load_split(source: str, category: str, split: str) -> list[Sample]:
    """The validated samples of one split, in file/row order (cached per source/category/split)."""
    if source.startswith("longlamp-"):  # LongLaMP's rows and its own loader
        from dep_eval.data import longlamp

        return longlamp.load_split(source, category, split)
    _check_split(split)
    loaded = _split_cached(_canonical(source), category, split)
    if not loaded.samples:
        # Said here rather than left to lm-eval/datasets, whose error for an empty split
        # ("Keys mismatch ... dataset_info.json") names no file.
        if loaded.skipped:
            prefix = f"{loaded.label} "
            reasons = [r[len(prefix) :] if r.startswith(prefix) else r for r in loaded.skipped]
            shown = "; ".join(reasons[:_MAX_LISTED_SKIPS])
            if len(reasons) > _MAX_LISTED_SKIPS:
                shown += f"; ... and {len(reasons) - _MAX_LISTED_SKIPS} more"
        else:
            shown = "the file holds no rows, only blank lines or nothing"
        raise DataError(
            f"{loaded.label} has no usable rows ({len(loaded.skipped)} skipped: {shown}); "
            "every row needs a profile of at least one review whose item is known"
        )
    return list(loaded.samples)


def load_pool(source: str, category: str) -> DataPool:
    """The data pool of a category: profile reviews of all splits minus every target.

    Built once per (source, category) and shared; treat it as read-only."""
    if source.startswith("longlamp-"):  # LongLaMP's rows and its own loader
        from dep_eval.data import longlamp

        return longlamp.load_pool(source, category)
    return _pool_cached(_canonical(source), category)


def clear_caches() -> None:
    """Forget every cached table, split and pool (e.g. after editing data files in place)."""
    for cached in (_items_cached, _interner, _split_cached, _pool_cached):
        cached.cache_clear()


# --------------------------------------------------------------------------- lm-eval entry


def doc_features() -> datasets.Features:
    """Arrow schema of ``Sample.to_doc()``: explicit, so that profiles stay lists of review
    structs (a ``Sequence`` of dicts would come back as a dict of lists) and ratings stay
    floats even when every rating of a split happens to be whole."""
    import datasets

    def string() -> datasets.Value:
        return datasets.Value("string")

    review = {
        "asin": string(),
        "rating": datasets.Value("float64"),
        "title": string(),
        "text": string(),
        "timestamp": datasets.Value("int64"),
    }
    return datasets.Features(
        {
            "user_id": string(),
            "category": string(),
            "profile": [review],
            "target": dict(review),
            "item": {"asin": string(), "title": string(), "description": string()},
            "source": string(),
            "split": string(),
            "row": datasets.Value("int64"),
        }
    )


def load_task_dataset(
    metadata: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, datasets.Dataset]:
    """lm-eval ``custom_dataset`` entry: ``{split: Dataset of Sample.to_doc()}``.

    lm-eval 0.4.13 calls ``custom_dataset(**metadata, **dataset_kwargs)``, i.e. with keyword
    arguments (the task YAML's metadata, ``--metadata`` keys and the model args); a single
    dict argument is accepted too. Keys read: ``category`` (required), ``split`` (one name or a
    list; default all of train/val/test), and the source keys of ``resolve_source``; all other
    keys are ignored.
    """
    import datasets

    options: dict[str, Any] = {**(metadata or {}), **kwargs}
    category = options.get("category")
    if not isinstance(category, str) or not category:
        raise DataError(
            "no category given; pass it in the task YAML (metadata or dataset_kwargs) or with "
            '--metadata \'{"category": "Books"}\''
        )
    wanted = options.get("split") or SPLITS
    splits = [wanted] if isinstance(wanted, str) else list(wanted)
    for split in splits:
        _check_split(split)
    source = resolve_source(options)
    features = doc_features()
    return {
        split: datasets.Dataset.from_list(
            [sample.to_doc() for sample in load_split(source, category, split)],
            features=features,
        )
        for split in splits
    }

"""Validation of raw rows (local JSON lines or hub records) into ``Review`` / ``Item`` / ``Sample``.

Why a separate, strict layer: a review-generation benchmark fails *quietly* when its data is
slightly wrong (a rating read as a string ends up verbatim in a prompt, a missing description
becomes ``None`` and then the text "None", a target that also sits in the profile leaks the
reference into the prompt). So every field is checked once, here, and a problem is reported
as a ``DataError`` that names the file, the line (or hub row) and the field, and says what to
fix. The policy on what is an error and what is a logged skip lives in ``loaders.py``'s module
docstring; this module only offers the checks, and ``Lenient`` lets the caller turn the
review-level ones into skips.

Coercions (all lossless): a rating may be an int or a float in JSON (``5`` -> ``5.0``); a
timestamp may be an int or an integral float (``1.6e12`` -> ``1600000000000``); a missing or
``null`` item description becomes ``""``. Booleans are never numbers here.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dep_eval.data.records import Item, Review

logger = logging.getLogger(__name__)

RATING_RANGE = (1.0, 5.0)  # Amazon star ratings; the prompts say "out of 5"
# Arrow stores timestamps as int64 (``loaders.doc_features``): outside it they cannot be stored.
TIMESTAMP_RANGE = (-(2**63), 2**63 - 1)
# A review text longer than this is accepted but logged: prompts show only its first
# ``dep_eval.prompts.MAX_REVIEW_CHARS`` characters, and scoring reads only its first
# ``dep_eval.metrics.harness.MAX_SCORED_CHARS`` (= this) characters, since METEOR/BERTScore
# of a megabyte text take minutes. Real reviews stay far below (All_Beauty: at most 5,932).
LONG_TEXT_CHARS = 20_000
PROMPT_REVIEW_CHARS = 1500  # = dep_eval.prompts.MAX_REVIEW_CHARS (a test keeps them equal)


class DataError(ValueError):
    """Malformed input data. ``file``, ``line`` and ``field`` say where; the message says what
    to fix. ``line`` is the 1-based line of a local file or the 0-based row index of a hub
    split; ``None`` when the problem is not tied to a line (a missing folder, say)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        line_word: str = "line",
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if file is not None:
            if line is None:
                where.append(file)
            elif line_word == "line":
                where.append(f"{file}:{line}")
            else:
                where.append(f"{file} {line_word} {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Where:
    """A location for error messages: file (or hub split label) plus line (or row index)."""

    file: str
    line: int | None
    line_word: str = "line"  # "line" for files, "row" for hub splits

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(
            message, file=self.file, line=self.line, field=field, line_word=self.line_word
        )


@dataclass
class Lenient:
    """Collects review-level problems that the caller chose to skip instead of raising."""

    skipped: list[str] = field(default_factory=list)

    def skip(self, where: Where, what: str) -> None:
        self.skipped.append(f"{where.file} {where.line_word} {where.line}: {what}")


def require_dict(value: Any, where: Where, field_name: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(
            field_name, f"expected a JSON object, got {_describe(value)}; write it as {{...}}"
        )
    return value


def get_field(row: dict[str, Any], key: str, where: Where, prefix: str = "") -> Any:
    if key not in row:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise where.error(
            prefix + key, f"required field is missing (fields present: {present}); add it"
        )
    return row[key]


def as_str(value: Any, where: Where, field_name: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise where.error(field_name, f"expected a string, got {_describe(value)}")
    if non_empty and not value.strip():
        raise where.error(field_name, "must not be empty")
    check_unicode(value, where, field_name)
    return value


def check_unicode(value: str, where: Where, field_name: str) -> None:
    """JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which is no character: it
    cannot be written as UTF-8, so Arrow, tokenizers and the call cache would fail on it
    later, far from this line."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise where.error(
            field_name,
            f"holds a lone surrogate escape \\u{ord(value[exc.start]):04x} at character "
            f"{exc.start}, which is not valid Unicode text (a string cut in the middle of a "
            "surrogate pair?); fix or remove that escape",
        ) from exc


# Unicode categories that show nothing: format characters (zero-width space U+200B, joiners
# U+200C/U+200D, word joiner U+2060, the BOM U+FEFF, soft hyphen U+00AD, ...) and controls.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc"})


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only whitespace and invisible characters. ``str.strip``
    alone keeps zero-width characters, so a target of U+200B passed as text and scored 0."""
    return all(
        char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in text
    )


def check_category_name(category: str, root: object) -> None:
    """A category is the name of one folder inside the data folder ``root``: a path (``..``,
    ``a/b``, an absolute path) would read data from elsewhere while the results record
    ``root`` as their source."""
    if category in ("", ".", "..") or any(sep in category for sep in ("/", "\\", "\0")):
        folders = []
        if isinstance(root, Path) and root.is_dir():
            folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"category {category!r} is not the name of a folder inside the data folder {root}; "
            f"give one of its category folder names (categories there: "
            f"{', '.join(folders) or 'none'}), or point data_dir at another folder"
        )


def as_rating(value: Any, where: Where, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(field_name, f"expected a number (int or float), got {_describe(value)}")
    rating = float(value)
    if not math.isfinite(rating):
        raise where.error(field_name, f"expected a finite number, got {value!r}")
    low, high = RATING_RANGE
    if not low <= rating <= high:
        raise where.error(
            field_name, f"rating {value!r} is outside the valid range {low:g}-{high:g} (stars)"
        )
    return rating


def as_timestamp(value: Any, where: Where, field_name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise where.error(field_name, f"expected an integer timestamp, got {_describe(value)}")
    low, high = TIMESTAMP_RANGE
    if not low <= value <= high:
        raise where.error(
            field_name,
            f"timestamp {value} does not fit in 64 bits ({low} to {high}); "
            "use Unix time in seconds or milliseconds",
        )
    return value


def check_text_length(text: str, where: Where, field_name: str) -> None:
    """Log a review text over ``LONG_TEXT_CHARS``: it is used, but only its head counts."""
    if len(text) > LONG_TEXT_CHARS:
        message = (
            f"review text of {len(text):,} characters (over {LONG_TEXT_CHARS:,}): prompts show "
            f"its first {PROMPT_REVIEW_CHARS:,} and scoring reads its first {LONG_TEXT_CHARS:,}"
        )
        logger.warning("%s", where.error(field_name, message))


def parse_review(value: Any, where: Where, prefix: str) -> Review:
    """One review dict -> ``Review``; ``prefix`` is its path in the row, e.g. ``profile[3].``."""
    row = require_dict(value, where, prefix.rstrip(".") or None)
    review = Review(
        asin=as_str(get_field(row, "asin", where, prefix), where, prefix + "asin", non_empty=True),
        rating=as_rating(get_field(row, "rating", where, prefix), where, prefix + "rating"),
        title=as_str(get_field(row, "title", where, prefix), where, prefix + "title"),
        text=as_str(get_field(row, "text", where, prefix), where, prefix + "text"),
        timestamp=as_timestamp(
            get_field(row, "timestamp", where, prefix), where, prefix + "timestamp"
        ),
    )
    check_text_length(review.text, where, prefix + "text")
    return review


def parse_item(value: Any, where: Where) -> Item:
    """One meta row -> ``Item``. A missing or null description is the empty string."""
    row = require_dict(value, where, None)
    asin = as_str(get_field(row, "asin", where), where, "asin", non_empty=True)
    title = as_str(get_field(row, "title", where), where, "title")
    description = row.get("description")
    if description is None:
        description = ""
    elif not isinstance(description, str):
        raise where.error(
            "description",
            f'expected a string ("" if there is none), got {_describe(description)}',
        )
    else:
        check_unicode(description, where, "description")
    return Item(asin=asin, title=title, description=description)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = "null" if value is None else type(value).__name__
    return f"{kind} {text}" if value is not None else "null"

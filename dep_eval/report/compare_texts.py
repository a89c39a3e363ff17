"""``dep-eval compare-texts``: do two lm_eval runs hold the same generated texts?

Used to check that a refactor changes no output: run the same command (same ``--limit``,
``--batch_size``, ``--gen_kwargs``, seeds) with ``--log_samples`` on two commits, then

    dep-eval compare-texts OUT_BEFORE OUT_AFTER

It prints how many documents have identical texts and the first that differs, and exits
with status 1 when any document differs or is missing, so a script can rely on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def texts(folder: Path) -> dict[int, str]:
    """doc_id -> generated text of the one ``samples_*.jsonl`` under ``folder``."""
    found = sorted(folder.rglob("samples_*.jsonl"))
    if len(found) != 1:
        raise SystemExit(
            f"{folder}: expected one samples_*.jsonl, found {len(found)} "
            "(run lm_eval with --log_samples; point at one run's folder)"
        )
    out = {}
    for number, line in enumerate(found[0].read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            response = row["filtered_resps"][0]
            out[int(row["doc_id"])] = response if isinstance(response, str) else response[0]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise SystemExit(
                f"{found[0]}:{number}: not an lm-eval samples row with doc_id and "
                f"filtered_resps ({error!r}); is this an lm_eval --log_samples file?"
            ) from error
    return out


@dataclass(frozen=True)
class Comparison:
    """Documents of ``before`` with the same text in ``after``, and those without."""

    same: list[int]
    differing: list[int]  # a different text, or missing in ``after``
    extra: list[int]  # in ``after`` only

    @property
    def identical(self) -> bool:
        return not self.differing and not self.extra


def compare(before: dict[int, str], after: dict[int, str]) -> Comparison:
    same = sorted(doc for doc in before if after.get(doc) == before[doc])
    differing = sorted(set(before) - set(same))
    return Comparison(same, differing, sorted(set(after) - set(before)))


def report(before: dict[int, str], after: dict[int, str], result: Comparison) -> str:
    lines = [f"{len(result.same)}/{len(before)} documents identical"]
    if result.extra:
        lines.append(f"{len(result.extra)} document(s) only in the second run: {result.extra}")
    if result.differing:
        doc = result.differing[0]
        lines += [
            f"first difference, doc {doc}:",
            f"  before: {before[doc]!r}",
            f"  after:  {after.get(doc, '<missing>')!r}",
        ]
    return "\n".join(lines)


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare-texts",
        help="compare the generated texts of two lm_eval runs document by document",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("before", type=Path, help="lm_eval --output_path of the first run")
    parser.add_argument("after", type=Path, help="lm_eval --output_path of the second run")
    parser.set_defaults(handler=run_compare)
    return parser


def run_compare(args: argparse.Namespace) -> None:
    before, after = texts(args.before), texts(args.after)
    result = compare(before, after)
    print(report(before, after, result))
    if not result.identical:
        raise SystemExit(1)

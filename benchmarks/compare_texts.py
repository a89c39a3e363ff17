"""Compare the generated texts of two lm_eval runs document by document.

Used to check that a refactor changes no output: run the same command (same --limit,
--batch_size, --gen_kwargs, seeds) on two commits with --log_samples, then

    python benchmarks/compare_texts.py OUT_BEFORE OUT_AFTER

Prints how many documents have identical texts and the first that differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def texts(folder: Path) -> dict[int, str]:
    """doc_id -> generated text of the one samples file under ``folder``."""
    found = sorted(folder.rglob("samples_*.jsonl"))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one samples_*.jsonl, found {len(found)}")
    out = {}
    for line in found[0].read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        response = row["filtered_resps"][0]
        out[row["doc_id"]] = response if isinstance(response, str) else response[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = texts(args.before), texts(args.after)
    same = [doc for doc in before if after.get(doc) == before[doc]]
    print(f"{len(same)}/{len(before)} documents identical")
    differing = sorted(set(before) - set(same))
    if differing:
        doc = differing[0]
        print(
            f"first difference, doc {doc}:\n  before: {before[doc]!r}\n  after:  {after.get(doc)!r}"
        )


if __name__ == "__main__":
    main()

"""Check: ROUGE with ``RougeTokenizer`` against rouge-score's default tokenizer.

Issue 32 row 12: rouge-score's default tokenizer drops every non-ASCII character, so a perfect
copy of a Chinese, Arabic or emoji text scored 0.0. ``dep_eval.metrics.tokenize.RougeTokenizer``
replaces it; this script shows that English scores do not move and that other scripts now get
credit:

1. every text of the shared data (targets, profile reviews and titles of all splits) is
   tokenized both ways; the count of texts whose tokens differ must be 0;
2. ROUGE-1/-L F1 on the test and val splits, before (rouge-score's default tokenizer) and
   after (dep-eval's ``lexical.rouge_pair``), for two prediction sets built from the data:
   the user's most recent past review ("last review") and the target review's own title;
3. perfect copies and partial matches in Chinese, Japanese, Arabic, Russian, Hindi and emoji.

    python benchmarks/rouge_tokenizer.py --data ../shared/data/amazon_beauty

Writes results/rouge_tokenizer.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon_beauty"
CATEGORY = "All_Beauty"
TYPES = ("rouge1", "rougeL")

# (label, reference, prediction): a perfect copy and a partial match per script
SCRIPTS = [
    ("Chinese copy", "这个面霜很好用，我会再买。", "这个面霜很好用，我会再买。"),
    ("Chinese partial", "这个面霜很好用", "这个面霜不好用"),
    ("Japanese copy", "このクリームはとても良いです", "このクリームはとても良いです"),
    ("Arabic copy", "هذا المنتج رائع جدا", "هذا المنتج رائع جدا"),
    ("Arabic partial", "هذا المنتج رائع جدا", "هذا المنتج سيء"),
    ("Russian copy", "Отличный крем, куплю ещё", "Отличный крем, куплю ещё"),
    ("Hindi copy", "यह क्रीम बहुत अच्छी है", "यह क्रीम बहुत अच्छी है"),
    ("emoji copy", "😍😍👍", "😍😍👍"),
    ("English with emoji", "Love it ❤️ great cream", "Love it, great cream"),
]


def _old_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(TYPES), use_stemmer=False)


def _texts(data: Path) -> list[str]:
    texts = set()
    for split in ("train", "val", "test"):
        for line in (data / CATEGORY / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for review in (row["data"], *row["profile"]):
                texts.update((review["text"], review["title"]))
    return sorted(texts)


def _pairs(data: Path, split: str) -> dict[str, list[tuple[str, str]]]:
    from dep_eval.data.loaders import load_split, local_source

    samples = load_split(local_source(data), CATEGORY, split)
    return {
        "last review": [(s.profile[-1].text, s.target.text) for s in samples],
        "title": [(s.target.title, s.target.text) for s in samples],
    }


def _scores(pairs: list[tuple[str, str]]) -> dict[str, float]:
    from dep_eval.metrics import lexical

    old = _old_scorer()
    out: dict[str, float] = {"pairs": len(pairs), "max_abs_difference": 0.0}
    for name in TYPES:
        before = [old.score(ref, pred)[name].fmeasure for pred, ref in pairs]
        after = [lexical.rouge_pair(pred, ref)[name] for pred, ref in pairs]
        out[f"{name}_before"] = sum(before) / len(before)
        out[f"{name}_after"] = sum(after) / len(after)
        worst = max(abs(a - b) for a, b in zip(after, before, strict=True))
        out["max_abs_difference"] = max(out["max_abs_difference"], worst)
    return out


def main() -> None:
    from rouge_score import tokenize

    from dep_eval.metrics import lexical
    from dep_eval.metrics.tokenize import RougeTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    texts = _texts(args.data)
    ours = RougeTokenizer()
    differ = [t for t in texts if ours.tokenize(t) != tokenize.tokenize(t, None)]
    old = _old_scorer()
    report = {
        "data": str(args.data),
        "texts": len(texts),
        "texts_tokenized_differently": len(differ),
        "differing_texts": differ[:20],  # which ones (emoji-only texts, the only kind here)
        "splits": {
            split: {name: _scores(pairs) for name, pairs in _pairs(args.data, split).items()}
            for split in ("test", "val")
        },
        "scripts": [
            {
                "case": label,
                "rouge1_before": old.score(ref, pred)["rouge1"].fmeasure,
                "rouge1_after": lexical.rouge_pair(pred, ref)["rouge1"],
                "rougeL_after": lexical.rouge_pair(pred, ref)["rougeL"],
            }
            for label, ref, pred in SCRIPTS
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rouge_tokenizer.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "rouge_tokenizer.md").write_text(_markdown(report))
    print(_markdown(report))


def _markdown(report: dict) -> str:
    lines = [
        "# ROUGE tokenizer: rouge-score's default against dep-eval's RougeTokenizer",
        "",
        "`python benchmarks/rouge_tokenizer.py --data ../shared/data/amazon_beauty`",
        "",
        f"Texts of the shared data (all splits, texts and titles): {report['texts']:,}; "
        f"tokenized differently: **{report['texts_tokenized_differently']}** "
        f"({', '.join(map(repr, report['differing_texts']))}: emoji-only texts, which score "
        "differently only against a text holding the same emoji).",
        "",
        "| split | predictions | pairs | R-1 before | R-1 after | R-L before | R-L after "
        "| max abs pair difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, sets in report["splits"].items():
        for name, s in sets.items():
            lines.append(
                f"| {split} | {name} | {s['pairs']} | {s['rouge1_before']:.6f} | "
                f"{s['rouge1_after']:.6f} | {s['rougeL_before']:.6f} | {s['rougeL_after']:.6f} "
                f"| {s['max_abs_difference']:.3g} |"
            )
    lines += ["", "| case | R-1 before | R-1 after | R-L after |", "|---|---|---|---|"]
    for case in report["scripts"]:
        lines.append(
            f"| {case['case']} | {case['rouge1_before']:.4f} | {case['rouge1_after']:.4f} | "
            f"{case['rougeL_after']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

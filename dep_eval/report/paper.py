"""The paper's Table 1 (Qiu et al., EMNLP 2025), for reference rows only.

As the paper reports them (also listed in docs/method.md). These numbers come from
Qwen2.5-7B-Instruct (one row from Qwen2.5-32B) on the full test sets; nothing here is measured
by this project, so the leaderboard shows them apart, labelled, and never ranks them with
measured rows. The paper reports no ROUGE-L and no costs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    label: str
    values: dict[str, dict[str, float]]  # category -> metric -> value


_METRICS = ("rouge1", "meteor", "bleu", "bertscore_f1")

# (method, LLM) -> category -> (R-1, METEOR, BLEU, BERTScore), in Table 1's row order.
_TABLE_1: dict[tuple[str, str], dict[str, tuple[float, float, float, float]]] = {
    ("Non-Perso", "Qwen2.5-7B"): {
        "Books": (0.2907, 0.1735, 1.98, 0.5004),
        "Movies_and_TV": (0.2469, 0.1503, 0.72, 0.4713),
        "CDs_and_Vinyl": (0.2604, 0.1561, 1.10, 0.4753),
    },
    ("RAG", "Qwen2.5-7B"): {
        "Books": (0.3149, 0.2101, 3.69, 0.5083),
        "Movies_and_TV": (0.2693, 0.1701, 1.30, 0.4787),
        "CDs_and_Vinyl": (0.2796, 0.1733, 1.61, 0.4824),
    },
    ("PAG", "Qwen2.5-7B"): {
        "Books": (0.3136, 0.2378, 4.68, 0.4992),
        "Movies_and_TV": (0.2761, 0.1905, 1.94, 0.4735),
        "CDs_and_Vinyl": (0.2882, 0.1979, 2.47, 0.4789),
    },
    ("DPL", "Qwen2.5-7B"): {
        "Books": (0.3194, 0.2459, 5.66, 0.5050),
        "Movies_and_TV": (0.2845, 0.1958, 2.25, 0.4795),
        "CDs_and_Vinyl": (0.2952, 0.2003, 2.69, 0.4838),
    },
    ("PPlug", "Qwen2.5-7B"): {
        "Books": (0.3033, 0.2234, 7.05, 0.5152),
        "Movies_and_TV": (0.2530, 0.1724, 3.23, 0.4767),
        "CDs_and_Vinyl": (0.2619, 0.1711, 3.08, 0.4806),
    },
    ("DEP", "Qwen2.5-7B"): {
        "Books": (0.3745, 0.3156, 13.53, 0.5557),
        "Movies_and_TV": (0.3092, 0.2381, 6.68, 0.5114),
        "CDs_and_Vinyl": (0.3165, 0.2364, 6.52, 0.5151),
    },
    ("DPL", "Qwen2.5-32B"): {
        "Books": (0.3392, 0.3003, 7.74, 0.5156),
        "Movies_and_TV": (0.2967, 0.2238, 3.30, 0.4855),
        "CDs_and_Vinyl": (0.3119, 0.2337, 3.83, 0.4910),
    },
}


def paper_rows() -> list[PaperRow]:
    return [
        PaperRow(
            f"{method} (paper, {llm}, not measured here)",
            {cat: dict(zip(_METRICS, nums, strict=True)) for cat, nums in by_category.items()},
        )
        for (method, llm), by_category in _TABLE_1.items()
    ]

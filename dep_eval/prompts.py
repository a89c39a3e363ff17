"""The review-generation prompt that every method shares, piece by piece.

Step 8 of docs/method.md fixes its order: a system instruction; the target item's title and
description; up to K past reviews (item title, item description, rating, review title,
review text, and for DEP a his and a diff slot); then the given rating and title of the
review to write. Baselines use the same pieces minus what they lack, so that differences in
scores come from personalization, not from wording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample
from dep_eval.engine import Engine, Prompt

MAX_DESCRIPTION_CHARS = 1000  # hub descriptions can run to pages; the gist is at the start
MAX_REVIEW_CHARS = 1500
MAX_TITLE_CHARS = 100  # Amazon titles are keyword lists ("Lipstick | Vintage | ..."): keep the head
# Review titles (past ones and the target's given title): Amazon caps them at 100 characters
# (All_Beauty: at most 100), so the cap changes no real prompt; a pasted megabyte would
# otherwise push the instructions out of the context (issue 32).
MAX_REVIEW_TITLE_CHARS = 100

SYSTEM = (
    "You are a personalized review writer. Given a product and the rating and title of a "
    "user's review, write the text of that review the way this user writes: their length, "
    "tone, vocabulary and what they care about. Output only the review text."
)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."


def clip_title(title: str) -> str:
    """A review title as prompts show it: its first ``MAX_REVIEW_TITLE_CHARS`` characters."""
    return _clip(title, MAX_REVIEW_TITLE_CHARS)


def clipped_fields(sample: Sample) -> list[str]:
    """The fields of ``sample`` longer than prompts show (each is clipped, not dropped):
    what ``tasks/utils.py`` counts and logs once per run."""
    caps = [
        ("target title", sample.target.title, MAX_REVIEW_TITLE_CHARS),
        ("item title", sample.item.title, MAX_TITLE_CHARS),
        ("item description", sample.item.description, MAX_DESCRIPTION_CHARS),
    ]
    for review in sample.profile:
        caps += [
            ("past review title", review.title, MAX_REVIEW_TITLE_CHARS),
            ("past review text", review.text, MAX_REVIEW_CHARS),
        ]
    return sorted({name for name, text, limit in caps if len(text) > limit})


def item_lines(title: str, description: str) -> list[str]:
    lines = [f"Product: {_clip(title, MAX_TITLE_CHARS) or '(untitled)'}"]
    if description:
        lines.append(f"Description: {_clip(description, MAX_DESCRIPTION_CHARS)}")
    return lines


def past_review_block(
    index: int,
    review: Review,
    pool: DataPool,
    slots: str = "",
    with_text: bool = True,
    with_items: bool = True,
) -> str:
    lines = [f"Past review {index}:"]
    if with_items:
        item = pool.item(review.asin)
        lines += item_lines(item.title, item.description)
    lines.append(f"Rating: {review.rating:g}")
    if with_text:
        lines += [
            f"Title: {clip_title(review.title)}",
            f"Review: {_clip(review.text, MAX_REVIEW_CHARS)}",
        ]
    if slots:
        lines.append(slots)
    return "\n".join(lines)


def review_messages(
    sample: Sample,
    pool: DataPool,
    past: Sequence[Review] = (),
    slots: Sequence[str] = (),
    notes: str = "",
    system: str = SYSTEM,
    with_text: bool = True,
    with_items: bool = True,
) -> list[dict[str, str]]:
    """Chat messages for writing ``sample``'s review.

    ``past`` are profile reviews shown as text; ``slots[i]`` (if given) is appended to past
    review i (DEP's slot tokens); ``notes`` is extra text such as a PAG/DPL summary;
    ``with_text=False`` leaves out past reviews' titles and texts (DEP's ablation);
    ``with_items=False`` leaves out the past reviews' products, so that the product to review
    is the only one the prompt names (DEP's slots-only default, see dep/config.py).
    """
    parts = [
        "\n".join(
            ["The product to review:", *item_lines(sample.item.title, sample.item.description)]
        )
    ]
    if past:
        blocks = [
            past_review_block(
                i + 1, review, pool, slots[i] if i < len(slots) else "", with_text, with_items
            )
            for i, review in enumerate(past)
        ]
        parts.append("The user's past reviews:\n\n" + "\n\n".join(blocks))
    if notes:
        parts.append(notes)
    parts.append(
        f"The user's review of this product has rating {sample.target.rating:g} and title "
        f'"{clip_title(sample.target.title)}". Write its text.'
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def fit_prompt(llm: Engine, build: Callable[[int], Prompt], count: int, max_tokens: int) -> Prompt:
    """``build(n)`` with the largest n <= count whose prompt fits in ``max_tokens``.

    The reference drops reviews from the prompt when it is too long (3,072 tokens); the
    caller orders its reviews so that dropping from the end drops the least useful ones.
    """
    for n in range(count, 0, -1):
        prompt = build(n)
        if len(llm.tokenize(prompt)) <= max_tokens:
            return prompt
    return build(0)


def retrieved_reviews_prompt(
    llm: Engine,
    sample: Sample,
    pool: DataPool,
    past: Sequence[Review],
    max_prompt_tokens: int,
    notes: str = "",
) -> Prompt:
    """RAG's prompt, which PAG and DPL extend: the retrieved reviews (best first) plus
    optional ``notes`` (a PAG/DPL summary), dropping the least relevant reviews while it is
    longer than ``max_prompt_tokens``."""
    return fit_prompt(
        llm,
        lambda n: Prompt(review_messages(sample, pool, past[:n], notes=notes)),
        len(past),
        max_prompt_tokens,
    )

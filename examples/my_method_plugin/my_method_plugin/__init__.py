"""Example dep-eval plugin: echo the style of the user's most recent review.

The Non-Perso prompt (target item, given rating and title) plus the user's ``n_recent``
most recent past reviews and a note to write like them. One LLM call per document.
Registered for lm-eval through this package's ``lm_eval.models`` entry point (pyproject.toml).
"""

from __future__ import annotations

import dataclasses

from dep_eval.api import (
    DataPool,
    MethodConfig,
    PersonalizationMethod,
    Prompt,
    Sample,
    register_method,
    review_messages,
)

NOTE = "Write in the same style as the user's most recent review above."


@dataclasses.dataclass
class MyMethodConfig(MethodConfig):
    n_recent: int = 1  # --model_args n_recent=2


class MostRecentStyle(PersonalizationMethod):
    name = "my_method"
    Config = MyMethodConfig
    config: MyMethodConfig

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        recent = list(reversed(sample.profile))[: self.config.n_recent]  # profile: oldest first
        return Prompt(review_messages(sample, pool, recent, notes=NOTE if recent else ""))


register_method(MostRecentStyle, label="Most-recent style")

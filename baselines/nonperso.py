"""Non-Perso: the target item and the given rating and title, no user history."""

from __future__ import annotations

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Prompt
from dep_eval.methods.base import PersonalizationMethod
from dep_eval.prompts import review_messages
from dep_eval.registry import register_method


class NonPerso(PersonalizationMethod):
    name = "nonperso"

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        return Prompt(review_messages(sample, pool))


register_method(NonPerso, label="Non-Perso", order=0)

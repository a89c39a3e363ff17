"""Non-Perso: the target item and the given rating and title, no user history."""

from __future__ import annotations

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Prompt
from dep_eval.methods.base import PersonalizationMethod
from dep_eval.methods.lm_eval_model import lm_eval_model_for
from dep_eval.prompts import review_messages


class NonPerso(PersonalizationMethod):
    name = "nonperso"

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        return Prompt(review_messages(sample, pool))


NonPersoLM = lm_eval_model_for(NonPerso)

"""RAG: Non-Perso plus the user's top-k past reviews, retrieved with BM25.

docs/method.md (RAG): query = target review title + target item description; documents = each past
review's title + its item description; k = 8; one LLM call.
"""

from __future__ import annotations

import dataclasses

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod
from dep_eval.prompts import retrieved_reviews_prompt
from dep_eval.registry import register_method
from dep_eval.retrieval import retrieve


@dataclasses.dataclass
class RagConfig(MethodConfig):
    k: int = 8
    max_prompt_tokens: int = 3072


class Rag(PersonalizationMethod):
    name = "rag"
    Config = RagConfig
    config: RagConfig

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        past = retrieve(sample, pool, self.config.k)
        return retrieved_reviews_prompt(self.llm, sample, pool, past, self.config.max_prompt_tokens)


register_method(Rag, label="RAG", order=10)

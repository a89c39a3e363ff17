"""A persistent cache of auxiliary LLM calls (PAG's summaries, DPL's comparisons).

Keyed by the LLM, the generation settings, the seed and the rendered prompt, so a rerun,
another task over the same users, or a run interrupted half-way reuses every call already
made. One append-only JSONL file per LLM: each finished batch is appended and flushed, so
a crash loses at most the batch in flight; a torn last line is detected and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from dep_eval.cache import cache_dir
from dep_eval.engine import Generation, GenerationSettings

logger = logging.getLogger(__name__)


def call_key(
    llm_name: str,
    settings: GenerationSettings,
    max_new_tokens: int,
    seed: int,
    rendered_prompt: str,
) -> str:
    material = json.dumps(
        [llm_name, asdict(settings), max_new_tokens, seed, rendered_prompt], sort_keys=True
    )
    return hashlib.sha256(material.encode()).hexdigest()


class CallCache:
    def __init__(self, llm_name: str, folder: Path | None = None) -> None:
        folder = folder or cache_dir() / "calls"
        folder.mkdir(parents=True, exist_ok=True)
        safe = hashlib.sha256(llm_name.encode()).hexdigest()[:16]
        self.path = folder / f"{safe}.jsonl"
        self.entries: dict[str, Generation] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = Generation(
                        row["text"], row["prompt_tokens"], row["generated_tokens"], row["seconds"]
                    )
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning(
                        "%s line %d: unreadable cache entry skipped (torn write?)",
                        self.path,
                        number,
                    )

    def get(self, key: str) -> Generation | None:
        return self.entries.get(key)

    def put_many(self, items: list[tuple[str, Generation]]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            for key, generation in items:
                out.write(json.dumps({"key": key, **asdict(generation)}) + "\n")
                self.entries[key] = generation
            out.flush()
            os.fsync(out.fileno())

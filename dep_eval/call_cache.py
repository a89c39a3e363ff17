"""A persistent cache of auxiliary LLM calls (PAG's summaries, DPL's comparisons).

Keyed by the LLM, the generation settings, the seed and the rendered prompt, so a rerun,
another task over the same users, or a run interrupted half-way reuses every call already
made. One append-only JSONL file per LLM: each finished batch is appended and flushed, so
a crash loses at most the batch in flight. An unreadable line (torn JSON, bytes that are not
UTF-8, a missing key) is skipped with a warning naming the file and line; a torn last line
is ended with a newline before the next append, so it cannot swallow the next entry.
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
        # Bytes, decoded per line inside the ``try``: one bad byte must cost one entry, not
        # the whole cache (and with it the run).
        with self.path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.decode("utf-8"))
                    self.entries[row["key"]] = Generation(
                        row["text"], row["prompt_tokens"], row["generated_tokens"], row["seconds"]
                    )
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                    logger.warning(
                        "%s:%d: unreadable cache entry skipped (%s: %s; torn write?)",
                        self.path,
                        number,
                        type(exc).__name__,
                        exc,
                    )

    def get(self, key: str) -> Generation | None:
        return self.entries.get(key)

    def put_many(self, items: list[tuple[str, Generation]]) -> None:
        with self.path.open("a+b") as out:
            out.seek(0, os.SEEK_END)
            if out.tell() > 0:
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":  # a torn tail from a crash: end it first
                    logger.warning("%s: torn last line ended before appending", self.path)
                    out.write(b"\n")
            for key, generation in items:
                out.write((json.dumps({"key": key, **asdict(generation)}) + "\n").encode())
                self.entries[key] = generation
            out.flush()
            os.fsync(out.fileno())

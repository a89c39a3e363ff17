"""Persistent caches of LLM calls: auxiliary calls (PAG's summaries, DPL's comparisons) and
final generations (the review texts a run is scored on).

Auxiliary calls are keyed by the LLM, the generation settings, the seed and the rendered
prompt, so a rerun, another task over the same users, or a run interrupted half-way reuses
every call already made. Final generations are keyed by all of that plus the method and its
settings and the bytes of the prompt's soft vectors (``final_key``), so a run killed at 90 %
resumes at 90 %. One append-only JSONL file per LLM and kind: each finished batch is appended
and fsynced, so a crash loses at most the batch in flight; a torn last line is skipped when
read and ended before the next append (``dep_eval.io.append_jsonl``). Any other unreadable
line (torn JSON, bytes that are not UTF-8, a missing key, a field of the wrong type such as
``"text": null``) is skipped with a warning naming the file and line.

Writing is best-effort: a cache that cannot be appended to (a full disk, a folder made
read-only during the run) must not cost the generations it was about to save. The first
failure is logged once, with the folder and ``DEP_EVAL_CACHE_DIR``; the entries stay in memory
for the rest of the run and the run goes on. (An unusable cache folder is refused earlier,
before the LLM loads: ``dep_eval.preflight.check_cache_dir``.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from dep_eval.cache import CACHE_ENV, cache_dir
from dep_eval.engine import Generation, GenerationSettings
from dep_eval.io import append_jsonl

logger = logging.getLogger(__name__)


def call_key(
    llm_name: str,
    settings: GenerationSettings,
    max_new_tokens: int,
    seed: int,
    rendered_prompt: str,
    engine: str = "",
) -> str:
    """Key of an auxiliary call. ``engine`` describes the engine as the final generations'
    key does (backend, dtype, device, the ``peft=`` adapter by content, ...): the same prompt
    on another adapter or dtype is another answer."""
    parts: list[Any] = [llm_name, asdict(settings), max_new_tokens, seed, rendered_prompt]
    if engine:  # only then, so that keys made without one stay as they were
        parts.append(engine)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def tensor_digest(vectors: torch.Tensor | None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes ("" for None): soft vectors as a key."""
    if vectors is None:
        return ""
    flat = vectors.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{flat.dtype}{tuple(flat.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def final_key(
    llm_name: str,
    method_settings: str,
    settings: GenerationSettings,
    max_new_tokens: int,
    seed: int,
    rendered_prompt: str,
    soft_vectors: torch.Tensor | None,
    adapter: str | None = None,
) -> str:
    """Key of a final generation: everything that determines its text (``adapter``: the
    prompt's own PEFT adapter folder, whose name holds its content key, e.g. OPPU's)."""
    parts = [
        llm_name,
        method_settings,
        asdict(settings),
        max_new_tokens,
        seed,
        rendered_prompt,
        tensor_digest(soft_vectors),
    ]
    if adapter:  # only then, so that the keys of prompts without one stay as they were
        parts.append(adapter)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class CallCache:
    """Generations by key, in ``<folder>/<hash of the LLM name>.jsonl``.

    ``folder`` defaults to ``<cache>/calls`` (auxiliary calls); the lm-eval adapter keeps
    final generations in ``<cache>/generations``.
    """

    def __init__(self, llm_name: str, folder: Path | None = None) -> None:
        folder = folder or cache_dir() / "calls"
        folder.mkdir(parents=True, exist_ok=True)
        safe = hashlib.sha256(llm_name.encode()).hexdigest()[:16]
        self.path = folder / f"{safe}.jsonl"
        self.entries: dict[str, Generation] = {}
        self.write_failed = False  # set at the first failed append; later ones are skipped
        if self.path.exists():  # a torn last line (a kill mid-write) is skipped with a warning
            self._load()

    def _load(self) -> None:
        # Bytes, decoded per line inside the ``try``: one bad byte must cost one entry, not
        # the whole cache (and with it the run).
        with self.path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    key, generation = _entry(json.loads(line.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                    logger.warning(
                        "%s:%d: unreadable cache entry skipped (%s: %s; torn write?)",
                        self.path,
                        number,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                self.entries[key] = generation

    def get(self, key: str) -> Generation | None:
        return self.entries.get(key)

    def put_many(self, items: list[tuple[str, Generation]]) -> None:
        """Keep ``items`` for this run and append them to the file (best-effort, see the
        module docstring)."""
        if not items:
            return
        self.entries.update(items)
        if self.write_failed:
            return
        try:
            append_jsonl(
                self.path, [{"key": key, **asdict(generation)} for key, generation in items]
            )
        except OSError as error:
            self.write_failed = True
            logger.warning(
                "could not save to the cache %s (%s): going on without saving, so a rerun "
                "regenerates these texts; free space there, or point %s at another folder",
                self.path.parent,
                error.strerror or error,
                CACHE_ENV,
            )


def _entry(row: Any) -> tuple[str, Generation]:
    """One cache line -> (key, generation); ``TypeError`` names the first mistyped field, so
    that ``"text": null`` is skipped like a torn line instead of scored as "None"."""
    if not isinstance(row, dict):
        raise TypeError(f"expected a JSON object, got {type(row).__name__}")
    checks = (
        ("key", str),
        ("text", str),
        ("prompt_tokens", int),
        ("generated_tokens", int),
        ("seconds", (int, float)),
    )
    for name, kind in checks:
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise TypeError(f"field {name!r} is {json.dumps(value)[:40]}, not {_kind(kind)}")
    if row["prompt_tokens"] < 0 or row["generated_tokens"] < 0:
        raise TypeError("a token count is negative")
    if not math.isfinite(row["seconds"]):
        raise TypeError(f"field 'seconds' is {row['seconds']}, not a finite number")
    generation = Generation(
        row["text"], row["prompt_tokens"], row["generated_tokens"], float(row["seconds"])
    )
    return row["key"], generation


def _kind(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", int: "a whole number"}.get(kind, "a number")  # type: ignore[call-overload]

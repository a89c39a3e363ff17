"""Per-document cost accounting, shared by every method.

The model side records what each document cost (LLM calls, prompt and generated tokens,
wall seconds); the task's ``process_results`` runs in the same process and reads it back, so
costs land in lm-eval's own results and samples files as ordinary metrics, beside quality.
One-off set-up work (encoding the pool, summaries shared across documents) is recorded
separately, per method, and reported as ``setup_seconds``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class DocumentCost:
    llm_calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: DocumentCost) -> None:
        self.llm_calls += other.llm_calls
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.seconds += other.seconds


_lock = threading.Lock()
_costs: dict[str, DocumentCost] = {}
_setup_seconds: dict[str, float] = {}


def record(doc_key: str, cost: DocumentCost) -> None:
    """Add ``cost`` to what ``doc_key`` has cost so far in this process."""
    with _lock:
        _costs.setdefault(doc_key, DocumentCost()).add(cost)


def lookup(doc_key: str) -> dict[str, float] | None:
    """The recorded cost of a document, or None if no dep-eval model produced it."""
    with _lock:
        cost = _costs.get(doc_key)
    return None if cost is None else asdict(cost)


def record_setup(method: str, seconds: float) -> None:
    with _lock:
        _setup_seconds[method] = _setup_seconds.get(method, 0.0) + seconds


def setup_seconds() -> float:
    with _lock:
        return sum(_setup_seconds.values())

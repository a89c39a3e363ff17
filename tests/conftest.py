"""Shared pytest fixtures.

The real development data lives beside the project (``../shared/data``), never inside it; a
user's machine has none of it, so tests that need it skip with a clear reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``<repo>/../shared/data``; skips the test when that folder is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared development data not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def beauty_dir(shared_data_dir: Path) -> Path:
    """The shared All_Beauty data folder (``<dir>/All_Beauty/{train,val,test,meta}.jsonl``)."""
    return shared_data_dir / "amazon_beauty"


@pytest.fixture(scope="session")
def llm():
    """The embedded SmolLM2-135M-Instruct, loaded once for the whole session."""
    from dep_eval.engine.hf import HFEngine

    return HFEngine(device="cpu")

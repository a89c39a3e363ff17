"""Shared pytest fixtures.

The real development data lives beside the project (``../shared/data``), never inside it. A
user's fresh clone has none of it: tests that only need data in that layout then run on
``tests/fixtures/review_data`` (synthetic, written by ``make_review_data.py``), and tests
that check figures of the real data (``@pytest.mark.real_data``) skip, saying why.
``DEP_EVAL_TEST_DATA=fixture`` forces the fixture where the real data is present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE_DATA_DIR = Path(__file__).resolve().parent / "fixtures" / "review_data"


def real_data_present() -> bool:
    return SHARED_DATA_DIR.is_dir() and os.environ.get("DEP_EVAL_TEST_DATA") != "fixture"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if real_data_present():
        return
    skip = pytest.mark.skip(
        reason=f"checks figures of the real data, which is not at {SHARED_DATA_DIR} "
        "(or DEP_EVAL_TEST_DATA=fixture)"
    )
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``<repo>/../shared/data`` where present, else the synthetic ``tests/fixtures/review_data``
    (same layout, same category; tests of the real data's figures are marked ``real_data``)."""
    return SHARED_DATA_DIR if real_data_present() else FIXTURE_DATA_DIR


@pytest.fixture(scope="session")
def beauty_dir(shared_data_dir: Path) -> Path:
    """The All_Beauty data folder (``<dir>/All_Beauty/{train,val,test,meta}.jsonl``)."""
    return shared_data_dir / "amazon_beauty"


@pytest.fixture(scope="session")
def llm():
    """The embedded SmolLM2-135M-Instruct, loaded once for the whole session."""
    from dep_eval.engine.hf import HFEngine

    return HFEngine(device="cpu")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights, grouped KV heads (4 query heads, 2 KV heads) and
    the embedded tokenizer: the engine's decode paths in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dep_eval.engine import loading

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = loading.load_tokenizer(loading.model_path(None))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder

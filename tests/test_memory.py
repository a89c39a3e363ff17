"""batch_size=auto: the memory arithmetic it rests on."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dep_eval.engine.memory import MAX_AUTO_BATCH, RowCost, auto_batch_size, row_cost

# SmolLM2-135M's shape
SMOLLM2 = SimpleNamespace(
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    hidden_size=576,
    intermediate_size=1536,
    head_dim=64,
)


def test_row_cost_of_smollm2() -> None:
    cost = row_cost(SMOLLM2, torch.float32, prompt_tokens=1000, new_tokens=256)
    assert cost.kv_cache == 30 * 2 * 3 * 64 * 1256 * 4  # 57.9 MB
    assert cost.prefill == 9 * 1000**2 * 4 + 3 * 1000 * 1536 * 4
    half = row_cost(SMOLLM2, torch.bfloat16, prompt_tokens=1000, new_tokens=256)
    assert half.kv_cache * 2 == cost.kv_cache  # 2-byte cache, float32 attention scores either way


def test_head_dim_and_kv_heads_default_from_the_config() -> None:
    plain = SimpleNamespace(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=256, intermediate_size=512
    )
    assert row_cost(plain, torch.float32, 10, 0).kv_cache == 2 * 2 * 4 * 64 * 10 * 4


def test_auto_batch_size_fills_the_budget_and_says_why() -> None:
    cost = RowCost(kv_cache=100 * 2**20, prefill=96 * 2**20)
    size, reason = auto_batch_size(cost, available=8 * 2**30, rows=1000)
    assert size == 40  # (half of 8 GiB - one prefill) / 100 MiB per row's KV cache
    assert "50% of 8.0 GiB" in reason and "100 MiB" in reason and "40 rows fit" in reason
    assert auto_batch_size(cost, available=8 * 2**30, rows=5)[0] == 5
    assert auto_batch_size(cost, available=2**20, rows=5)[0] == 1  # never 0
    assert auto_batch_size(RowCost(1, 0), available=2**40, rows=10**6)[0] == MAX_AUTO_BATCH

"""batch_size=auto: the memory arithmetic it rests on, and where the memory is counted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dep_eval.engine import memory
from dep_eval.engine.memory import (
    CUDA_MEMORY_FRACTION,
    MAX_AUTO_BATCH,
    MAX_AUTO_BATCH_CUDA,
    MEMORY_FRACTION,
    Budget,
    RowCost,
    auto_batch_size,
    device_budget,
    row_cost,
)

# SmolLM2-135M's shape
SMOLLM2 = SimpleNamespace(
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    hidden_size=576,
    intermediate_size=1536,
    head_dim=64,
)
# Qwen2.5-7B's shape (the paper's LLM)
QWEN_7B = SimpleNamespace(
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    hidden_size=3584,
    intermediate_size=18944,
    head_dim=128,
)


def test_row_cost_of_smollm2() -> None:
    cost = row_cost(SMOLLM2, torch.float32, prompt_tokens=1000, new_tokens=256)
    assert cost.kv_cache == 30 * 2 * 3 * 64 * 1256 * 4  # 57.9 MB
    assert cost.prefill == 9 * 1000**2 * 4 + 3 * 1000 * 1536 * 4
    half = row_cost(SMOLLM2, torch.bfloat16, prompt_tokens=1000, new_tokens=256)
    assert half.kv_cache * 2 == cost.kv_cache  # 2-byte cache, float32 attention scores either way


def test_a_grouped_prefill_counts_every_row_of_its_group() -> None:
    one = row_cost(SMOLLM2, torch.float32, prompt_tokens=500, new_tokens=64)
    four = row_cost(SMOLLM2, torch.float32, prompt_tokens=500, new_tokens=64, prefill_rows=4)
    assert four.prefill == 4 * one.prefill and four.kv_cache == one.kv_cache


def test_head_dim_and_kv_heads_default_from_the_config() -> None:
    plain = SimpleNamespace(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=256, intermediate_size=512
    )
    assert row_cost(plain, torch.float32, 10, 0).kv_cache == 2 * 2 * 4 * 64 * 10 * 4


def test_auto_batch_size_fills_the_budget_and_says_why() -> None:
    cost = RowCost(kv_cache=100 * 2**20, prefill=96 * 2**20)
    host = Budget(8 * 2**30, 0.5, MAX_AUTO_BATCH, "host RAM")
    size, reason = auto_batch_size(cost, host, rows=1000)
    assert size == 40  # (half of 8 GiB - one prefill) / 100 MiB per row's KV cache
    assert "50% of 8.0 GiB free (host RAM)" in reason
    assert "100 MiB" in reason and "40 rows fit" in reason
    assert auto_batch_size(cost, host, rows=5)[0] == 5
    tiny = Budget(2**20, 0.5, MAX_AUTO_BATCH, "host RAM")
    assert auto_batch_size(cost, tiny, rows=5)[0] == 1  # never 0
    huge = Budget(2**40, 0.5, MAX_AUTO_BATCH, "host RAM")
    assert auto_batch_size(RowCost(1, 0), huge, rows=10**6)[0] == MAX_AUTO_BATCH


def _no_host_ram() -> None:
    raise AssertionError("host RAM was consulted for a GPU's batch")


def test_on_cuda_the_gpus_free_memory_is_counted_not_host_ram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return 84 * 2**30, 141 * 2**30  # an H200 with a 7B model loaded

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(memory, "available_memory", _no_host_ram)
    budget = device_budget(torch.device("cuda:0"))
    assert asked == [torch.device("cuda:0")]
    assert budget == Budget(84 * 2**30, CUDA_MEMORY_FRACTION, MAX_AUTO_BATCH_CUDA, "GPU cuda:0")
    # RAG prompts of ~1,440 tokens + 128 new on the 7B in bf16: ~89 MiB of KV cache a row, so
    # far more than the CPU's 64 rows fit the GPU, and the GPU's own cap applies
    cost = row_cost(QWEN_7B, torch.bfloat16, 1440, 128, prefill_rows=16384 // 1440)
    size, reason = auto_batch_size(cost, budget, rows=1000)
    assert MAX_AUTO_BATCH < size <= MAX_AUTO_BATCH_CUDA
    assert "(GPU cuda:0)" in reason


def test_a_small_gpu_in_a_big_host_is_sized_by_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure of issue 31: 119.5 GiB of host RAM must not size a 24 GB card's batch."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * 2**30, 24 * 2**30))
    monkeypatch.setattr(memory, "available_memory", lambda: int(119.5 * 2**30))
    cost = row_cost(QWEN_7B, torch.bfloat16, 1440, 128)
    on_gpu, _ = auto_batch_size(cost, device_budget(torch.device("cuda")), rows=1000)
    on_host, _ = auto_batch_size(cost, device_budget(torch.device("cpu")), rows=1000)
    gpu_bytes = on_gpu * cost.kv_cache + cost.prefill
    assert gpu_bytes <= 4 * 2**30 * CUDA_MEMORY_FRACTION  # fits the GPU's free memory
    assert on_host == MAX_AUTO_BATCH  # host RAM's pick: 64 rows, over 5 GiB
    assert on_gpu < on_host


def test_on_a_cpu_host_ram_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gpu(device: torch.device) -> tuple[int, int]:
        raise AssertionError("a CPU engine asked the GPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_gpu)
    monkeypatch.setattr(memory, "available_memory", lambda: 16 * 2**30)
    assert device_budget(torch.device("cpu")) == Budget(
        16 * 2**30, MEMORY_FRACTION, MAX_AUTO_BATCH, "host RAM"
    )

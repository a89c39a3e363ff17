"""How many rows fit in memory: the arithmetic behind ``batch_size=auto``.

A row of a batch costs its KV cache (kept for the whole generation). The engine prefills
one row at a time, so the prefill's activations (one layer's attention scores and MLP
hidden layer: layers run one after another) are paid once per batch, for its longest
prompt, not once per row. The weights are already loaded and are not counted.
``auto_batch_size`` fills a fraction of the memory available now with such rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.5  # of the available memory; the rest is for the OS, metrics, others
MAX_AUTO_BATCH = 64  # beyond this a CPU gains nothing per step (decode stays memory-bound)


@dataclass(frozen=True)
class RowCost:
    kv_cache: int  # bytes of one row's KV cache at full context
    prefill: int  # bytes of one layer's activations for one row's prompt


def element_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def row_cost(config, dtype: torch.dtype, prompt_tokens: int, new_tokens: int) -> RowCost:  # noqa: ANN001
    """Memory one row needs, from a transformers model ``config``.

    KV cache: layers x 2 (keys and values) x kv_heads x head_dim x (prompt + new tokens)
    x dtype bytes. Prefill peak (one layer): attention scores heads x prompt^2 (float32,
    as CPU attention computes them) plus the MLP's gate, up and product, 3 x prompt x
    intermediate_size x dtype bytes.
    """
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    size = element_bytes(dtype)
    context = prompt_tokens + new_tokens
    kv = config.num_hidden_layers * 2 * kv_heads * head_dim * context * size
    prefill = heads * prompt_tokens**2 * 4 + 3 * prompt_tokens * config.intermediate_size * size
    return RowCost(kv, prefill)


def available_memory() -> int:
    """Bytes the OS can give this process now (MemAvailable, via psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def auto_batch_size(
    cost: RowCost, available: int, rows: int, fraction: float = MEMORY_FRACTION
) -> tuple[int, str]:
    """The largest batch whose KV caches, plus one prefill, fit ``fraction`` of
    ``available`` bytes, and why.

    At least 1, at most ``MAX_AUTO_BATCH`` and the number of ``rows`` to generate.
    """
    budget = int(available * fraction)
    fits = max(1, (budget - cost.prefill) // max(cost.kv_cache, 1))
    chosen = max(1, min(fits, MAX_AUTO_BATCH, rows))
    reason = (
        f"{fraction:.0%} of {available / 2**30:.1f} GiB available = {budget / 2**30:.1f} GiB; "
        f"a row's KV cache needs {cost.kv_cache / 2**20:.0f} MiB and one prefill "
        f"{cost.prefill / 2**20:.0f} MiB, so {fits} rows fit; "
        f"capped at {MAX_AUTO_BATCH} and {rows} prompts"
    )
    return chosen, reason

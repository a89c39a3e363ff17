"""How many rows fit in memory: the arithmetic behind ``batch_size=auto``.

A row of a batch costs its KV cache (kept for the whole generation). On a CPU the engine
prefills one row at a time, so the prefill's activations (one layer's attention scores and
MLP hidden layer: layers run one after another) are paid once per batch, for its longest
prompt, not once per row; on a GPU it prefills a group of rows per forward
(``HFEngine.prefill_batched``), which ``row_cost(prefill_rows=...)`` counts. The weights are
already loaded and are not counted.

Where the memory is counted follows the engine's device (``device_budget``): host RAM
(``psutil``) on a CPU, the GPU's free memory (``torch.cuda.mem_get_info``) on CUDA. Host RAM
says nothing about a GPU: a 24 GB card in a host with 120 GB free would be overfilled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.5  # of host RAM available: the rest is for the OS, metrics, others
MAX_AUTO_BATCH = 64  # CPU: beyond this a step gains nothing (decode stays memory-bound)
# A GPU is the engine's own and mem_get_info already leaves out the weights and what other
# processes hold, so more of it is used; the rest covers the allocator's fragmentation, the
# logits and the decode step's transients.
CUDA_MEMORY_FRACTION = 0.8
# A GPU step reads the weights once for every row: a 7B model's bf16 decode on an H200 stays
# memory-bound up to a few hundred rows (989 TFLOP/s over 4.8 TB/s is ~200 FLOP a byte).
MAX_AUTO_BATCH_CUDA = 256


@dataclass(frozen=True)
class RowCost:
    kv_cache: int  # bytes of one row's KV cache at full context
    prefill: int  # bytes of one prefill forward's activations (one layer; see row_cost)


@dataclass(frozen=True)
class Budget:
    """Memory ``batch_size=auto`` may fill: ``fraction`` of ``available`` bytes on ``where``,
    and at most ``cap`` rows."""

    available: int
    fraction: float
    cap: int
    where: str  # "host RAM" or "GPU cuda:0", for the log line


def element_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def row_cost(
    config: PretrainedConfig,
    dtype: torch.dtype,
    prompt_tokens: int,
    new_tokens: int,
    prefill_rows: int = 1,
) -> RowCost:
    """Memory one row needs, from a transformers model ``config``.

    KV cache: layers x 2 (keys and values) x kv_heads x head_dim x (prompt + new tokens)
    x dtype bytes. Prefill peak (one layer, ``prefill_rows`` prompts in one forward):
    attention scores heads x prompt^2 (float32, as CPU attention computes them) plus the
    MLP's gate, up and product, 3 x prompt x intermediate_size x dtype bytes, per row.
    """
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    size = element_bytes(dtype)
    context = prompt_tokens + new_tokens
    kv = config.num_hidden_layers * 2 * kv_heads * head_dim * context * size
    prefill = heads * prompt_tokens**2 * 4 + 3 * prompt_tokens * config.intermediate_size * size
    return RowCost(kv, prefill * prefill_rows)


def available_memory() -> int:
    """Bytes the OS can give this process now (MemAvailable, via psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def device_budget(device: torch.device) -> Budget:
    """What ``batch_size=auto`` may fill on ``device``: the GPU's free memory on CUDA (its
    current device when ``device`` names no index), host RAM otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return Budget(int(free), CUDA_MEMORY_FRACTION, MAX_AUTO_BATCH_CUDA, f"GPU {device}")
    return Budget(available_memory(), MEMORY_FRACTION, MAX_AUTO_BATCH, "host RAM")


def auto_batch_size(cost: RowCost, budget: Budget, rows: int) -> tuple[int, str]:
    """The largest batch whose KV caches, plus one prefill, fit the ``budget``, and why.

    At least 1, at most ``budget.cap`` and the number of ``rows`` to generate.
    """
    usable = int(budget.available * budget.fraction)
    fits = max(1, (usable - cost.prefill) // max(cost.kv_cache, 1))
    chosen = max(1, min(fits, budget.cap, rows))
    reason = (
        f"{budget.fraction:.0%} of {budget.available / 2**30:.1f} GiB free ({budget.where}) = "
        f"{usable / 2**30:.1f} GiB; a row's KV cache needs {cost.kv_cache / 2**20:.0f} MiB and "
        f"one prefill {cost.prefill / 2**20:.0f} MiB, so {fits} rows fit; "
        f"capped at {budget.cap} and {rows} prompts"
    )
    return chosen, reason

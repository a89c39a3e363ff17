"""A KV cache allocated once per batch, written in place: no copy of the cache per step.

transformers' ``DynamicCache`` grows by ``torch.cat``: every decode step copies each layer's
whole cache to append one position. At batch 8 and ~1,400 tokens of context that copy moves
about as many bytes per step as the weights themselves, so it grows with the batch and
eats the gain of batching (see ``benchmarks/bench_generation.py``). Here each layer's keys
and values live in a buffer sized for prompt + new tokens from the start; a step writes one
position and attention reads a view of the filled part.

``left_padded`` assembles the batch's cache from rows prefilled one by one: a batched
prefill pads every prompt to the longest, and at batch 8 on RAG prompts of 600 to 2,000
tokens that padding (and attention over it) cut the prefill to 324 tokens/s against 847 for
the rows alone (results/bench_generation.md), while a CPU prefill is compute-bound and gains
nothing from batching. Serving
engines likewise prefill without padding and batch only the decode.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a (B, kv_heads, capacity, head_dim) buffer."""

    is_croppable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, _ = key_states.shape
        self._keys = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self._values = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions, capacity {self.capacity}")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self._keys[:, :, :end]
        self.values = self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity


class PreallocatedCache(Cache):
    """A cache of ``PreallocatedLayer``s, one per decoder layer."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        super().__init__(layers=[PreallocatedLayer(capacity) for _ in range(num_layers)])


def left_padded(rows: list[PreallocatedCache], width: int, capacity: int) -> PreallocatedCache:
    """One (B, kv_heads, capacity, head_dim) cache per layer from caches of consecutive rows.

    Each cache of ``rows`` holds one row prefilled alone, or a group of rows left-padded to
    the group's own width (``HFEngine.prefill_batched``); B is their total. A cache's
    positions go to the right end of the first ``width`` slots, as left padding puts its
    tokens; the slots left of it hold zeros. Padding slots (zeros, or a group's padding
    tokens) are masked by the attention mask and finite, so a zero attention weight times
    them stays zero. Frees each cache's buffers as they are copied, layer by layer, so the
    parts and the batch are never both held in full.
    """
    batch = PreallocatedCache(len(rows[0].layers), capacity)
    total = sum(row.layers[0]._keys.shape[0] for row in rows)
    for i, layer in enumerate(batch.layers):
        row_layers = [row.layers[i] for row in rows]
        first = row_layers[0]._keys  # (rows of the part, kv_heads, part capacity, head_dim)
        shape = (total, first.shape[1], capacity, first.shape[3])
        layer._keys = first.new_zeros(shape)
        layer._values = row_layers[0]._values.new_zeros(shape)
        b = 0
        for row_layer in row_layers:
            n, start = row_layer._keys.shape[0], width - row_layer.length
            layer._keys[b : b + n, :, start:width] = row_layer._keys[:, :, : row_layer.length]
            layer._values[b : b + n, :, start:width] = row_layer._values[:, :, : row_layer.length]
            row_layer._keys = row_layer._values = row_layer.keys = row_layer.values = None
            b += n
        layer.device, layer.is_initialized, layer.length = first.device, True, width
        layer.keys, layer.values = layer._keys[:, :, :width], layer._values[:, :, :width]
    return batch

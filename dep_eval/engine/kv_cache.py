"""A KV cache allocated once per batch, written in place: no copy of the cache per step.

transformers' ``DynamicCache`` grows by ``torch.cat``: every decode step copies each layer's
whole cache to append one position. At batch 8 and ~1,400 tokens of context that copy moves
about as many bytes per step as the weights themselves, so it grows with the batch and
eats the gain of batching (see ``benchmarks/bench_generation.py``). Here each layer's keys
and values live in a buffer sized for prompt + new tokens from the start; a step writes one
position and attention reads a view of the filled part.
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

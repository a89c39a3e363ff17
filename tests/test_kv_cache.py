"""The preallocated KV cache and the batch cache assembled from rows prefilled alone."""

from __future__ import annotations

import pytest
import torch

from dep_eval.engine.kv_cache import PreallocatedCache, left_padded


def prefilled(length: int, fill: float) -> PreallocatedCache:
    cache = PreallocatedCache(num_layers=2, capacity=length)
    for layer in cache.layers:
        states = torch.full((1, 3, length, 4), fill)  # (1, kv_heads, length, head_dim)
        layer.update(states, -states)
    return cache


def test_update_writes_in_place_and_refuses_beyond_capacity() -> None:
    cache = PreallocatedCache(num_layers=1, capacity=3)
    layer = cache.layers[0]
    keys, _ = layer.update(torch.ones(2, 1, 2, 4), torch.ones(2, 1, 2, 4))
    assert keys.shape == (2, 1, 2, 4) and cache.get_seq_length() == 2
    buffer = layer._keys.data_ptr()
    keys, _ = layer.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))
    assert keys.shape == (2, 1, 3, 4) and layer._keys.data_ptr() == buffer  # no copy
    with pytest.raises(RuntimeError, match="KV cache full"):
        layer.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))


def test_left_padded_puts_each_row_at_the_right_end_with_zero_padding() -> None:
    rows = [prefilled(2, 1.0), prefilled(5, 2.0)]
    batch = left_padded(rows, width=5, capacity=8)
    for layer in batch.layers:
        assert layer._keys.shape == (2, 3, 8, 4) and layer.get_seq_length() == 5
        assert layer.keys.shape == (2, 3, 5, 4)
        assert torch.equal(layer.keys[0, :, :3], torch.zeros(3, 3, 4))  # row 0's padding
        assert torch.equal(layer.keys[0, :, 3:], torch.ones(3, 2, 4))
        assert torch.equal(layer.values[1], torch.full((3, 5, 4), -2.0))
    assert all(layer._keys is None for row in rows for layer in row.layers)  # freed
    keys, _ = batch.layers[0].update(torch.zeros(2, 3, 1, 4), torch.zeros(2, 3, 1, 4))
    assert keys.shape == (2, 3, 6, 4)  # decoding continues after the prompts


def test_left_padded_places_a_group_of_rows_at_the_right_end() -> None:
    """A batched prefill's group (2 rows left-padded to width 3) after a row alone."""
    alone = prefilled(4, 7.0)
    group = PreallocatedCache(num_layers=2, capacity=3)
    states = torch.arange(2 * 3 * 3 * 4, dtype=torch.float32).reshape(2, 3, 3, 4)
    for layer in group.layers:
        layer.update(states, states + 100)
    batch = left_padded([alone, group], width=4, capacity=6)
    for layer in batch.layers:
        assert layer._keys.shape == (3, 3, 6, 4) and layer.get_seq_length() == 4
        assert torch.equal(layer.keys[0], torch.full((3, 4, 4), 7.0))  # the row alone
        assert torch.equal(layer.keys[1:, :, 0], torch.zeros(2, 3, 4))  # left of the group
        assert torch.equal(layer.keys[1:, :, 1:], states)  # the group's 3 positions, in order
        assert torch.equal(layer.values[1:, :, 1:], states + 100)
    assert all(layer._keys is None for layer in group.layers)  # freed

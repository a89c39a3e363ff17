"""Decode steps of fixed shapes, replayed on a GPU as one CUDA graph.

A decode step of a 7B model is about 1,300 kernel launches. On an H200 the HF engine spent
~60 ms per step at batch 1 against ~3 ms for reading the weights once (issue 31): the step was
launch-bound, the GPU mostly idle while Python walked the model. A CUDA graph records the
step's launches once and replays them in one call. Replaying needs every tensor the step
touches to keep its shape and its address, which the dynamic path breaks three ways; here:

- the KV cache is the batch's full-capacity buffers (``kv_cache.left_padded`` already sizes
  them for prompt + new tokens), and a step writes its keys and values at a position held in a
  device tensor (``slot``), never through Python slicing;
- the attention mask is an additive (B, 1, 1, capacity) tensor written in place, one column
  per step, so it never grows; transformers uses a 4D mask as given;
- the step reads its token ids and positions from input buffers and writes its logits to an
  output buffer, which the caller copies in and out around each replay.

Attention then spans the whole capacity, the unwritten slots masked. On a CPU (or with
``graph=False``) the same fixed-shape step runs eagerly: that is how the CPU tests check that
it gives the dynamic path's texts. Sampling and stop checks stay outside the graph, in the
engine's loop, so per-row seeded sampling is unchanged. ``DynamicDecoder`` is the CPU's
route (attention over the filled cache only) behind the same interface, so the engine's loop
and the benchmarks call one ``step`` whatever the route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from dep_eval.engine.kv_cache import PreallocatedCache

logger = logging.getLogger(__name__)

# (ids (B, 1), positions (B, 1), mask (B, 1, 1, capacity), cache) -> logits (B, vocab)
StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Cache], torch.Tensor]


class SlotLayer(DynamicLayer):
    """One layer's full (B, kv_heads, capacity, head_dim) buffers, written at ``slot``."""

    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.slot = keys, values, slot
        self.device, self.is_initialized = keys.device, True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys.index_copy_(2, self.slot, key_states)  # key_states: (B, kv_heads, 1, head_dim)
        self.values.index_copy_(2, self.slot, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[2]

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    """The buffers of a prefilled ``PreallocatedCache``, taken over as ``SlotLayer``s."""

    def __init__(self, prefilled: PreallocatedCache, slot: torch.Tensor) -> None:
        layers = [SlotLayer(layer._keys, layer._values, slot) for layer in prefilled.layers]
        super().__init__(layers=layers)


class DynamicDecoder:
    """The decode steps of one batch over the filled part of the cache only: the mask
    (B, T) grows by one column per step (the CPU's route, ``decode=dynamic``). The same
    interface as ``FixedShapeDecoder``."""

    use_graph = False

    def __init__(self, step_fn: StepFunction, cache: PreallocatedCache, mask: torch.Tensor) -> None:
        self.step_fn, self.cache, self.mask = step_fn, cache, mask

    def step(self, next_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) after feeding ``next_ids`` (B,) at ``positions`` (B, 1)."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return self.step_fn(next_ids[:, None], positions, self.mask, self.cache)

    def release(self) -> None:
        """Nothing to drop: the cache goes with the batch."""


class FixedShapeDecoder:
    """The decode steps of one batch: same tensors every step, replayed as a CUDA graph.

    ``step_fn`` is the engine's forward of one step (embedding, decoder, LM head). ``mask``
    (B, width) is the prefilled part's 0/1 attention mask; ``cache`` is ``left_padded``'s,
    whose buffers hold ``capacity`` positions per row, zeros where nothing was written (a
    masked slot gets zero weight, and zero times a finite value stays zero). ``graph``:
    capture the step at its first call and replay it afterwards (CUDA only); otherwise every
    step runs eagerly on the same buffers.
    """

    def __init__(
        self,
        step_fn: StepFunction,
        cache: PreallocatedCache,
        mask: torch.Tensor,
        dtype: torch.dtype,
        graph: bool,
    ) -> None:
        batch, width = mask.shape
        device = mask.device
        capacity = cache.layers[0]._keys.shape[2]
        self.step_fn, self.width, self.use_graph = step_fn, width, graph
        self.slot = torch.tensor([width], device=device)  # the position this step writes
        self.cache = SlotCache(cache, self.slot)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        # additive, in the model's dtype: sdpa and eager attention both take it as is
        blocked = torch.finfo(dtype).min
        self.mask = torch.full((batch, 1, 1, capacity), blocked, dtype=dtype, device=device)
        self.mask[:, 0, 0, :width].masked_fill_(mask.bool(), 0.0)
        self.logits: torch.Tensor | None = None  # the graph's output buffer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps = 0

    def step(self, next_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) after feeding ``next_ids`` (B,) at ``positions`` (B, 1)."""
        slot = self.width + self.steps  # where this step's token goes in every row
        self.steps += 1
        self.ids.copy_(next_ids[:, None])
        self.positions.copy_(positions)
        self.slot.fill_(slot)
        self.mask[:, 0, 0, slot] = 0.0  # the new token is visible from now on
        if not self.use_graph:
            return self.step_fn(self.ids, self.positions, self.mask, self.cache)
        if self.graph is not None:
            self.graph.replay()
            return self.logits.clone()  # type: ignore[union-attr]
        try:
            self.logits = self._capture()
            return self.logits.clone()
        except RuntimeError as error:  # an op the graph cannot hold: the same step, eagerly
            logger.warning(
                "decode=graph: capturing the decode step failed (%s); this engine decodes "
                "eagerly from now on (decode=fixed), at the same results and more launch "
                "overhead",
                str(error).splitlines()[0],
            )
            self.use_graph, self.graph = False, None
            return self.step_fn(self.ids, self.positions, self.mask, self.cache)

    def _capture(self) -> torch.Tensor:
        """Run the step once eagerly on a side stream (cuBLAS and allocator warm-up, as
        capturing requires), then capture it. Capturing records kernels without running them,
        and replaying rewrites the same slot with the same inputs, so the step's result stands.
        """
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.step_fn(self.ids, self.positions, self.mask, self.cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            logits = self.step_fn(self.ids, self.positions, self.mask, self.cache)
        self.graph.replay()
        return logits

    def release(self) -> None:
        """Drop the graph and the buffers it holds (the next batch captures its own)."""
        self.graph = self.logits = None

"""A decode step's attention over grouped KV heads, without copying the keys and values.

With grouped-query attention (Qwen2.5-7B: 28 query heads share 4 KV heads, 7 each), a step's
single query per head must meet its group's keys. transformers before 5.23 does this, when
a mask is given (any padded batch), by repeating each KV head for every query head of its
group: the whole cache is copied ``groups`` times per layer and step, which for long prompts
costs more than the step's matrix products (on this project's CPU at batch 8 over
1,400-token rows the step took 1.84x as long, results/bench_grouped_attention.md; on the
H200 the copy kernel was a third of the GPU's time, issue 31). transformers 5.23 added the
fix (``pack_gqa``): a step's query heads of one KV head become that head's queries,
``(B, H, 1, D) -> (B, H_kv, G, D)``, and attention runs over the cache as it is. This module
does the same for older releases, which the vLLM extra still pins, and is not used from 5.23
on.

Every other call (prompts, training, a mask that differs per head, no mask: sdpa's own
grouped kernel then needs no copy either) goes to transformers' sdpa unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from packaging.version import Version
from transformers.integrations.sdpa_attention import sdpa_attention_forward

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NAME = "dep_eval_grouped_sdpa"
FIXED_IN = (5, 23)  # the release that packs grouped heads itself (pack_gqa)


def needed(model: PreTrainedModel) -> bool:
    """Whether ``model`` decodes with sdpa under a transformers that repeats grouped KV heads."""
    import transformers

    attention = getattr(model.config, "_attn_implementation", None)
    return attention == "sdpa" and Version(transformers.__version__).release < FIXED_IN


def install(model: PreTrainedModel) -> None:
    """Switch ``model``'s attention to this module's (masks are built as for sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.config._attn_implementation = NAME


def grouped_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, Q, D)
    key: torch.Tensor,  # (B, H_kv, S, D)
    value: torch.Tensor,  # (B, H_kv, S, D)
    attention_mask: torch.Tensor | None,  # (B, 1, Q, S) bool or additive, or None
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; returns ((B, Q, H, D), None)."""
    batch, heads, queries, dim = query.shape
    groups = heads // key.shape[1]
    shared_mask = attention_mask is not None and attention_mask.shape[1:3] == (1, 1)
    if queries != 1 or groups == 1 or not shared_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # query head h belongs to KV head h // groups (transformers' repeat_kv order)
    packed = query.reshape(batch, heads // groups, groups, dim)  # (B, H_kv, G, D)
    out = F.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )  # (B, H_kv, G, D): the mask (B, 1, 1, S) holds for all G
    return out.reshape(batch, 1, heads, value.shape[-1]), None

"""Decode attention over grouped KV heads without copying them (``engine/grouped_attention.py``),
which the HF engine uses under transformers < 5.23 (the vLLM extra's pin, the GPU image's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from packaging.version import Version

from dep_eval.engine import grouped_attention
from dep_eval.engine.base import Prompt
from dep_eval.engine.hf import HFEngine

BATCH, HEADS, KV_HEADS, DIM, KEYS = 3, 6, 2, 8, 10


class Attention(torch.nn.Module):
    """What transformers' attention functions read off the module."""

    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def repeated_heads_attention(query, key, value, mask) -> torch.Tensor:
    """The reference: every KV head copied for each query head of its group, (B, Q, H, D)."""
    key, value = (t.repeat_interleave(HEADS // KV_HEADS, dim=1) for t in (key, value))
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)


def qkv(queries: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(queries)
    return (
        torch.randn(BATCH, HEADS, queries, DIM, generator=generator),
        torch.randn(BATCH, KV_HEADS, KEYS, DIM, generator=generator),
        torch.randn(BATCH, KV_HEADS, KEYS, DIM, generator=generator),
    )


def padding_masks() -> list[torch.Tensor]:
    """Row b's first b keys are padding: as a bool mask and as an additive one (B, 1, 1, S)."""
    allowed = torch.arange(KEYS)[None, :] >= torch.arange(BATCH)[:, None]  # (B, S)
    additive = torch.zeros(BATCH, KEYS).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return [allowed[:, None, None, :], additive[:, None, None, :]]


@pytest.mark.parametrize("mask", padding_masks(), ids=["bool", "additive"])
def test_a_decode_step_attends_as_with_repeated_heads(mask: torch.Tensor) -> None:
    query, key, value = qkv(queries=1)
    out, weights = grouped_attention.grouped_sdpa_forward(Attention(), query, key, value, mask)
    assert weights is None and out.shape == (BATCH, 1, HEADS, DIM)
    torch.testing.assert_close(out, repeated_heads_attention(query, key, value, mask))


def test_other_calls_are_transformers_sdpa() -> None:
    """Prompts (several queries) and unmasked steps go to transformers' own function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = Attention()
    for queries, mask in [(4, None), (1, None), (4, torch.ones(BATCH, 1, 4, KEYS, dtype=bool))]:
        query, key, value = qkv(queries)
        out, _ = grouped_attention.grouped_sdpa_forward(module, query, key, value, mask)
        expected, _ = sdpa_attention_forward(module, query, key, value, mask)
        torch.testing.assert_close(out, expected, atol=0, rtol=0)


def decode_step(folder: Path) -> tuple[str, torch.Tensor]:
    """The engine's attention implementation, and its logits (B, vocab) of a padded batch's
    first two decode steps (the mask's padding columns make transformers < 5.23 copy heads)."""
    engine = HFEngine(pretrained=str(folder), device="cpu", dtype="float32")
    prompts = [Prompt([{"role": "user", "content": "Review a lipstick. " * n}]) for n in (1, 9)]
    ids = [engine.tokenize(p) for p in prompts]
    with torch.no_grad():
        decoder, hidden, positions = engine.start_decoding(ids, [None, None], 2, "dynamic")
        logits = decoder.step(engine.last_logits(hidden).argmax(-1), positions + 1)
        logits = decoder.step(logits.argmax(-1), positions + 2)
    return engine.model.config._attn_implementation, logits


def test_the_engine_uses_it_only_where_transformers_copies_heads(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed below 5.23 (simulated here by the version string), with transformers'
    sdpa's logits to rounding; from 5.23 the model keeps plain sdpa."""
    copies = Version(transformers.__version__).release < grouped_attention.FIXED_IN
    attention, logits = decode_step(tiny_folder)
    assert attention == (grouped_attention.NAME if copies else "sdpa")
    # transformers' lazy module object in sys.modules is not the one `import` bound here
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "5.22.2")
    attention_old, logits_old = decode_step(tiny_folder)
    assert attention_old == grouped_attention.NAME
    torch.testing.assert_close(logits_old, logits, atol=1e-5, rtol=0)

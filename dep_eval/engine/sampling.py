"""Choosing the next token and deciding when a row is done: seeded, row by row.

Each row draws from its own ``torch.Generator`` by inverse-CDF sampling over its own
probabilities, so its tokens never depend on the other rows of its batch.
"""

from __future__ import annotations

import torch

from dep_eval.engine.base import GenerationSettings

STOP_TAIL_TOKENS = 16  # how many last tokens are decoded to look for a stop string


def pick_next(
    logits: torch.Tensor, generators: list[torch.Generator], settings: GenerationSettings
) -> torch.Tensor:
    """Next token ids (B,) from ``logits`` (B, vocab): temperature, top-p, inverse CDF."""
    if settings.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    # keep the smallest prefix whose mass reaches top_p (the crossing token included)
    sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs >= settings.top_p, 0.0)
    cumulative = sorted_probs.cumsum(-1)
    draws = torch.stack([torch.rand((), generator=g) for g in generators]).to(logits.device)
    picks = torch.searchsorted(cumulative, (draws * cumulative[:, -1])[:, None])
    picks = picks.clamp(max=sorted_ids.shape[-1] - 1)
    return sorted_ids.gather(-1, picks).squeeze(-1)


def stop_token_ids(tokenizer, generation_config) -> set[int]:
    """EOS of the tokenizer and of the model's generation config (which may list several)."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return {i for i in ids if i is not None}


def hits_stop_string(tokenizer, ids: list[int], until: tuple[str, ...]) -> bool:
    tail = tokenizer.decode(ids[-STOP_TAIL_TOKENS:], skip_special_tokens=True)
    return any(stop in tail for stop in until)


def finish_text(tokenizer, ids: list[int], stop_ids: set[int], until: tuple[str, ...]) -> str:
    """The generated text: stop tokens dropped, cut at the first stop string, stripped."""
    text = tokenizer.decode([i for i in ids if i not in stop_ids], skip_special_tokens=True)
    for stop in until:
        text = text.split(stop)[0]
    return text.strip()

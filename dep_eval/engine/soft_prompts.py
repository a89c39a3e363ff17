"""The token table every engine shares: chat rendering, tokens, and soft-prompt embedding.

Placeholder and marker tokens are added to the *tokenizer* only: their ids lie beyond the
LLM's vocabulary, so the LLM's weights are never resized or changed and a checkpoint never
needs a copy of them. ``embed`` turns token ids into input embeddings with those extra tokens
filled in; the HF engine feeds the result to the model, the vLLM engine sends it as
``prompt_embeds``, and the trainer backpropagates through it: one function for all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from dep_eval.engine.base import Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class SoftPromptTable:
    """A tokenizer plus the LLM's input-embedding table and the extra tokens added to it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, embedding: torch.nn.Embedding) -> None:
        self.tokenizer = tokenizer
        self.embedding = embedding  # (vocab, H), frozen
        self.vocab_size, self.hidden_size = embedding.weight.shape
        pad = tokenizer.pad_token_id
        self.pad_id: int = tokenizer.eos_token_id if pad is None else pad
        self.placeholder_ids: set[int] = set()
        self.fixed_embeddings: dict[int, torch.Tensor] = {}  # token id -> (H,)

    @property
    def device(self) -> torch.device:
        """Where the embedding table lives (read each time: the model may have moved)."""
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def add_placeholder_tokens(self, names: Sequence[str]) -> list[int]:
        ids = self._add_tokens(names)
        self.placeholder_ids.update(ids)
        return ids

    def add_fixed_tokens(self, embeddings: dict[str, torch.Tensor]) -> list[int]:
        ids = self._add_tokens(list(embeddings))
        for token_id, vector in zip(ids, embeddings.values(), strict=True):
            self.fixed_embeddings[token_id] = vector.to(self.device, self.dtype)
        return ids

    def _add_tokens(self, names: Sequence[str]) -> list[int]:
        self.tokenizer.add_special_tokens(
            {"additional_special_tokens": list(names)}, replace_extra_special_tokens=False
        )
        ids = self.tokenizer.convert_tokens_to_ids(list(names))
        if any(i < self.vocab_size for i in ids):
            raise ValueError(f"Tokens {list(names)} collide with the LLM's own vocabulary")
        return ids

    def text_embedding(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return self.embedding(torch.tensor(ids, device=self.device)).mean(0)  # (H,)

    def render(self, prompt: Prompt) -> str:
        return self.tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, tokenize=False
        )

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]

    def embed(
        self, input_ids: torch.Tensor, soft_vectors: Sequence[torch.Tensor | None]
    ) -> torch.Tensor:
        """Input embeddings (B, T, H) of ``input_ids`` (B, T), extra tokens filled in.

        ``soft_vectors[b]``: (n_placeholders_b, H) or None, on any device and in any dtype
        (a method may build them on the CPU for an LLM on a GPU): they are moved to the
        table's device and dtype. Differentiable in them.
        """
        input_ids = input_ids.to(self.device)
        extra = input_ids >= self.vocab_size
        embeds = self.embedding(input_ids.masked_fill(extra, self.pad_id))  # (B, T, H)
        if not extra.any():
            return embeds
        embeds = embeds.clone()
        for token_id, vector in self.fixed_embeddings.items():
            embeds[input_ids == token_id] = vector.to(embeds.device, embeds.dtype)
        placeholders = torch.tensor(sorted(self.placeholder_ids), device=input_ids.device)
        for row, vectors in enumerate(soft_vectors):
            slots = torch.isin(input_ids[row], placeholders)  # (T,)
            count = int(slots.sum())
            given = 0 if vectors is None else len(vectors)
            if count != given:
                raise ValueError(
                    f"Prompt {row} has {count} placeholder tokens but {given} soft vectors; "
                    "each placeholder needs exactly one vector"
                )
            if vectors is not None and count:
                embeds[row, slots] = vectors.to(embeds.device, embeds.dtype)
        return embeds

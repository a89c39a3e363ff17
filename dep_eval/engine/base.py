"""What every engine (HF, vLLM) shares: prompts, settings, results, seeds, and the interface.

A method builds ``Prompt``s; the runner asks an ``Engine`` to generate them with one seed per
document. Two engines implement the interface: ``HFEngine`` (``engine/hf.py``, transformers,
also the trainer's forward) and ``VLLMEngine`` (``engine/vllm.py``, stock vLLM). Soft prompts
are built by one shared ``SoftPromptTable`` (``engine/soft_prompts.py``) for both.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dep_eval.engine.soft_prompts import SoftPromptTable


def seed_for(*parts: object) -> int:
    """A 63-bit seed derived from content, never from position in a batch."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Prompt:
    """What a method asks the LLM: chat messages, plus optional soft-prompt vectors.

    ``soft_vectors``: (n_placeholders, H); row i replaces the input embedding of the i-th
    placeholder token (in order of appearance) of the rendered prompt; see
    ``Engine.add_placeholder_tokens``.
    """

    messages: list[dict[str, str]]
    soft_vectors: torch.Tensor | None = None
    max_new_tokens: int | None = None  # per-call cap, e.g. for a method's auxiliary calls
    # a PEFT adapter folder for this prompt alone (OPPU's per-user LoRA; HF engine only)
    adapter: str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 1234
    until: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int
    seconds: float = field(default=0.0, repr=False)


class Engine(ABC):
    """A frozen causal LM that methods and the runner generate with.

    Subclasses set ``name`` (the LLM as the user named it), ``device`` (where soft vectors
    are built) and ``tokens`` (the tokenizer plus the soft-prompt table), and implement
    ``generate``.
    """

    name: str
    device: torch.device
    tokens: SoftPromptTable

    @property
    def hidden_size(self) -> int:
        """H, the width of the LLM's input embeddings (and of every soft vector)."""
        return self.tokens.hidden_size

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        return self.tokens.tokenizer

    def add_placeholder_tokens(self, names: Sequence[str]) -> list[int]:
        """Tokens whose input embeddings a prompt's ``soft_vectors`` supply, in order."""
        return self.tokens.add_placeholder_tokens(names)

    def add_fixed_tokens(self, embeddings: dict[str, torch.Tensor]) -> list[int]:
        """Tokens with a fixed input embedding of their own (e.g. slot start/end markers)."""
        return self.tokens.add_fixed_tokens(embeddings)

    def text_embedding(self, text: str) -> torch.Tensor:
        """(H,) mean input embedding of ``text``'s tokens: a deterministic new-token vector."""
        return self.tokens.text_embedding(text)

    def render(self, prompt: Prompt) -> str:
        """The prompt as the chat template renders it (the text the LLM reads)."""
        return self.tokens.render(prompt)

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self.tokens.tokenize(prompt)

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        batch_size: int = 1,
        progress: str | None = None,
        on_finished: Callable[[list[tuple[int, Generation]]], None] | None = None,
    ) -> list[Generation]:
        """One completion per prompt.

        Args:
            prompts: what to complete; their soft vectors fill their placeholders.
            seeds: one per prompt; row i samples with ``seeds[i]`` alone, so its text does
                not depend on the batch it shares, its order, or ``batch_size``.
            settings: sampling and stopping; ``Prompt.max_new_tokens`` overrides the cap.
            batch_size: rows per forward pass (a hint; an engine may schedule its own).
            progress: label of a progress bar counting prompts, or None for no bar.
            on_finished: called with ``(index into prompts, generation)`` pairs as soon as
                they are final (at least once per batch), e.g. to save them: a run killed
                mid-way then loses only the rows in flight.

        Returns:
            ``Generation``s in the order of ``prompts``.
        """

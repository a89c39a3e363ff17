"""What every engine (HF, vLLM) shares: prompts, settings, results, seeds, and the interface.

A method builds ``Prompt``s; the runner asks an ``Engine`` to generate them with one seed per
document. Two engines implement the interface: ``HFEngine`` (``engine/hf.py``, transformers,
also the trainer's forward) and ``VLLMEngine`` (``engine/vllm.py``, stock vLLM). Soft prompts
are built by one shared ``SoftPromptTable`` (``engine/soft_prompts.py``) for both.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from dep_eval.engine.soft_prompts import SoftPromptTable

logger = logging.getLogger(__name__)


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


DEFAULT_BATCH_SIZE = 8  # rows per call when an engine has no memory estimate (batch_size=auto)


def truncate_prompt(token_ids: Sequence[int], max_length: int, new_tokens: int) -> list[int]:
    """The one truncation rule of every engine: a prompt keeps its last
    ``max_length - new_tokens`` tokens, so that it and its ``new_tokens`` fit the context.

    The end is kept because it holds the request and the chat template's assistant turn;
    what a long prompt loses is the start of its context (the oldest profile text).

    Args:
        token_ids: the rendered prompt's tokens.
        max_length: the engine's context length (prompt + generated tokens).
        new_tokens: the most tokens this prompt may generate.

    Returns:
        ``token_ids``, or its last ``max_length - new_tokens`` tokens (with a warning).

    Raises:
        ValueError: when ``new_tokens`` leaves no room for a prompt.
    """
    limit = max_length - new_tokens
    if limit < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for a prompt with {new_tokens} new "
            "tokens: raise max_length or lower max_gen_toks"
        )
    if len(token_ids) > limit:
        logger.warning(
            "A prompt of %d tokens is longer than %d: keeping its last %d",
            len(token_ids),
            limit,
            limit,
        )
        return list(token_ids[-limit:])
    return list(token_ids)


class Engine(ABC):
    """A frozen causal LM that methods and the runner generate with.

    Subclasses set ``name`` (the LLM as the user named it), ``device`` (where soft vectors
    are built), ``tokens`` (the tokenizer plus the soft-prompt table) and ``max_length``,
    and implement ``generate``. What an engine can do beyond generating is declared by its
    class, never probed: ``per_prompt_adapters`` (``Prompt.adapter`` is honoured) and
    ``trainable`` (it is a ``TrainableEngine``).
    """

    name: str
    device: torch.device
    tokens: SoftPromptTable
    max_length: int  # tokens of context: a prompt plus its new tokens (``truncate_prompt``)
    per_prompt_adapters: ClassVar[bool] = False  # generates each prompt with its own adapter
    trainable: ClassVar[bool] = False  # has ``target_loss``: see ``TrainableEngine``
    peft: str | None = None  # the PEFT adapter folded into the LLM's weights (``peft=``)

    @property
    def hidden_size(self) -> int:
        """H, the width of the LLM's input embeddings (and of every soft vector)."""
        return self.tokens.hidden_size

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
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
        """The rendered prompt's token ids (placeholders included), before any truncation."""
        return self.tokens.tokenize(prompt)

    def fit_prompt(self, token_ids: Sequence[int], new_tokens: int) -> list[int]:
        """``token_ids`` cut to fit ``max_length`` with ``new_tokens`` after them
        (``truncate_prompt``: the rule every engine applies before generating)."""
        return truncate_prompt(token_ids, self.max_length, new_tokens)

    def auto_batch_size(self, prompt_tokens: int, new_tokens: int, rows: int) -> int:
        """``batch_size=auto``: rows per ``generate`` batch for prompts of this size.

        Args:
            prompt_tokens: the longest prompt's tokens.
            new_tokens: the most tokens a prompt may generate.
            rows: how many prompts are to be generated.

        Returns:
            A batch size >= 1. This default, for engines with no memory estimate (vLLM
            schedules its own batches inside a call), is ``DEFAULT_BATCH_SIZE``.
        """
        logger.info(
            "batch_size=auto: %s has no memory estimate, using %d", self.name, DEFAULT_BATCH_SIZE
        )
        return DEFAULT_BATCH_SIZE

    def fold_adapter(self, folder: str, argument: str = "peft") -> None:
        """Fold the PEFT adapter in ``folder`` into the LLM's weights for all later
        generation (a shared task LoRA under per-user ones, e.g. OPPU's ``base_adapter``).

        Args:
            folder: a PEFT adapter folder made for this LLM.
            argument: the option that named it, for error messages.

        Raises:
            AdapterError: the folder is not an adapter of this LLM.
            RuntimeError: the engine cannot fold one in now (vLLM: once started).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot fold an adapter in")

    def same_llm_options(self) -> dict[str, Any]:
        """``HFEngine`` keyword arguments that load the LLM this engine serves, for an
        engine that cannot train to get a ``TrainableEngine`` twin (OPPU trains users'
        LoRAs with it). A ``TrainableEngine`` trains on itself and needs none."""
        raise NotImplementedError(f"{type(self).__name__} names no HF twin of its LLM")

    def close(self) -> None:
        """Frees what the engine holds beyond this process's memory (worker processes, a
        server). The default has nothing to free; the engine is unusable afterwards."""
        return  # an in-process engine's memory goes with the object

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


class TrainableEngine(Engine):
    """An engine whose forward pass can be trained through: the trainer's and OPPU's LLM.

    Declares what they use: ``model`` (the transformers model, which a LoRA wraps in place
    and a merged adapter replaces), ``peft`` (the adapter folded into its weights, if any)
    and ``target_loss``.
    """

    trainable: ClassVar[bool] = True
    model: PreTrainedModel
    peft: str | None

    @abstractmethod
    def target_loss(self, prompts: Sequence[Prompt], targets: Sequence[list[int]]) -> torch.Tensor:
        """Mean next-token cross-entropy of ``targets[b]`` following ``prompts[b]``.

        Args:
            prompts: the prompts, rendered and embedded as ``generate`` does; their soft
                vectors may require gradients (the loss is differentiable in them).
            targets: token ids that follow each prompt (e.g. a review and EOS).

        Returns:
            A scalar: the mean over every target token of every row.
        """


def require_trainable(engine: Engine, why: str) -> TrainableEngine:
    """``engine`` as a ``TrainableEngine``, or a clear error saying ``why`` one is needed."""
    if not isinstance(engine, TrainableEngine):
        raise ValueError(
            f"{why}: {type(engine).__name__} cannot be trained through; use backend=hf"
        )
    return engine

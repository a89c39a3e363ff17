"""The personalization interface: the one abstraction every method implements.

A method turns a ``Sample`` (user, profile, target item, given rating and title) into the
``Prompt`` of its final LLM call. Everything a method may need is on this small surface:

- ``setup(pool)``: one-off work on the data pool (indexes, encodings), once per data set;
- ``plan(sample, pool)``: a generator. A one-call method just returns its prompt (override
  ``build_prompt``). A method that needs LLM calls before the final one (PAG's summary,
  DPL's comparisons) *yields* a list of prompts, receives their outputs, and finally
  *returns* the final prompt. The runner drives every document's plan in lock-step, so
  auxiliary calls of all documents are batched together;
- ``Prompt.soft_vectors``: vectors that replace the input embeddings of placeholder tokens
  (DEP's his/diff slots, PPlug's persona token) registered with
  ``Engine.add_placeholder_tokens``.

Each method has a ``Config`` dataclass; its fields are the method's ``--model_args``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import Any, ClassVar

import torch

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Engine, Prompt

Plan = Generator[list[Prompt], list[str], Prompt]


@dataclasses.dataclass
class TrainingBatch:
    """What a trainable soft-prompt method hands ``dep_eval.train`` for one micro-batch."""

    prompts: list[Prompt]  # soft vectors still attached to the module's graph
    aux_loss: Any = 0.0  # added to the LM loss (a tensor, or 0.0 for none)
    logs: dict[str, Any] = dataclasses.field(default_factory=dict)  # logged per step


@dataclasses.dataclass
class MethodConfig:
    """Arguments every method accepts (none yet); methods subclass it."""


class PersonalizationMethod:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    backends: ClassVar[tuple[str, ...]] = ("hf", "vllm")  # the engines it can run on

    def __init__(self, config: MethodConfig, llm: Engine) -> None:
        self.config = config
        self.llm = llm

    @classmethod
    def check_before_loading(
        cls, config: MethodConfig, llm_name: str, llm_hidden_size: int | None = None
    ) -> None:
        """Refuse, before the LLM loads, what is wrong with ``config`` and can be seen without
        it (e.g. a checkpoint's config.json). ``llm_hidden_size`` is None when unknown until
        the LLM loads. A loaded method must still check everything it relies on."""

    @classmethod
    def trained_adapter(cls, config: MethodConfig, llm_name: str) -> str | None:
        """The PEFT adapter folder that ``config``'s checkpoint carries (a LoRA of the LLM
        trained with it, ``dep-eval train --lora-r``, or folded in while it trained,
        ``--base-adapter``), which the engine merges into the LLM before the method runs; None
        when there is none (``TrainableMethod`` reads it from the checkpoint)."""
        return None

    def setup(self, pool: DataPool) -> None:
        """One-off work on a data set's pool; called once per (source, category)."""

    def plan(self, sample: Sample, pool: DataPool) -> Plan:
        """The calls this method makes for ``sample``; by default one, ``build_prompt``'s."""
        return self.build_prompt(sample, pool)
        yield  # noqa: B901 - makes this a generator with no auxiliary calls

    def end_run(self) -> None:
        """Called once after every document of a run has its final prompt.

        For what a method should say once per run rather than once per document, e.g.
        DPL's count of samples whose data was too sparse for the method as specified.
        """

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        raise NotImplementedError(f"{type(self).__name__} must implement build_prompt or plan")


class TrainableMethod(PersonalizationMethod, ABC):
    """A method whose small module ``dep-eval train`` learns while the LLM stays frozen.

    ``TrainArgs`` is the dataclass of its ``dep-eval train`` options beyond the generic ones
    (``dep_eval.train.TrainConfig``); ``module`` is what is trained and what
    ``dep_eval.checkpoint`` saves.
    """

    TrainArgs: ClassVar[type[MethodConfig]] = MethodConfig
    module: torch.nn.Module
    # What ``trained_adapter`` reads: the module's class (its checkpoint format; None: the
    # method's checkpoints carry no LoRA) and the folder name of the checkpoint shipped in
    # dep_eval/checkpoints/ ("" when none ships).
    module_class: ClassVar[type[torch.nn.Module] | None] = None
    shipped_checkpoint: ClassVar[str] = ""
    # The rank of a LoRA that the trainer trains on the LLM jointly with ``module`` and saves
    # in the checkpoint (0: the LLM stays frozen). A method that sets it from its TrainArgs
    # must return that adapter from ``trained_adapter`` at inference.
    lora_r: int = 0

    @classmethod
    def trained_adapter(cls, config: MethodConfig, llm_name: str) -> str | None:
        """The ``adapter/`` of the checkpoint ``config.checkpoint`` (else the shipped one): a
        LoRA trained with the module (``--lora-r``) or folded in while it trained
        (``--base-adapter``)."""
        from dep_eval.checkpoint import adapter_folder, checkpoint_for_run

        if cls.module_class is None:
            return None
        checkpoint = getattr(config, "checkpoint", None)
        folder = checkpoint_for_run(checkpoint, cls.shipped_checkpoint, llm_name)
        return None if folder is None else adapter_folder(cls.module_class, folder)

    @classmethod
    @abstractmethod
    def for_training(
        cls, args: MethodConfig, llm: Engine, *, encoder: str | None, max_prompt_tokens: int
    ) -> TrainableMethod:
        """The method around a freshly initialised module.

        Args:
            args: a ``TrainArgs`` instance.
            llm: the frozen engine the module's vectors are fed to.
            encoder: the sentence encoder to use (None: the embedded default).
            max_prompt_tokens: the prompt budget, as at inference.
        """

    @abstractmethod
    def training_batch(self, samples: Sequence[Sample], pool: DataPool) -> TrainingBatch:
        """One micro-batch's prompts and auxiliary loss.

        Returns:
            ``TrainingBatch`` whose prompts are exactly what inference builds for
            ``samples``, with soft vectors still attached to ``module``'s graph.
        """


def parse_config(config_class: type[MethodConfig], args: dict[str, Any]) -> MethodConfig:
    """Build a config from ``--model_args`` values (which arrive as strings or numbers)."""
    hints = typing.get_type_hints(config_class)
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(args) - fields)
    if unknown:
        raise TypeError(
            f"Unknown model argument(s) {unknown} for this method; it accepts "
            f"{sorted(fields) or 'none'} plus pretrained, device, dtype, batch_size, "
            "trust_remote_code, max_length, peft"
        )
    return config_class(
        **{name: _convert(name, value, hints[name]) for name, value in args.items()}
    )


def _convert(name: str, value: Any, hint: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None or (
        isinstance(value, str) and value.lower() == "none" and type(None) in options
    ):
        return None
    target = next(option for option in options if option is not type(None))
    if target is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"Model argument {name}={value!r} must be true or false")
        return lowered in {"true", "1", "yes"}
    try:
        return target(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Model argument {name}={value!r} must be {target.__name__}") from error

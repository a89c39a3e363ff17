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
import typing
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Engine, Prompt
from dep_eval.model_args import coerce

if TYPE_CHECKING:
    from dep_eval.checkpoint import Checkpoint

Plan = Generator[list[Prompt], list[str], Prompt]
UNRESOLVED: Any = object()  # a checkpoint argument not resolved by the caller


@dataclasses.dataclass
class TrainingBatch:
    """What a trainable soft-prompt method hands ``dep_eval.train`` for one micro-batch."""

    prompts: list[Prompt]  # soft vectors still attached to the module's graph
    aux_loss: Any = 0.0  # added to the LM loss (a tensor, or 0.0 for none)
    logs: dict[str, Any] = dataclasses.field(default_factory=dict)  # logged per step


@dataclasses.dataclass
class MethodConfig:
    """Arguments every method accepts (none yet); methods subclass it."""


@dataclasses.dataclass
class CheckpointArgs(MethodConfig):
    """The ``--model_args`` of a method that runs a trained checkpoint (DEP, PPlug)."""

    checkpoint: str | None = None  # default: the one shipped for the embedded SmolLM2
    encoder: str | None = None  # default: the one the checkpoint was trained with


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a run settled about its method before the LLM loads, once (``prepare``)."""

    adapter: str | None = None  # a PEFT adapter the engine folds into the LLM
    checkpoint: Checkpoint | None = None  # the trained module's checkpoint, already read


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

    @classmethod
    def prepare(
        cls, config: MethodConfig, llm_name: str, llm_hidden_size: int | None = None
    ) -> Prepared:
        """Everything a run checks and resolves before the LLM loads, once: the checks of
        ``check_before_loading`` and the adapter of ``trained_adapter``. ``create`` gets it."""
        cls.check_before_loading(config, llm_name, llm_hidden_size)
        return Prepared(adapter=cls.trained_adapter(config, llm_name))

    @classmethod
    def create(cls, config: MethodConfig, llm: Engine, prepared: Prepared) -> Any:
        """The method of a run, from what ``prepare`` resolved."""
        return cls(config, llm)

    def setup(self, pool: DataPool) -> None:
        """One-off work on a data set's pool; called once per (source, category)."""

    def plan(self, sample: Sample, pool: DataPool) -> Plan:
        """The calls this method makes for ``sample``; by default one, ``build_prompt``'s."""
        return self.build_prompt(sample, pool)
        yield

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
    ``dep_eval.checkpoint`` saves. With ``module_class`` set, a run's checkpoint
    (``Config.checkpoint``, else the shipped one) is resolved and read once, in ``prepare``,
    and handed to ``__init__``, which loads the module from it.
    """

    Config: ClassVar[type[MethodConfig]] = CheckpointArgs
    TrainArgs: ClassVar[type[MethodConfig]] = MethodConfig
    module: torch.nn.Module
    # The module's class (its checkpoint format; None: the method reads no checkpoint of
    # that format, and its checkpoints carry no LoRA) and the folder name of the checkpoint
    # shipped in dep_eval/checkpoints/ ("" when none ships).
    module_class: ClassVar[type[torch.nn.Module] | None] = None
    shipped_checkpoint: ClassVar[str] = ""
    # The rank of a LoRA that the trainer trains on the LLM jointly with ``module`` and saves
    # in the checkpoint (0: the LLM stays frozen); set by ``for_training`` from ``TrainArgs``
    # (``joint_lora_rank``), and the checkpoint carries that adapter at inference.
    lora_r: int = 0

    def __init__(
        self,
        config: MethodConfig,
        llm: Engine,
        *,
        module: torch.nn.Module | None = None,
        checkpoint: Checkpoint | None | object = UNRESOLVED,
    ) -> None:
        """``module``: a fresh one (training); else it is loaded from ``checkpoint``, the
        reference ``prepare`` resolved (``UNRESOLVED``: a direct call, resolved here)."""
        super().__init__(config, llm)
        if module is None and self.module_class is not None:
            if checkpoint is UNRESOLVED:
                checkpoint = self.open_checkpoint(config, llm.name)
            module = self.load_module(checkpoint, llm)  # type: ignore[arg-type]
        if module is not None:
            self.module = module

    @classmethod
    def joint_lora_rank(cls, args: MethodConfig) -> int:
        """The rank of the LoRA of the LLM that ``args`` (a ``TrainArgs``) trains with the
        module (0: none); the trainer checks it against ``--base-adapter`` before loading."""
        return 0

    @classmethod
    def open_checkpoint(cls, config: MethodConfig, llm_name: str) -> Checkpoint | None:
        """The run's checkpoint (``config.checkpoint``, else the shipped one for the embedded
        LLM), resolved and its config.json read; None when there is none."""
        from dep_eval.checkpoint import open_checkpoint

        if cls.module_class is None:
            return None
        return open_checkpoint(
            cls.module_class, getattr(config, "checkpoint", None), cls.shipped_checkpoint, llm_name
        )

    @classmethod
    def check_checkpoint(
        cls,
        config: MethodConfig,
        checkpoint: Checkpoint | None,
        llm_name: str,
        llm_hidden_size: int | None = None,
    ) -> None:
        """Refuse a missing checkpoint, or one whose config.json does not fit the encoder or
        the LLM's hidden size, before the LLM and the weights load."""
        from dep_eval.checkpoint import check_for_run

        if cls.module_class is None:
            return
        check_for_run(
            checkpoint,
            method=cls.name,
            llm_name=llm_name,
            llm_hidden_size=llm_hidden_size,
            encoder=getattr(config, "encoder", None),
        )

    def load_module(self, checkpoint: Checkpoint | None, llm: Engine) -> torch.nn.Module:
        """The trained module of ``checkpoint``, checked against ``llm`` and the encoder."""
        from dep_eval.checkpoint import load_module_for_run

        return load_module_for_run(
            checkpoint, method=self.name, llm=llm, encoder=getattr(self.config, "encoder", None)
        )

    @classmethod
    def check_before_loading(
        cls, config: MethodConfig, llm_name: str, llm_hidden_size: int | None = None
    ) -> None:
        cls.check_checkpoint(
            config, cls.open_checkpoint(config, llm_name), llm_name, llm_hidden_size
        )

    @classmethod
    def trained_adapter(cls, config: MethodConfig, llm_name: str) -> str | None:
        """The ``adapter/`` of the run's checkpoint: a LoRA trained with the module
        (``--lora-r``) or folded in while it trained (``--base-adapter``)."""
        checkpoint = cls.open_checkpoint(config, llm_name)
        return None if checkpoint is None else checkpoint.adapter

    @classmethod
    def prepare(
        cls, config: MethodConfig, llm_name: str, llm_hidden_size: int | None = None
    ) -> Prepared:
        """The checkpoint resolved and read once; checked; its adapter for the engine."""
        checkpoint = cls.open_checkpoint(config, llm_name)
        cls.check_checkpoint(config, checkpoint, llm_name, llm_hidden_size)
        return Prepared(
            adapter=None if checkpoint is None else checkpoint.adapter, checkpoint=checkpoint
        )

    @classmethod
    def create(cls, config: MethodConfig, llm: Engine, prepared: Prepared) -> Any:
        if cls.module_class is None:
            return cls(config, llm)
        return cls(config, llm, checkpoint=prepared.checkpoint)

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
    """Build a config from ``--model_args`` values (typed by lm-eval, or strings), each
    coerced to its field's type (``dep_eval.model_args.coerce``)."""
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
        **{
            name: coerce(f"Model argument {name}", value, hints[name])
            for name, value in args.items()
        }
    )

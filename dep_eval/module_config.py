"""``ModuleConfig``: what every trained module's checkpoint records, the base of DEP's and
PPlug's module configs.

The encoder and the LLM the module was trained for (the fields ``checkpoint.check_compatible``
compares with a run's), the prompt it was trained with (inference takes it as its defaults;
empty for checkpoints of format version 1), the soft tokens it names, and the JSON round trip
of ``config.json`` (``to_dict``/``from_dict``, which refuses unknown fields). A subclass adds
its own fields and checks them in ``check`` (after these).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dep_eval.checkpoint import MAX_WIDTH, mapping, text, whole_number
from dep_eval.encoder import DEFAULT_ENCODER_DIM, DEFAULT_ENCODER_NAME
from dep_eval.engine.loading import EMBEDDED_LLM_HIDDEN_SIZE, EMBEDDED_LLM_ID


@dataclass
class ModuleConfig:
    encoder_name: str = DEFAULT_ENCODER_NAME
    encoder_dim: int = DEFAULT_ENCODER_DIM  # d (reference: bge-m3, 1024)
    llm_name: str = EMBEDDED_LLM_ID
    llm_hidden_size: int = EMBEDDED_LLM_HIDDEN_SIZE  # H
    # the prompt the module was trained with: inference takes it as its defaults
    trained_prompt: dict[str, Any] = field(default_factory=dict)

    # the keys ``trained_prompt`` may hold (a subclass adds its prompt options)
    TRAINED_PROMPT_KEYS = ("system",)

    def __post_init__(self) -> None:
        # types and bounds before anything is sized by them (a hidden size of 10**9 would
        # allocate gigabytes before any other check)
        for name in ("encoder_dim", "llm_hidden_size"):
            whole_number(name, getattr(self, name), 1, MAX_WIDTH)
        for name in ("encoder_name", "llm_name"):
            text(name, getattr(self, name))
        prompt = mapping("trained_prompt", self.trained_prompt, self.TRAINED_PROMPT_KEYS)
        if "system" in prompt:
            whole_number("trained_prompt.system", prompt["system"], 1, 1 << 30)
        self.check()

    def check(self) -> None:
        """A subclass's own fields' checks."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**mapping("config", data, tuple(cls.__dataclass_fields__)))

"""Every setting of PPlug: what its checkpoint records, and its ``--model_args``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dep_eval.encoder import DEFAULT_ENCODER_DIM, DEFAULT_ENCODER_NAME
from dep_eval.engine.loading import EMBEDDED_LLM_HIDDEN_SIZE, EMBEDDED_LLM_ID
from dep_eval.methods.base import MethodConfig


@dataclass
class PPlugModuleConfig:
    encoder_name: str = DEFAULT_ENCODER_NAME
    encoder_dim: int = DEFAULT_ENCODER_DIM
    llm_name: str = EMBEDDED_LLM_ID
    llm_hidden_size: int = EMBEDDED_LLM_HIDDEN_SIZE
    soft_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "instruction": "[PPLUG_INSTRUCTION]",
            "persona": "[PPLUG_PERSONA]",
        }
    )
    # the prompt it was trained with (PPlug's has no options: the system text version only);
    # empty for checkpoints of format version 1
    trained_prompt: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPlugModuleConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown PPlugModuleConfig fields {unknown}")
        return cls(**data)


@dataclass
class PPlugConfig(MethodConfig):
    """``--model_args`` of ``--model pplug``."""

    checkpoint: str | None = None  # default: the one shipped for the embedded SmolLM2
    encoder: str | None = None  # default: the one the checkpoint was trained with

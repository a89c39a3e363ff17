"""Every setting of PPlug: what its checkpoint records, and its ``--model_args``."""

from __future__ import annotations

from dataclasses import dataclass, field

from dep_eval.checkpoint import mapping, text
from dep_eval.methods.base import CheckpointArgs
from dep_eval.module_config import ModuleConfig


@dataclass
class PPlugModuleConfig(ModuleConfig):
    """PPlug's two soft tokens, beside ``ModuleConfig``'s encoder, LLM and training prompt
    (PPlug's has no options: the system text version only)."""

    soft_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "instruction": "[PPLUG_INSTRUCTION]",
            "persona": "[PPLUG_PERSONA]",
        }
    )

    def check(self) -> None:
        tokens = mapping("soft_tokens", self.soft_tokens, ("instruction", "persona"))
        for name in ("instruction", "persona"):
            text(f"soft_tokens.{name}", tokens.get(name))


@dataclass
class PPlugConfig(CheckpointArgs):
    """``--model_args`` of ``--model pplug``: ``checkpoint`` (default: the one shipped for
    the embedded SmolLM2) and ``encoder`` (default: the checkpoint's own)."""

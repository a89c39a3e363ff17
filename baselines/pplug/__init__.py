"""PPlug (Liu et al. 2024): a persona vector plugged into a frozen LLM as soft tokens."""

from dep_eval.registry import register_method

from .config import PPlugConfig, PPlugModuleConfig
from .method import PPlug, item_text
from .module import PPlugModule

register_method(PPlug, label="PPlug", order=40)

__all__ = ["PPlug", "PPlugConfig", "PPlugModule", "PPlugModuleConfig", "item_text"]

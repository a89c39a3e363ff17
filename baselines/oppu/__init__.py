"""OPPU (Tan et al., EMNLP 2024): one LoRA per user, trained on the user's own reviews."""

from dep_eval.registry import register_method

from .config import OppuConfig
from .method import Oppu, adapter_cache_dir

OppuLM = register_method(Oppu, label="OPPU", order=45)

__all__ = ["Oppu", "OppuConfig", "OppuLM", "adapter_cache_dir"]

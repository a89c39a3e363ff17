"""OPPU (Tan et al., EMNLP 2024): one LoRA per user, trained on the user's own reviews."""

from dep_eval.registry import Variant, register_method

from .config import OppuConfig
from .method import Oppu, adapter_cache_dir
from .task_lora import NAME as TASK_LORA
from .task_lora import TRAIN_TARGET

# oppu_task_lora: the reference always folds a shared task LoRA in first; `dep-eval reproduce`
# trains it (`dep-eval train --method oppu-base`) into OUTPUT/oppu-base before the first run
# that needs it
register_method(
    Oppu,
    label="OPPU",
    order=45,
    variants=(
        Variant("oppu_retrieval", "with_retrieval=true"),
        Variant("oppu_task_lora", f"base_adapter={{{TASK_LORA}}}"),
    ),
    train_targets=(TRAIN_TARGET,),
)

__all__ = ["Oppu", "OppuConfig", "adapter_cache_dir"]

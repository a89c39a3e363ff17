"""Training DEP's SAE and aligners on a frozen LLM (docs/method.md step 9), and the held-out
NLL that checkpoints are chosen by (``heldout``).

``TrainConfig`` and ``train`` load lazily: importing ``dep_eval.train.heldout`` (which the
CLI does for its parser) must not pull in torch through the trainer."""

from typing import Any

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dep_eval.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'dep_eval.train' has no attribute {name!r}")

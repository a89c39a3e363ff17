"""Training DEP's SAE and aligners on a frozen LLM (docs/method.md step 9)."""

from dep_eval.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]

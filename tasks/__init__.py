"""lm-eval task YAMLs (shipped as ``dep_eval.tasks``)."""

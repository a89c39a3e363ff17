"""Where dep-eval keeps what it derives once: the converted embedded LLM, text embeddings,
auxiliary LLM calls. Never the repository: ``$DEP_EVAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/dep-eval``, else ``~/.cache/dep-eval``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DEP_EVAL_CACHE_DIR"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dep-eval"

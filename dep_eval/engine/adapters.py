"""PEFT adapters on the frozen LLM of the transformers engine.

Three uses:

- ``peft=PATH`` (any method): the adapter is loaded with ``peft.PeftModel.from_pretrained``
  and folded into the LLM's weights (``merge_and_unload``) before anything runs, so every
  method, soft prompts included, sees one plain frozen model. Soft-prompt placeholders live
  outside the vocabulary (``SoftPromptTable``), so nothing is resized.
- per-prompt adapters (``Prompt.adapter``, OPPU's one LoRA per user): for one batch, the
  adapters its rows name are loaded next to each other and every row goes through its own
  (PEFT's mixed-adapter batches, ``adapter_names``); afterwards they are unloaded, so the
  LLM is the plain model again and only one batch's adapters are ever in memory.
- a LoRA trained jointly with a method's module (``dep-eval train --method dep --lora-r R``,
  ``trainable_lora``), or one folded in while it trained (``--base-adapter``): saved in the
  checkpoint's ``adapter/`` folder as a normal PEFT adapter, and at inference merged into the
  LLM like ``peft=``.

vLLM loads its weights from a folder itself, so for ``backend=vllm`` the merged LLM is
written once to the user's cache folder (``merged_model_folder``) and vLLM loads that.

Adapters are read from ``adapter_model.safetensors`` only (never a pickled ``.bin``), and
checked against the loaded LLM: its name (``base_model_name_or_path``) and, by loading, the
shapes of its tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dep_eval.cache import cache_dir
from dep_eval.engine.loading import EMBEDDED_LLM, EMBEDDED_LLM_ID
from dep_eval.io import atomic_folder

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
NO_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
# the modules a jointly trained LoRA adapts: the attention's query and value projections, as
# in the LoRA paper and OPPU (both name them so in Llama, Qwen2, Mistral, SmolLM2, ...)
LORA_TARGET_MODULES = ("q_proj", "v_proj")


class AdapterError(ValueError):
    """A PEFT adapter folder that cannot be used with the loaded LLM."""


def _canonical_llm(name: str) -> str:
    """The embedded SmolLM2 goes by its short name, its hub id and its converted copy's
    folder (``.../SmolLM2-135M-Instruct-fp32``); any other model by its last path part."""
    last = str(name).rstrip("/").split("/")[-1].lower()
    if last in {EMBEDDED_LLM.lower(), EMBEDDED_LLM_ID.split("/")[-1].lower()} or last == (
        f"{EMBEDDED_LLM}-fp32".lower()
    ):
        return EMBEDDED_LLM.lower()
    return last


def read_adapter_config(folder: str, argument: str = "peft") -> dict[str, Any]:
    """``adapter_config.json`` of a PEFT adapter folder, after checking the folder holds a
    safetensors adapter. ``argument`` names the model argument in messages."""
    path = Path(folder).expanduser()
    what = f"{argument}={folder}"
    if not path.exists():
        raise AdapterError(
            f"{what}: no adapter folder at {path}; give a folder written by PEFT's "
            f"save_pretrained ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})"
        )
    if not path.is_dir():
        raise AdapterError(f"{what}: {path} is a file; give the adapter's folder")
    config_path = path / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterError(
            f"{what}: {path} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter folder"
        )
    if not (path / ADAPTER_WEIGHTS).is_file():
        pickled = (path / "adapter_model.bin").is_file()
        raise AdapterError(
            f"{what}: {path} has no {ADAPTER_WEIGHTS}"
            + (
                " (only adapter_model.bin, a pickle, which dep-eval does not load: re-save the "
                "adapter with save_pretrained(..., safe_serialization=True))"
                if pickled
                else ""
            )
        )
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AdapterError(f"{what}: {config_path} is unreadable: {error}") from error
    if not isinstance(data, dict):
        raise AdapterError(f"{what}: {config_path} must hold a JSON object")
    _check_peft_type(data, what, config_path)
    bad = _non_finite(data)
    if bad:
        raise AdapterError(
            f"{what}: {config_path} has {bad} = {_lookup(data, bad)}, not a finite number: the "
            "adapter's weights would all be NaN once folded in"
        )
    return data


# adapters that add virtual tokens or attention prompts instead of changing weights: none
# can be folded into the LLM or routed per row
PROMPT_TYPES = frozenset({"ADAPTION_PROMPT"})


def _check_peft_type(data: dict[str, Any], what: str, config_path: Path) -> None:
    """Refuse, from the config alone, an adapter that is no weight adapter (PEFT would fail
    on it with a ``TypeError`` of its own, or merge nothing)."""
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = data.get("peft_type")
    known = {
        str(getattr(key, "value", key)): cls for key, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()
    }
    if peft_type not in known:
        raise AdapterError(
            f"{what}: {config_path} has peft_type {peft_type!r}, which this PEFT does not know "
            "(LORA, IA3, LOHA, ... are weight adapters dep-eval folds in)"
        )
    if issubclass(known[peft_type], PromptLearningConfig) or peft_type in PROMPT_TYPES:
        raise AdapterError(
            f"{what}: a {peft_type} adapter adds virtual tokens and cannot be folded into the "
            "weights; dep-eval takes weight adapters (LoRA and its relatives)"
        )


def _non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in a JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        found = _non_finite(inner, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def check_adapter(folder: str, llm_name: str, argument: str = "peft") -> dict[str, Any]:
    """Refuse an adapter made for another LLM, from its config alone (before loading)."""
    data = read_adapter_config(folder, argument)
    base = data.get("base_model_name_or_path")
    if base and _canonical_llm(base) != _canonical_llm(llm_name):
        raise AdapterError(
            f"{argument}={folder}: the adapter was made for {base!r} (base_model_name_or_path "
            f"in {Path(folder).expanduser() / ADAPTER_CONFIG}) but the LLM is {llm_name!r}; run "
            f"with --model_args pretrained={base}, or, if both name the same model, correct "
            "base_model_name_or_path"
        )
    return data


def fingerprint(folder: str) -> str:
    """Content hash of an adapter (config + weights): what caches built on it are keyed by."""
    path = Path(folder).expanduser()
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update((path / name).read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT asks transformers 5 for ``is_gradient_checkpointing``, which warns that it is
    deprecated on every adapter load: not the user's doing, so not shown to the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        # said as an error by _check_keys, naming the folder, instead of this list of keys
        warnings.filterwarnings(
            "ignore", message="Found missing adapter keys", category=UserWarning
        )
        yield


def _reason(error: Exception) -> str:
    """The line of a PEFT/torch loading error that says what is wrong (torch puts a header
    line first and then one line per mismatching tensor)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    mismatches = [line for line in lines if "size mismatch" in line]
    if mismatches:
        more = f" (and {len(mismatches) - 1} more tensors)" if len(mismatches) > 1 else ""
        return mismatches[0] + more
    return lines[0] if lines else type(error).__name__


def _load(model: torch.nn.Module, folder: str, llm_name: str, argument: str, name: str) -> Any:
    from peft import PeftModel

    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(
                model, str(Path(folder).expanduser()), adapter_name=name, is_trainable=False
            )
    except (RuntimeError, ValueError, KeyError, TypeError) as error:  # sizes, modules
        raise AdapterError(
            f"{argument}={folder}: the adapter does not fit the loaded LLM {llm_name!r}: "
            f"{_reason(error)}"
        ) from error
    try:
        _check_keys(peft_model, folder, argument, name)
    except AdapterError:
        peft_model.unload()  # the LLM is left as it was
        raise
    return peft_model


def _check_keys(peft_model: Any, folder: str, argument: str, name: str, result: Any = None) -> None:
    """Refuse an adapter whose weights are not for the modules its config adapts: PEFT
    would leave those modules' LoRA at its initial value (B = 0, a no-op) with only a
    warning, and the plain LLM would be scored under the adapter's name.

    ``result``: PEFT's load result (``load_adapter`` returns one; ``from_pretrained`` does
    not, so the weights are set again, which changes nothing, to get it)."""
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    config = peft_model.peft_config[name]
    if result is None:
        path = str(Path(folder).expanduser())
        state = load_peft_weights(path, device=str(next(peft_model.parameters()).device))
        result = set_peft_model_state_dict(peft_model, state, adapter_name=name)
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(config.peft_type, "")
    missing = [k for k in result.missing_keys if prefix in k and f".{name}" in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        weights = Path(folder).expanduser() / ADAPTER_WEIGHTS
        raise AdapterError(
            f"{argument}={folder}: {weights} does not hold the weights its {ADAPTER_CONFIG} "
            f"asks for (target_modules {sorted(config.target_modules or [])}): "
            f"{len(missing)} adapter tensors missing{_examples(missing)}, {len(unexpected)} "
            f"tensors for modules it does not adapt{_examples(unexpected)}. Folded in, it "
            "would change nothing there; re-save the adapter with PEFT's save_pretrained"
        )


def _examples(keys: Sequence[str]) -> str:
    return f" (e.g. {', '.join(sorted(keys)[:2])})" if keys else ""


def merge_adapter(
    model: PreTrainedModel, folder: str, llm_name: str, argument: str = "peft"
) -> PreTrainedModel:
    """``model`` with the adapter in ``folder`` folded into its weights, frozen, eval mode."""
    check_adapter(folder, llm_name, argument)
    peft_model = _load(model, folder, llm_name, argument, "default")
    if peft_model.peft_config["default"].is_prompt_learning:
        raise AdapterError(
            f"{argument}={folder}: a {peft_model.peft_config['default'].peft_type} adapter "
            "adds virtual tokens and cannot be folded into the weights; dep-eval takes "
            "weight adapters (LoRA and its relatives)"
        )
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if isinstance(module, BaseTunerLayer)
    ]
    merged = peft_model.merge_and_unload()
    broken = [
        name
        for name in adapted
        if not all(
            torch.isfinite(p).all() for p in merged.get_submodule(name).parameters(recurse=False)
        )
    ]
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise AdapterError(
            f"{argument}={folder}: folding the adapter in gave non-finite weights (NaN or inf) "
            f"in {broken[0]}{more}: its weights in {ADAPTER_WEIGHTS} (or lora_alpha / r) are "
            "not finite; every logit would be NaN"
        )
    logger.info("merged the PEFT adapter %s into %s", folder, llm_name)
    return merged.eval().requires_grad_(False)


def merged_model_folder(
    path: str, folder: str, llm_name: str, trust_remote_code: bool = False
) -> str:
    """A model folder holding the LLM at ``path`` with the adapter in ``folder`` folded in,
    for an engine that reads its weights from a folder (vLLM).

    Built once per (LLM, adapter content) under the user's cache folder and written
    atomically: a crash mid-write leaves no folder that a later run would take as complete.
    Saved in the LLM's own dtype, as safetensors.
    """
    from dep_eval.engine.loading import load_causal_lm, load_tokenizer

    check_adapter(folder, llm_name)
    source = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    target = cache_dir() / "models" / f"{Path(path).name}-{source}+lora-{fingerprint(folder)}"
    if target.is_dir():
        return str(target)
    logger.info("folding the adapter %s into %s (once) for vLLM: %s", folder, llm_name, target)
    model = load_causal_lm(path, "auto", torch.device("cpu"), trust_remote_code)
    merged = merge_adapter(model, folder, llm_name)
    with atomic_folder(target) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(path, trust_remote_code).save_pretrained(staging)
    return str(target)


def no_adapters(prompts: Sequence[int]) -> contextlib.AbstractContextManager:
    """The router of a batch in which no prompt names an adapter: nothing to route."""
    return contextlib.nullcontext()


def is_adapter_layer(module: torch.nn.Module) -> bool:
    """Whether PEFT has put an adapter layer in ``module``'s place. Without PEFT imported
    none can exist, so PEFT (seconds to import) is not imported to ask."""
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    return tuners is not None and isinstance(module, tuners.BaseTunerLayer)


@contextlib.contextmanager
def per_row_adapters(
    model: torch.nn.Module, folders: Sequence[str | None], llm_name: str
) -> Iterator[Callable[[Sequence[int]], contextlib.AbstractContextManager]]:
    """Loads the adapters ``folders`` (one per prompt of a batch; None: the plain LLM) for
    the block and yields ``route``: within ``with route(prompts)``, row j of a forward's
    batch goes through the adapter of prompt ``prompts[j]``. So one prompt can be prefilled
    alone (``route([i])``) and the whole batch decoded together (``route(range(B))``).
    Nothing is loaded when no prompt names an adapter."""
    distinct = list(dict.fromkeys(folder for folder in folders if folder))
    if not distinct:
        yield no_adapters
        return
    names = {folder: f"row_{i}" for i, folder in enumerate(distinct)}
    peft_model = _load(model, distinct[0], llm_name, "adapter", names[distinct[0]])
    try:
        for folder in distinct[1:]:
            try:
                with quiet_peft():
                    result = peft_model.load_adapter(
                        str(Path(folder).expanduser()),
                        adapter_name=names[folder],
                        is_trainable=False,
                    )
            except (RuntimeError, ValueError, KeyError, TypeError) as error:
                raise AdapterError(
                    f"adapter={folder}: the adapter does not fit the loaded LLM {llm_name!r}: "
                    f"{_reason(error)}"
                ) from error
            _check_keys(peft_model, folder, "adapter", names[folder], result)
        row_names = [names[folder] if folder else NO_ADAPTER for folder in folders]

        def route(prompts: Sequence[int]) -> contextlib.AbstractContextManager:
            # PEFT's mixed-adapter batches (what PeftModel.forward(adapter_names=...) does): a
            # forward pre-hook on every LoRA layer routes each row through its own adapter.
            # The engine calls the inner model directly, so it enters the same context itself.
            return peft_model.base_model._enable_peft_forward_hooks(
                adapter_names=[row_names[i] for i in prompts]
            )

        yield route
    finally:
        peft_model.unload()  # the LoRA layers come out again: the plain LLM


def new_lora(
    model: torch.nn.Module,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str],
    what: str,
) -> Any:
    """A fresh LoRA injected into ``model`` in place, returned as the ``PeftModel`` that
    trains and saves it: every trainer's LoRA (DEP's ``--lora-r``, OPPU's users' LoRAs and
    its task LoRA) is made here.

    ``B`` starts at zero, so the LLM is unchanged until the first step; only the LoRA's
    parameters require gradients. ``what`` starts the message of a ``ValueError`` when the
    LLM has no such modules.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as error:  # e.g. an LLM whose attention names its projections otherwise
        raise ValueError(f"{what}: {error}") from error


def trainable_lora(model: torch.nn.Module, r: int, llm_name: str) -> Any:
    """The LoRA of rank ``r`` that ``dep-eval train --lora-r`` trains with a module
    (``new_lora``): alpha = 2r (a scale of 2 whatever the rank), no dropout (a few hundred
    training rows give it nothing to regularise that weight decay does not), on
    ``LORA_TARGET_MODULES``. ``model`` keeps its class and its ``base_model``, which the
    engine calls, and goes through the LoRA from now on.
    """
    if r < 1:
        raise ValueError(f"--lora-r {r}: a LoRA's rank must be at least 1 (0: no LoRA)")
    peft_model = new_lora(
        model,
        r=r,
        alpha=2 * r,
        dropout=0.0,
        target_modules=LORA_TARGET_MODULES,
        what=f"--lora-r {r}: cannot put a LoRA on {', '.join(LORA_TARGET_MODULES)} of {llm_name}",
    )
    # What check_adapter compares with the LLM of a run: the name the run gave the LLM, not
    # the folder it was loaded from (a hub snapshot's folder is named by a commit hash).
    peft_model.peft_config["default"].base_model_name_or_path = llm_name
    return peft_model


def load_lora_weights(peft_model: Any, folder: str | Path) -> None:
    """Put the weights of the adapter saved in ``folder`` into ``peft_model``'s (trainable)
    adapter, e.g. to resume training; the two must have the same shape."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    read_adapter_config(str(folder), "adapter")
    device = next(peft_model.parameters()).device
    state = load_peft_weights(str(folder), device=str(device))
    result = set_peft_model_state_dict(peft_model, state)
    if result.unexpected_keys:
        raise AdapterError(
            f"adapter={folder}: tensors {sorted(result.unexpected_keys)[:3]} do not belong to "
            "this run's LoRA (another rank or other modules?)"
        )

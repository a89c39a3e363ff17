"""Saving and loading what a trainable method trains (megabytes, never an LLM).

DEP's SAE and aligners (``DEPModule``) and PPlug's projector (``PPlugModule``) share one
format. A checkpoint is a folder::

    config.json        format name and version, the module's config (encoder name and dim,
                       LLM name and hidden size, soft-token names, ...), tensor shapes
    model.safetensors  module.state_dict()
    adapter/           only when a LoRA of the LLM was trained with the module (``dep-eval
                       train --lora-r``): a normal PEFT adapter folder (adapter_config.json +
                       adapter_model.safetensors), recorded under "adapter" in config.json;
                       at inference it is merged into the LLM (``adapter_folder``)

A module class names its format (``checkpoint_format``) and its config class
(``config_class``, with ``to_dict``/``from_dict`` and the encoder/LLM fields that
``check_compatible`` reads).

Weights are read only through safetensors (never ``torch.load`` / pickle). A folder is
written into a temporary sibling and renamed into place (``dep_eval.io.atomic_folder``), so a
reader sees either the old checkpoint or the new one, never half of one. Loading checks that
the checkpoint fits the encoder and LLM it will be used with and says exactly what does not.
The checkpoints shipped inside the package (for the embedded SmolLM2 + all-MiniLM-L6-v2) are
found by ``load_for_run``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict

import torch
from safetensors.torch import load_file, save_file

from dep_eval.io import atomic_folder, recover_folder

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

    from dep_eval.engine import Engine

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: configs record the prompt a module was trained with
# 3: the checkpoint carries a LoRA of the LLM (adapter/). Written only then, so that a
# dep-eval that predates it refuses such a checkpoint instead of dropping its LoRA silently.
ADAPTER_FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not fit the encoder / LLM it is used with."""


# Bounds of a module config's sizes: far above any real encoder or LLM (bge-m3 1024, Qwen2.5-7B
# 3584, the largest open LLMs ~16k), far below what would exhaust memory before any check.
MAX_WIDTH = 1 << 16
MAX_K = 64  # history slots; the paper uses 8, and 64 past reviews fill any LLM's context


def whole_number(name: str, value: Any, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool, a float or a string) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"field {name!r} must be a whole number in {low}..{high}, got {value!r} "
            f"({type(value).__name__})"
        )
    if not low <= value <= high:
        raise ValueError(f"field {name!r} must be in {low}..{high}, got {value}")
    return value


def real_number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    """``value`` if it is a finite int or float (not a bool or a string) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"field {name!r} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"field {name!r} must be in {low}..{high}, got {value}")
    return value


def true_or_false(name: str, value: Any) -> bool:
    """``value`` if it is a JSON boolean: "maybe", 1 or "false" are not taken as one."""
    if not isinstance(value, bool):
        raise ValueError(f"field {name!r} must be true or false, got {value!r}")
    return value


def text(name: str, value: Any, choices: tuple[str, ...] = ()) -> str:
    """``value`` if it is a non-empty string (one of ``choices`` when given)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {name!r} must be a non-empty string, got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"field {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def mapping(name: str, value: Any, known: tuple[str, ...]) -> dict[str, Any]:
    """``value`` if it is a JSON object whose keys are all among ``known``."""
    if not isinstance(value, dict):
        raise ValueError(f"field {name!r} must be a JSON object, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"field {name!r} has unknown keys {unknown}; known: {', '.join(known)}")
    return value


class CheckpointModule(Protocol):
    """What a trainable module (DEP's, PPlug's) offers this module: a format name, a config
    class with ``from_dict``/``to_dict``, and its weights."""

    checkpoint_format: ClassVar[str]
    config_class: ClassVar[Any]
    config: Any

    def state_dict(self) -> Any: ...


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint folder, read once: its config.json (format-checked, ``meta``), the
    module config it records (``config``) and the LoRA folder it carries (``adapter``).

    A run resolves its ``checkpoint=`` into one of these before the LLM loads
    (``open_checkpoint``) and hands it on: the checks, the adapter the engine folds in and
    the weights all come from this one reading.
    """

    module_class: type[Any]
    folder: Path
    meta: dict[str, Any]
    config: Any

    @property
    def adapter(self) -> str | None:
        """The PEFT adapter folder of the LoRA the module was trained with, or None."""
        entry = self.meta.get("adapter")
        if not entry:
            return None
        path = self.folder / str(entry.get("folder", ADAPTER_DIR))
        if not path.is_dir():
            raise CheckpointError(
                f"{self.folder / CONFIG_FILE} records a LoRA of the LLM in {path}, which is "
                "missing: copy the checkpoint folder whole (its adapter/ belongs to it)"
            )
        return str(path)


def save_checkpoint(
    module: CheckpointModule,
    folder: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
    adapter: Any = None,
    frozen_adapter: str | None = None,
) -> Path:
    """Write ``module`` to ``folder`` atomically (replacing an existing checkpoint there).

    ``adapter``: a ``PeftModel`` whose LoRA was trained with ``module``, saved with PEFT's
    ``save_pretrained`` (safetensors) in ``folder/adapter``. ``frozen_adapter``: instead, the
    folder of a PEFT adapter that was folded into the LLM, unchanged, while ``module``
    trained (``dep-eval train --base-adapter``); its files are copied to ``folder/adapter``.
    """
    if adapter is not None and frozen_adapter:
        raise ValueError("a checkpoint carries one adapter: a trained one or a frozen one")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()
    }
    meta: dict[str, Any] = {
        "format": module.checkpoint_format,
        "format_version": FORMAT_VERSION,
        "config": module.config.to_dict(),
        "tensors": {name: list(tensor.shape) for name, tensor in state.items()},
        "n_parameters": sum(tensor.numel() for tensor in state.values()),
        "extra": extra or {},
    }
    if adapter is not None:
        lora = adapter.peft_config["default"]
        meta["format_version"] = ADAPTER_FORMAT_VERSION
        meta["adapter"] = {
            "folder": ADAPTER_DIR,
            "peft_type": str(lora.peft_type.value),
            "r": lora.r,
            "lora_alpha": lora.lora_alpha,
            "target_modules": sorted(lora.target_modules),
            "n_parameters": sum(p.numel() for p in adapter.parameters() if p.requires_grad),
        }
    if frozen_adapter:
        from dep_eval.engine.adapters import read_adapter_config

        lora = read_adapter_config(frozen_adapter, "--base-adapter")
        meta["format_version"] = ADAPTER_FORMAT_VERSION
        meta["adapter"] = {
            "folder": ADAPTER_DIR,
            "peft_type": lora.get("peft_type"),
            "r": lora.get("r"),
            "lora_alpha": lora.get("lora_alpha"),
            "target_modules": sorted(lora.get("target_modules") or []),
            "frozen": True,  # folded in before training, not trained with the module
        }
    with atomic_folder(folder) as staging:
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": meta["format"]})
        if adapter is not None:
            from dep_eval.engine.adapters import quiet_peft

            # save_embedding_layers=False: the embeddings are neither adapted nor resized (soft
            # tokens live outside the vocabulary), and PEFT's "auto" would ask the hub so
            with quiet_peft():
                adapter.save_pretrained(
                    str(staging / ADAPTER_DIR),
                    safe_serialization=True,
                    save_embedding_layers=False,
                )
        if frozen_adapter:
            from dep_eval.engine.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

            (staging / ADAPTER_DIR).mkdir()
            for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                shutil.copy2(Path(frozen_adapter).expanduser() / name, staging / ADAPTER_DIR)
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    logger.info("saved %s (%d parameters) to %s", meta["format"], meta["n_parameters"], folder)
    return folder


def read_checkpoint(module_class: type[Any], folder: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint folder's config.json, read and checked once (format, version, config)."""
    folder = Path(folder)
    meta = _read_meta(module_class, folder)
    try:
        config = module_class.config_class.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid config: {error}") from error
    return Checkpoint(module_class, folder, meta, config)


def read_config(module_class: type[Any], folder: str | os.PathLike[str]) -> Any:
    """The config of a checkpoint folder (a ``module_class.config_class``), after format checks."""
    return read_checkpoint(module_class, folder).config


def adapter_folder(module_class: type[Any], folder: str | os.PathLike[str]) -> str | None:
    """The PEFT adapter folder of the LoRA a checkpoint was trained with, or None."""
    return read_checkpoint(module_class, folder).adapter


def _is_complete(folder: Path) -> bool:
    """Whether a staging copy holds a whole checkpoint: config.json is written last."""
    try:
        return isinstance(json.loads((folder / CONFIG_FILE).read_text()), dict) and (
            (folder / WEIGHTS_FILE).is_file()
        )
    except (OSError, ValueError):
        return False


def _read_meta(module_class: type[Any], folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    expected = module_class.checkpoint_format
    # a save killed between its two renames left the folder's copies hidden beside it
    recover_folder(folder, _is_complete)
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a {expected} checkpoint: {CONFIG_FILE} is missing")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is unreadable: {error}") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    if meta.get("format") != expected:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {expected!r}")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: format version {meta.get('format_version')!r}; this dep-eval reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))} (a newer dep-eval wrote it?)"
        )
    return meta


def canonical_encoder_name(name: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2``, ``all-MiniLM-L6-v2`` and the embedded copy's
    folder all name the same encoder."""
    from dep_eval.encoder import DEFAULT_ENCODER_NAME, DEFAULT_ENCODER_PACKAGE

    text = str(name).rstrip("/")
    if DEFAULT_ENCODER_PACKAGE in text:
        return DEFAULT_ENCODER_NAME.lower()
    last = text.split("/")[-1]
    return last.lower()


def identity_fields(encoder: Any, llm: Any) -> dict[str, Any]:
    """The encoder and LLM a fresh module is made for: the config fields that
    ``check_compatible`` later compares against the encoder and LLM of a run."""
    return {
        "encoder_name": encoder.name,
        "encoder_dim": encoder.dim,
        "llm_name": llm.name,
        "llm_hidden_size": llm.hidden_size,
    }


class FitChecks(TypedDict, total=False):
    """The keyword arguments of ``check_compatible``, which ``load_module`` and
    ``load_checkpoint`` pass on; a part left out is not checked."""

    encoder_name: str | None
    encoder_dim: int | None
    llm_name: str | None
    llm_hidden_size: int | None
    k: int | None
    strict_llm_name: bool


def check_compatible(
    config: Any,
    *,
    encoder_name: str | None = None,
    encoder_dim: int | None = None,
    llm_name: str | None = None,
    llm_hidden_size: int | None = None,
    k: int | None = None,
    strict_llm_name: bool = False,
) -> None:
    """Raise ``CheckpointError`` listing every way ``config`` does not fit the given parts.

    An LLM name mismatch alone is only a warning unless ``strict_llm_name``: the same model
    has many names (hub id, local folder, GGUF folder), while a wrong hidden size is certain
    to be wrong.
    """
    problems: list[str] = []
    if encoder_dim is not None and encoder_dim != config.encoder_dim:
        problems.append(
            f"checkpoint was trained on {config.encoder_dim}-d embeddings ({config.encoder_name}) "
            f"but the encoder gives {encoder_dim}-d ({encoder_name or 'unnamed'})"
        )
    if encoder_name is not None and canonical_encoder_name(encoder_name) != canonical_encoder_name(
        config.encoder_name
    ):
        # Same dim is not enough: two encoders' spaces are unrelated.
        problems.append(
            f"checkpoint was trained on embeddings of encoder {config.encoder_name!r} but the "
            f"encoder is {encoder_name!r}"
        )
    if llm_hidden_size is not None and llm_hidden_size != config.llm_hidden_size:
        problems.append(
            f"checkpoint was trained for LLM hidden size {config.llm_hidden_size} "
            f"({config.llm_name}) but the loaded LLM has {llm_hidden_size}"
            + (f" ({llm_name})" if llm_name else "")
        )
    if llm_name is not None and llm_name.rstrip("/").split("/")[-1].lower() != (
        config.llm_name.rstrip("/").split("/")[-1].lower()
    ):
        message = f"checkpoint was trained for LLM {config.llm_name!r} but the LLM is {llm_name!r}"
        if strict_llm_name:
            problems.append(message)
        elif llm_hidden_size in (None, config.llm_hidden_size):
            # A hidden-size mismatch is reported above; a name alone may be an alias.
            logger.warning("%s; continuing, since one model goes by several names", message)
    if k is not None and k != config.k:
        problems.append(f"checkpoint has {config.k} history slots (K) but {k} were requested")
    if problems:
        raise CheckpointError("checkpoint does not fit: " + "; ".join(problems))


def load_checkpoint(
    module_class: type[Any],
    folder: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    **checks: Unpack[FitChecks],
) -> Any:
    """Load a checkpoint, checking it against whichever parts are given (``FitChecks``)."""
    return load_module(read_checkpoint(module_class, folder), device=device, **checks)


def load_module(
    checkpoint: Checkpoint,
    *,
    device: str | torch.device = "cpu",
    **checks: Unpack[FitChecks],
) -> Any:
    """The module of an already read checkpoint, checked against whichever parts are given
    (``FitChecks``)."""
    folder, config, module_class = checkpoint.folder, checkpoint.config, checkpoint.module_class
    check_compatible(config, **checks)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    _check_shapes(module_class, config, weights)
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights} is unreadable: {error}") from error
    module = module_class(config)
    module.load_state_dict(state, strict=True)
    return module.to(device)


def _check_shapes(module_class: type[Any], config: Any, weights: Path) -> None:
    """The tensors in ``weights`` (its header only) against those ``config`` implies (a
    module built on the meta device: no memory), before anything real is built or read."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights} is unreadable: {error}") from error
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in module_class(config).state_dict().items()}
    problems = [f"missing tensor {name}" for name in expected if name not in shapes]
    problems += [f"unexpected tensor {name}" for name in shapes if name not in expected]
    problems += [
        f"tensor {name} has shape {shapes[name]}, config implies {shape}"
        for name, shape in expected.items()
        if name in shapes and shapes[name] != shape
    ]
    if problems:
        raise CheckpointError(f"{weights} does not match its config.json: " + "; ".join(problems))


def checkpoint_for_run(checkpoint: str | None, shipped: str, llm_name: str) -> str | None:
    """The user's checkpoint folder, else the shipped one when the LLM is the embedded one.

    ``checkpoint`` may also name a shipped checkpoint (a folder of ``dep_eval/checkpoints/``,
    e.g. ``dep-lora-smollm2-minilm``) when no local folder of that name exists.
    """
    from dep_eval.engine import EMBEDDED_LLM

    if checkpoint is not None:
        named = SHIPPED_DIR / checkpoint
        if not Path(checkpoint).exists() and "/" not in checkpoint and named.is_dir():
            return str(named)
        return checkpoint
    if llm_name == EMBEDDED_LLM and (SHIPPED_DIR / shipped / CONFIG_FILE).exists():
        return str(SHIPPED_DIR / shipped)
    return None


def open_checkpoint(
    module_class: type[Any], checkpoint: str | None, shipped: str, llm_name: str
) -> Checkpoint | None:
    """A run's ``checkpoint=`` (else the shipped one, ``checkpoint_for_run``), read once;
    None when the run has none."""
    folder = checkpoint_for_run(checkpoint, shipped, llm_name)
    return None if folder is None else read_checkpoint(module_class, folder)


def check_for_run(
    checkpoint: Checkpoint | None,
    *,
    method: str,
    llm_name: str,
    llm_hidden_size: int | None = None,
    encoder: str | None = None,
) -> Any:
    """``load_module_for_run``'s checks that need only the checkpoint's config.json, made
    before the LLM (minutes for a 7B model) and the weights load; returns that config.

    ``llm_hidden_size`` is None when it cannot be known without loading the LLM; an LLM
    name that differs is left to the loading (a name alone is only warned about)."""
    if checkpoint is None:
        raise _no_checkpoint(method, llm_name)
    config = checkpoint.config
    size_differs = llm_hidden_size not in (None, config.llm_hidden_size)
    check_compatible(
        config,
        encoder_name=encoder,
        llm_name=llm_name if size_differs else None,
        llm_hidden_size=llm_hidden_size,
    )
    return config


def load_module_for_run(
    checkpoint: Checkpoint | None, *, method: str, llm: Engine, encoder: str | None = None
) -> Any:
    """The trained module a run of ``--model method`` uses, checked against its LLM and encoder.

    Args:
        checkpoint: the run's checkpoint (``open_checkpoint``); None: there is none.
        method: the ``--model`` name, for messages.
        llm: the engine the module's vectors will be fed to.
        encoder: the user's ``encoder=``, or None for the checkpoint's own.
    """
    if checkpoint is None:
        raise _no_checkpoint(method, llm.name)
    return load_module(
        checkpoint,
        encoder_name=encoder,
        llm_name=llm.name,
        llm_hidden_size=llm.hidden_size,
        device=llm.device,
    )


def load_for_run(
    module_class: type[Any],
    checkpoint: str | None,
    *,
    method: str,
    shipped: str,
    llm: Engine,
    encoder: str | None = None,
) -> Any:
    """``load_module_for_run`` of the folder ``checkpoint`` (else the shipped one)."""
    return load_module_for_run(
        open_checkpoint(module_class, checkpoint, shipped, llm.name),
        method=method,
        llm=llm,
        encoder=encoder,
    )


def _no_checkpoint(method: str, llm_name: str) -> ValueError:
    return ValueError(
        f"--model {method} needs a {method} checkpoint for {llm_name}: pass --model_args "
        f"checkpoint=PATH. Train one with `dep-eval train --method {method} --data-dir DIR "
        "--category CAT --output runs/NAME` (its best epoch lands in runs/NAME/best); the "
        "checkpoint shipped with dep-eval fits only the embedded SmolLM2-135M-Instruct."
    )

"""The trainer of trainable methods: DEP (docs/method.md step 9) and PPlug.

The LLM is frozen; only the method's small module learns (DEP: the SAE and both aligners;
PPlug: the projector and the instruction vector), plus, when the method asks for one
(``TrainableMethod.lora_r``: DEP's ``--lora-r``), a LoRA of the LLM trained jointly by the
same optimizer and saved in each checkpoint's ``adapter/`` (``engine/adapters.py``), with

    loss = LM loss on the target text (+ EOS) + the method's auxiliary loss

(DEP's is ``100 * (reconstruction + 1e-3 * KL)``, PPlug has none). AdamW with linear
warm-up and decay, gradient accumulation, one checkpoint per epoch (written atomically;
``resume`` continues from the last complete epoch exactly, since each epoch's data order
comes from ``seed`` and the epoch number alone), and selection of the best epoch by METEOR
of generated reviews on the val split, copied to ``best/``. Every optimizer step's loss
components go to ``log.jsonl``.

A trainable method is a ``dep_eval.methods.base.TrainableMethod`` registered with
``dep_eval.registry``; its own options (``TrainArgs``) arrive as ``TrainConfig.method_options``.
The LLM's forward pass is the engine's (``TrainableEngine.target_loss``), so training and
inference build identical inputs.

The same code runs on a laptop CPU (the embedded SmolLM2) and on GPUs: ``accelerate`` takes
care of devices, bf16 and multi-GPU data parallelism (``accelerate launch -m dep_eval.cli
train ...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonlines
import torch
from tqdm.auto import tqdm

from dep_eval import registry
from dep_eval.data.records import Sample
from dep_eval.engine import EMBEDDED_LLM, GenerationSettings, load_trainable_engine, seed_for
from dep_eval.engine.adapters import check_adapter
from dep_eval.io import append_jsonl, atomic_folder, atomic_path, atomic_write, write_jsonl
from dep_eval.methods.base import TrainableMethod, parse_config
from dep_eval.train.common import linear_schedule, select_rows

logger = logging.getLogger(__name__)

PAPER_CATEGORIES = ("Books", "Movies_and_TV", "CDs_and_Vinyl")


def trainable_method(name: str) -> type[TrainableMethod]:
    trainable = sorted(n for n, spec in registry.methods().items() if spec.trainable)
    spec = registry.methods().get(name)
    if spec is None or not spec.trainable:
        raise ValueError(f"method {name!r} cannot be trained; trainable methods: {trainable}")
    return spec.method_class  # type: ignore[return-value]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Generic trainer options (the method's own are ``method_options``).

    Defaults are the paper's; ``dep-eval train --help`` is generated from these fields.
    """

    output: str = field(metadata=_help("run folder (created)"))
    method: str = field(default="dep", metadata=_help("the method to train"))
    data_dir: str | None = field(
        default=None,
        metadata=_help(
            "local data folder <dir>/<Category>/{train,val,test,meta}.jsonl "
            "(default: $DEP_EVAL_DATA_DIR, else the hub's SnowCharmQ/DPL-main)"
        ),
    )
    categories: tuple[str, ...] = field(
        default=PAPER_CATEGORIES,
        metadata={"help": "category to train on, repeatable", "flag": "category"},
    )
    pretrained: str | None = field(
        default=None, metadata=_help("LLM, hub id or folder (default: the embedded SmolLM2)")
    )
    base_adapter: str | None = field(
        default=None,
        metadata=_help(
            "a PEFT LoRA folder folded into the LLM before training and kept frozen (e.g. "
            "OPPU's task LoRA from --method oppu-base); each checkpoint carries a copy in "
            "its adapter/, so inference folds in the same one"
        ),
    )
    encoder: str | None = field(
        default=None, metadata=_help("sentence encoder (default: the embedded all-MiniLM-L6-v2)")
    )
    epochs: int = field(default=5, metadata=_help("passes over the training rows"))
    lr: float = field(default=1e-5, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=0.025, metadata=_help("AdamW weight decay"))
    warmup_ratio: float = field(default=0.01, metadata=_help("share of steps warming up"))
    micro_batch_size: int = field(default=1, metadata=_help("rows per forward pass"))
    grad_accum: int = field(
        default=16,
        metadata=_help(
            "micro-batches per optimizer step (effective batch = micro-batch x this x processes)"
        ),
    )
    max_length: int = field(default=3072, metadata=_help("prompt + target token budget"))
    max_target_tokens: int | None = field(
        default=None, metadata=_help("clip training targets to this many tokens (default: all)")
    )
    seed: int = field(default=42, metadata=_help("data order and initialisation"))
    all_rows: bool = field(
        default=False, metadata=_help("every training row, not one per user (longest profile)")
    )
    max_rows: int | None = field(
        default=None, metadata=_help("a seeded subset of this many training rows (default: all)")
    )
    val_rows: int = field(default=512, metadata=_help("val rows for choosing the best epoch"))
    val_max_new_tokens: int = field(default=256, metadata=_help("new tokens per val review"))
    device: str | None = field(
        default=None, metadata=_help("cpu, cuda, ... (default: what accelerate picks)")
    )
    dtype: str = field(default="auto", metadata=_help("default: bfloat16 on GPUs, float32 on CPUs"))
    resume: bool = field(
        default=False, metadata=_help("continue OUTPUT after its last complete epoch")
    )
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})


def _write_json(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data, indent=2))


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator

        from dep_eval.data.loaders import load_pool, load_split, resolve_source

        self.config = config
        self.output = Path(config.output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.accelerator = Accelerator(
            cpu=config.device == "cpu",
            mixed_precision="bf16"
            if torch.cuda.is_available() and config.dtype in ("auto", "bfloat16")
            else "no",
        )
        torch.manual_seed(config.seed)
        source = resolve_source({"data_dir": config.data_dir} if config.data_dir else None)
        method_class = trainable_method(config.method)
        train_args = parse_config(method_class.TrainArgs, config.method_options)
        lora_r = method_class.joint_lora_rank(train_args)
        if lora_r and config.base_adapter:
            # a checkpoint carries one LoRA of the LLM (the engine folds in one)
            raise ValueError(
                f"--lora-r {lora_r} with --base-adapter {config.base_adapter}: a checkpoint "
                "carries one LoRA of the LLM; train with one of the two"
            )
        if config.base_adapter:  # a missing folder or another LLM's adapter, before loading
            check_adapter(config.base_adapter, config.pretrained or EMBEDDED_LLM, "--base-adapter")
        self.llm = load_trainable_engine(
            pretrained=config.pretrained,
            device=str(self.accelerator.device),
            dtype="float32" if not torch.cuda.is_available() else config.dtype,
            peft=config.base_adapter,
        )
        self.method = method_class.for_training(
            train_args,
            self.llm,
            encoder=config.encoder,
            max_prompt_tokens=config.max_length,
        )
        self.module = self.method.module.to(self.accelerator.device)
        # after the module: its initialisation is the same with or without a LoRA
        self.lora = self._lora() if self.method.lora_r else None
        self.pools = {}
        self.train_rows: list[Sample] = []
        self.val_rows: list[Sample] = []
        for category in config.categories:
            self.pools[category] = load_pool(source, category)
            self.method.setup(self.pools[category])
            self.train_rows += select_rows(load_split(source, category, "train"), config.all_rows)
            self.val_rows += load_split(source, category, "val")
        if config.max_rows is not None:
            random.Random(config.seed).shuffle(self.train_rows)
            self.train_rows = self.train_rows[: config.max_rows]
        random.Random(config.seed).shuffle(self.val_rows)
        self.val_rows = self.val_rows[: config.val_rows]
        self.steps_per_epoch = math.ceil(len(self.batches(0)) / config.grad_accum)
        total = self.steps_per_epoch * config.epochs
        parameters = list(self.module.parameters())
        if self.lora is not None:
            parameters += [p for p in self.lora.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            parameters, lr=config.lr, weight_decay=config.weight_decay
        )
        warmup = max(1, round(config.warmup_ratio * total))
        self.scheduler = linear_schedule(self.optimizer, warmup, total)
        self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)

    def _lora(self) -> Any:
        from dep_eval.engine.adapters import trainable_lora

        if self.accelerator.num_processes > 1:
            # only the module goes through accelerate's data-parallel wrapper, so the LoRA's
            # gradients would not be averaged across processes
            raise ValueError(
                f"--lora-r {self.method.lora_r} trains on one process only; run `dep-eval "
                "train` without `accelerate launch` (or with --num_processes 1)"
            )
        lora = trainable_lora(self.llm.model, self.method.lora_r, self.llm.name)
        logger.info(
            "training a LoRA of rank %d on the LLM with the module: %d parameters",
            self.method.lora_r,
            sum(p.numel() for p in lora.parameters() if p.requires_grad),
        )
        return lora

    # -- one micro-batch --------------------------------------------------------------

    def losses(self, batch: list[Sample]) -> dict[str, torch.Tensor]:
        """LM loss and the method's auxiliary losses of a micro-batch (one category)."""
        training = self.method.training_batch(batch, self.pools[batch[0].category])
        tokenizer = self.llm.tokenizer
        targets = []
        for prompt, sample in zip(training.prompts, batch, strict=True):
            room = self.config.max_length - len(self.llm.tokenize(prompt)) - 1
            target_ids = tokenizer(sample.target.text, add_special_tokens=False)["input_ids"]
            target_ids = target_ids[: self.config.max_target_tokens][: max(1, room)]
            targets.append([*target_ids, tokenizer.eos_token_id])
        lm_loss = self.llm.target_loss(training.prompts, targets)
        return {"loss": lm_loss + training.aux_loss, "lm": lm_loss, **training.logs}

    def batches(self, epoch: int) -> list[list[Sample]]:
        """Micro-batches of one category each, in an order fixed by (seed, epoch)."""
        rows = list(self.train_rows)
        random.Random(f"{self.config.seed}/{epoch}").shuffle(rows)
        size = self.config.micro_batch_size
        by_category: dict[str, list[Sample]] = {}
        for row in rows:
            by_category.setdefault(row.category, []).append(row)
        batches = [
            group[i : i + size]
            for group in by_category.values()
            for i in range(0, len(group), size)
        ]
        random.Random(f"{self.config.seed}/{epoch}/batches").shuffle(batches)
        return batches

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> Path:
        start_epoch = self._resume() if self.config.resume else 0
        log_path = self.output / "log.jsonl"
        step = start_epoch * self.steps_per_epoch
        accum = self.config.grad_accum
        for epoch in range(start_epoch, self.config.epochs):
            self.module.train()
            batches = self.batches(epoch)
            # optimizer steps: groups of `accum` micro-batches; a short last group is scaled
            # by its own size, and no gradient crosses an epoch (so resume is exact)
            groups = [batches[i : i + accum] for i in range(0, len(batches), accum)]
            bar = tqdm(
                total=len(batches),
                desc=f"epoch {epoch + 1}/{self.config.epochs}",
                disable=not self.accelerator.is_main_process,
            )
            started = time.perf_counter()
            for group in groups:
                sums: dict[str, float] = {}
                for position, batch in enumerate(group, 1):
                    last = position == len(group)
                    with (
                        contextlib.nullcontext() if last else self.accelerator.no_sync(self.module)
                    ):
                        losses = self.losses(batch)
                        self.accelerator.backward(losses["loss"] / len(group))
                    for name, value in losses.items():
                        sums[name] = sums.get(name, 0.0) + float(value.detach()) / len(group)
                    bar.update()
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
                step += 1
                record = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": self.scheduler.get_last_lr()[0],
                    "rows": sum(map(len, group)),
                    "seconds": round(time.perf_counter() - started, 2),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    **sums,
                }
                if self.accelerator.is_main_process:
                    append_jsonl(log_path, [record])
                bar.set_postfix({name: f"{value:.4f}" for name, value in sums.items()})
            bar.close()
            self._save_epoch(epoch + 1)
        return self._select_best()

    # -- checkpoints, resume, selection ----------------------------------------------------

    def _save_epoch(self, epoch: int) -> None:
        from dep_eval.checkpoint import save_checkpoint

        if not self.accelerator.is_main_process:
            return
        module = self.accelerator.unwrap_model(self.module)
        folder = self.output / f"epoch-{epoch}"
        save_checkpoint(
            module,
            folder,
            extra={"max_target_tokens": self.config.max_target_tokens},
            adapter=self.lora,
            frozen_adapter=self.config.base_adapter,
        )
        state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        _save_trainer_state(state, self.output / f"trainer-state-{epoch}.safetensors")
        _write_json(self.output / "train_config.json", dataclasses.asdict(self.config))

    def _resume(self) -> int:
        done = sorted(
            int(p.name.split("-")[1])
            for p in self.output.glob("epoch-*")
            if (self.output / f"trainer-state-{p.name.split('-')[1]}.safetensors").exists()
        )
        if not done:
            logger.info("Nothing to resume in %s: starting from epoch 1", self.output)
            return 0
        epoch = done[-1]
        self._load_epoch(self.output / f"epoch-{epoch}")
        state = _load_trainer_state(self.output / f"trainer-state-{epoch}.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # drop log lines of a partial epoch, so the log reads as one uninterrupted run
        log_path = self.output / "log.jsonl"
        if log_path.exists():
            with jsonlines.open(log_path) as reader:
                rows = list(reader.iter(skip_empty=True))
            write_jsonl(log_path, [row for row in rows if row["epoch"] <= epoch])
        logger.info("Resuming %s after epoch %d", self.output, epoch)
        return epoch

    def _load_epoch(self, folder: Path) -> None:
        """The module's weights, and the LoRA's when there is one, from a checkpoint."""
        from dep_eval.checkpoint import adapter_folder
        from dep_eval.engine.adapters import fingerprint, load_lora_weights

        module = self.accelerator.unwrap_model(self.module)
        adapter = adapter_folder(type(module), folder)
        if self.config.base_adapter:  # its adapter/ must be the one this run folded in
            if adapter is None or fingerprint(adapter) != fingerprint(self.config.base_adapter):
                raise ValueError(
                    f"{folder} was not trained on --base-adapter {self.config.base_adapter}: "
                    f"resume with the options of {self.output / 'train_config.json'}"
                )
            _load_weights_into(module, folder)
            return
        if (adapter is None) != (self.lora is None):
            raise ValueError(
                f"{folder} was trained {'with' if adapter else 'without'} a LoRA of the LLM, "
                f"this run {'with' if self.lora is not None else 'without'}: resume with the "
                f"options of {self.output / 'train_config.json'} (--lora-r, --base-adapter)"
            )
        _load_weights_into(module, folder)
        if adapter is not None:
            load_lora_weights(self.lora, adapter)

    def validate(self, folder: Path) -> float:
        """METEOR of reviews generated on the val rows with the checkpoint in ``folder``."""
        from dep_eval.metrics.lexical import meteor

        module = self.accelerator.unwrap_model(self.module)
        self._load_epoch(folder)
        module.eval()
        settings = GenerationSettings(
            max_new_tokens=self.config.val_max_new_tokens, seed=self.config.seed
        )
        predictions = []
        with torch.no_grad():
            for category in self.config.categories:
                rows = [s for s in self.val_rows if s.category == category]
                if not rows:
                    continue
                prompts = self.method.training_batch(rows, self.pools[category]).prompts
                generations = self.llm.generate(
                    prompts,
                    [seed_for(settings.seed, s.key) for s in rows],
                    settings,
                    batch_size=8,
                    progress=f"validating {folder.name}",
                )
                predictions += list(
                    zip([g.text for g in generations], [s.target.text for s in rows], strict=True)
                )
        return meteor([p for p, _ in predictions], [r for _, r in predictions])

    def _select_best(self) -> Path:
        scores = {}
        for epoch in range(1, self.config.epochs + 1):
            folder = self.output / f"epoch-{epoch}"
            scores[epoch] = self.validate(folder)
            logger.info("epoch %d: val METEOR %.4f", epoch, scores[epoch])
        best = max(scores, key=lambda e: (scores[e], -e))
        target = self.output / "best"
        with atomic_folder(target) as staging:
            shutil.copytree(self.output / f"epoch-{best}", staging, dirs_exist_ok=True)
        _write_json(
            self.output / "selection.json",
            {
                "metric": "meteor",
                "scores": scores,
                "best_epoch": best,
                "val_rows": len(self.val_rows),
            },
        )
        return target


def _load_weights_into(module: torch.nn.Module, folder: Path) -> None:
    from dep_eval.checkpoint import load_checkpoint

    device = next(module.parameters()).device
    module.load_state_dict(load_checkpoint(type(module), folder, device=device).state_dict())


def _save_trainer_state(state: dict, path: Path) -> None:
    """Optimizer and scheduler state as safetensors (tensors) + JSON (the rest): no pickle."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def strip(obj: object, prefix: str) -> object:
        if isinstance(obj, torch.Tensor):
            tensors[prefix] = obj.detach().cpu().contiguous()
            return {"__tensor__": prefix}
        if isinstance(obj, dict):
            return {str(k): strip(v, f"{prefix}.{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [strip(v, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return obj

    skeleton = strip(state, "state")
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata={"skeleton": json.dumps(skeleton)})


def _load_trainer_state(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        skeleton = json.loads(handle.metadata()["skeleton"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118

    def fill(obj: object) -> object:
        if isinstance(obj, dict):
            if set(obj) == {"__tensor__"}:
                return tensors[obj["__tensor__"]]
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return obj

    state = fill(skeleton)
    # optimizer state is keyed by parameter index (int) in torch
    state["optimizer"]["state"] = {int(k): v for k, v in state["optimizer"]["state"].items()}
    return state


def train(config: TrainConfig) -> Path:
    """Train ``config.method``; returns the folder of the best checkpoint."""
    return Trainer(config).run()

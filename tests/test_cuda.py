"""The HF engine on CUDA: soft vectors built on the CPU, batch_size=auto sized by the GPU,
greedy texts as ``model.generate()``'s, the CUDA-graph decode against the eager steps,
training through CPU-built vectors.

Runs only where CUDA is present (``benchmarks/gpu_session.sh`` runs it on a GPU machine).
The LLM: ``DEP_EVAL_CUDA_MODEL`` (a model folder) if set, else the embedded SmolLM2 where it
can be loaded, else a small random-weight Llama built with the tokenizer of
``DEP_EVAL_TOKENIZER`` (what a bare GPU machine has: the folder ``bench_gpu.py`` bundles).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dep_eval.engine import GenerationSettings, Prompt, memory

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA is not available: these tests run on a GPU machine (benchmarks/gpu_session.sh)",
)

PRODUCTS = [
    "a red lipstick",
    "a citrus body lotion with a vanilla scent",
    "nail files",
    "a shampoo for curly hair",
    "a rose face mist",
    "an eyelash curler",
    "a tea tree oil",
    "a charcoal face mask",
]


def chat(text: str) -> Prompt:
    return Prompt(
        [
            {"role": "system", "content": "You write product reviews."},
            {"role": "user", "content": text},
        ]
    )


def _model_folder(tmp: Path) -> str | None:
    if os.environ.get("DEP_EVAL_CUDA_MODEL"):
        return os.environ["DEP_EVAL_CUDA_MODEL"]
    tokenizer_dir = os.environ.get("DEP_EVAL_TOKENIZER")
    if not tokenizer_dir:
        from dep_eval.engine import loading

        try:
            return str(loading.embedded_llm_path())
        except RuntimeError:
            return None
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = None
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return str(tmp)


@pytest.fixture(scope="module")
def gpu_llm(tmp_path_factory: pytest.TempPathFactory):
    from dep_eval.engine.hf import HFEngine

    folder = _model_folder(tmp_path_factory.mktemp("cuda-model"))
    if folder is None:
        pytest.skip("no LLM: set DEP_EVAL_CUDA_MODEL or DEP_EVAL_TOKENIZER, or install SmolLM2")
    return HFEngine(pretrained=folder, device="cuda", dtype="float32")


def test_dep_prompts_with_vectors_built_on_the_cpu(gpu_llm) -> None:
    """The failure of issue 31: vectors built on the CPU reach a model on the GPU."""
    ids = gpu_llm.add_placeholder_tokens(["<|cuda_a|>", "<|cuda_b|>"])
    gpu_llm.add_fixed_tokens({"<|cuda_mark|>": torch.randn(gpu_llm.hidden_size)})  # CPU too
    prompt = chat("Hints <|cuda_mark|><|cuda_a|> and <|cuda_b|>. Write a review.")
    vectors = torch.randn(2, gpu_llm.hidden_size, dtype=torch.float64)  # CPU, another dtype
    token_ids = torch.tensor([gpu_llm.tokenize(prompt)])  # CPU as well
    embeds = gpu_llm.tokens.embed(token_ids, [vectors])
    assert embeds.device.type == "cuda" and embeds.dtype == gpu_llm.dtype
    slots = [i for i, t in enumerate(token_ids[0].tolist()) if t in ids]
    torch.testing.assert_close(embeds[0, slots].cpu(), vectors.to(gpu_llm.dtype))
    prompt.soft_vectors = vectors
    greedy = GenerationSettings(max_new_tokens=8, do_sample=False)
    (out,) = gpu_llm.generate([prompt], [0], greedy)
    assert out.generated_tokens >= 1


def test_training_through_vectors_built_on_the_cpu(gpu_llm) -> None:
    gpu_llm.add_placeholder_tokens(["<|cuda_c|>"])
    vectors = torch.randn(1, gpu_llm.hidden_size, requires_grad=True)  # a CPU leaf
    prompt = Prompt(chat("Topic <|cuda_c|>. Write a review.").messages, soft_vectors=vectors)
    target = gpu_llm.tokenizer("Great product.", add_special_tokens=False)["input_ids"]
    loss = gpu_llm.target_loss([prompt], [target])
    loss.backward()
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    assert vectors.grad is not None and vectors.grad.device.type == "cpu"
    assert vectors.grad.abs().sum() > 0


def test_auto_batch_size_counts_the_gpus_free_memory(gpu_llm, caplog) -> None:
    free, _total = torch.cuda.mem_get_info()
    with caplog.at_level("INFO", logger="dep_eval"):
        size = gpu_llm.auto_batch_size(500, 64, rows=10_000)
    assert "GPU cuda" in caplog.text and "host RAM" not in caplog.text
    cost = memory.row_cost(gpu_llm.model.config, gpu_llm.dtype, 500, 64)
    fits = int(free * memory.CUDA_MEMORY_FRACTION) // cost.kv_cache
    assert size <= memory.MAX_AUTO_BATCH_CUDA
    if fits > 2 * memory.MAX_AUTO_BATCH:  # a small LLM on a big GPU: beyond the CPU's cap
        assert size > memory.MAX_AUTO_BATCH


def test_greedy_texts_match_model_generate_for_most_documents(gpu_llm) -> None:
    """fp32 on the GPU: the engine's batched greedy texts against ``generate()`` one by one.
    Kernels differ between the two paths, so a near-tie may flip a token: most, not all."""
    prompts = [chat(f"Write a review of {product}.") for product in PRODUCTS]
    greedy = GenerationSettings(max_new_tokens=24, do_sample=False)
    stop_ids = gpu_llm.stop_ids
    gpu_llm.stop_ids = set()  # both run to 24 tokens
    try:
        ours = [g.text for g in gpu_llm.generate(prompts, [0] * 8, greedy, batch_size=4)]
    finally:
        gpu_llm.stop_ids = stop_ids
    theirs = []
    for prompt in prompts:
        ids = torch.tensor([gpu_llm.tokenize(prompt)], device="cuda")
        with torch.no_grad():
            out = gpu_llm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=24,
                min_new_tokens=24,
                eos_token_id=None,
                pad_token_id=gpu_llm.tokens.pad_id,
            )
        theirs.append(
            gpu_llm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        )
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 6, list(zip(ours, theirs, strict=True))


def test_graph_decode_replays_the_eager_steps(gpu_llm, monkeypatch, caplog) -> None:
    """decode=auto is the CUDA graph on a GPU. Its replays run the kernels that the eager
    fixed-shape steps launch, so their sampled texts agree; against the dynamic path (attention
    over the filled cache only) kernels differ, so greedy texts agree for most documents."""
    assert gpu_llm.decode == "graph"
    prompts = [chat(f"Write a review of {product}.") for product in PRODUCTS]
    sampled = GenerationSettings(max_new_tokens=24, temperature=0.9, top_p=0.95)
    greedy = GenerationSettings(max_new_tokens=24, do_sample=False)
    seeds = list(range(len(prompts)))

    def texts(settings: GenerationSettings) -> list[str]:
        return [g.text for g in gpu_llm.generate(prompts, seeds, settings, batch_size=4)]

    with caplog.at_level("WARNING", logger="dep_eval"):
        graph_sampled, graph_greedy = texts(sampled), texts(greedy)
    assert "capturing the decode step failed" not in caplog.text
    assert gpu_llm.decode == "graph"  # no fallback happened
    monkeypatch.setattr(gpu_llm, "decode", "fixed")
    fixed_sampled = texts(sampled)
    monkeypatch.setattr(gpu_llm, "decode", "dynamic")
    dynamic_greedy = texts(greedy)
    same_sampled = sum(a == b for a, b in zip(graph_sampled, fixed_sampled, strict=True))
    same_greedy = sum(a == b for a, b in zip(graph_greedy, dynamic_greedy, strict=True))
    assert same_sampled >= 7, list(zip(graph_sampled, fixed_sampled, strict=True))
    assert same_greedy >= 6, list(zip(graph_greedy, dynamic_greedy, strict=True))
    assert len(set(graph_sampled)) >= 4  # the rows really produced different texts

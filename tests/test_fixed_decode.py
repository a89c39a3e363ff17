"""Fixed-shape decode steps (``engine/fixed_decode.py``), the GPU's CUDA-graph route, checked
on the CPU: the same texts as the dynamic path, the mode's resolution and its fallbacks.

The CUDA graph itself runs only on a GPU (``tests/test_cuda.py``); here the same steps run
eagerly (``decode=fixed``), which is everything the graph replays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from dep_eval.engine import GenerationSettings, Prompt
from dep_eval.engine.fixed_decode import FixedShapeDecoder, SlotCache
from dep_eval.engine.hf import HFEngine
from dep_eval.engine.kv_cache import PreallocatedCache, left_padded

GREEDY = GenerationSettings(max_new_tokens=20, do_sample=False)
SAMPLED = GenerationSettings(max_new_tokens=20, temperature=0.9, top_p=0.95)


def chat(text: str, cap: int | None = None) -> Prompt:
    messages = [
        {"role": "system", "content": "You write product reviews."},
        {"role": "user", "content": text},
    ]
    return Prompt(messages, max_new_tokens=cap)


# rows of different lengths and different caps: rows finish at different steps
PROMPTS = [
    chat("Write a review of a red lipstick. " + "It is bright and lasts all day. " * 6),
    chat("Write a review of nail files.", cap=7),
    chat("Write a review of a shampoo for curly hair that smells of coconut.", cap=13),
    chat("Review a rose face mist."),
]


def texts(engine: HFEngine, settings: GenerationSettings, batch_size: int = 4) -> list[str]:
    seeds = list(range(len(PROMPTS)))
    return [g.text for g in engine.generate(PROMPTS, seeds, settings, batch_size=batch_size)]


def step_logits_both_ways(engine: HFEngine, steps: int = 20) -> tuple[float, int]:
    """Prefill ``PROMPTS`` twice, then decode both copies, one with fixed steps and one with
    dynamic steps, feeding both the dynamic logits' greedy picks.

    Returns: the largest |fixed - dynamic| logit over all steps and rows, and how many of
    those (step, row) picks the fixed logits would have changed."""
    ids = [engine.tokenize(p) for p in PROMPTS]
    vectors = [None] * len(ids)
    worst, flips = 0.0, 0
    with torch.no_grad():
        fixed, hidden, positions = engine.start_decoding(ids, vectors, steps, "fixed")
        dynamic, _, _ = engine.start_decoding(ids, vectors, steps, "dynamic")
        logits = engine.last_logits(hidden)  # (B, vocab)
        for _ in range(steps):
            picks = logits.argmax(-1)  # (B,)
            positions = positions + 1  # (B, 1)
            fixed_logits = fixed.step(picks, positions)
            logits = dynamic.step(picks, positions)
            worst = max(worst, (fixed_logits - logits).abs().max().item())
            flips += int((fixed_logits.argmax(-1) != logits.argmax(-1)).sum())
    return worst, flips


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fixed_steps_compute_the_dynamic_steps(tiny_folder: Path, attention: str) -> None:
    """float32 on a CPU: every step's logits agree to rounding, and greedy texts at batch 4
    and 1 are identical.

    Not bit for bit: a fixed step attends over the whole cache with the unused slots masked
    out, so the attention kernel sums in another order than over the filled part alone.
    Within 1e-5 with transformers 5.25 and 5.17; a mask column opened one slot late moves
    them by 0.05. Sampled texts can then part where two tokens' probabilities straddle the
    top-p cut (seen with 5.17, the GPU image's version), which is why they are not compared
    here."""
    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32", decode="fixed")
    engine.model.set_attn_implementation(attention)
    assert engine.decode == "fixed"
    worst, flips = step_logits_both_ways(engine)
    assert worst < 1e-5 and flips == 0
    fixed = [texts(engine, GREEDY), texts(engine, GREEDY, 1)]
    engine.decode = "dynamic"
    assert [texts(engine, GREEDY), texts(engine, GREEDY, 1)] == fixed


def test_the_mode_resolves_by_device_and_attention(tiny_folder: Path) -> None:
    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32")
    assert engine.decode == "dynamic"  # auto on a CPU
    with pytest.raises(ValueError, match="decode=graph needs CUDA.*decode=fixed"):
        HFEngine(pretrained=str(tiny_folder), device="cpu", decode="graph")
    with pytest.raises(ValueError, match="decode='static': expected one of"):
        HFEngine(pretrained=str(tiny_folder), device="cpu", decode="static")
    # attention that ignores a 4D additive mask (flash-attention takes 2D masks only)
    engine.model.config._attn_implementation = "flash_attention_2"
    assert engine._decode_mode("fixed") == "dynamic"


def test_a_failed_capture_decodes_eagerly_with_the_same_texts(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An op that a CUDA graph cannot hold (simulated: capturing raises) costs speed, not the
    run: one warning, the batch finishes eagerly, and the engine stops trying."""
    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32", decode="fixed")
    expected = texts(engine, SAMPLED)
    tries = []

    def failing_capture(self: FixedShapeDecoder) -> torch.Tensor:
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(FixedShapeDecoder, "_capture", failing_capture)
    engine.decode = "graph"  # as on CUDA
    with caplog.at_level(logging.WARNING, logger="dep_eval"):
        assert texts(engine, SAMPLED, batch_size=2) == expected
    assert len(tries) == 1 and engine.decode == "fixed"
    assert "capturing the decode step failed" in caplog.text


def test_per_prompt_adapters_decode_without_a_graph(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEFT routes a mixed-adapter batch's rows in Python at every step, which a replayed
    graph would skip: such batches take the fixed steps eagerly."""
    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32", decode="fixed")
    graphs: list[bool] = []
    real_init = FixedShapeDecoder.__init__

    def spy(self: FixedShapeDecoder, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        graphs.append(self.use_graph)

    monkeypatch.setattr(FixedShapeDecoder, "__init__", spy)
    engine.decode = "graph"
    ids = [len(engine.tokenize(p)) for p in PROMPTS[:2]]
    engine._generate_batch(
        [engine.tokenize(p) for p in PROMPTS[:2]], [None, None], [0, 1], [3, 3], GREEDY,
        route=lambda rows: torch.no_grad(), routed=True,
    )  # fmt: skip
    assert graphs == [False] and min(ids) > 0


def test_a_step_writes_its_slot_and_opens_its_mask_column() -> None:
    """The cache keeps its shape and address; the step's keys land at width + step."""
    rows = PreallocatedCache(1, 3)
    keys = torch.ones(2, 1, 3, 4)
    rows.layers[0].update(keys, keys)  # 3 prompt positions
    prefilled = left_padded([rows], width=3, capacity=8)
    buffer = prefilled.layers[0]._keys
    calls = []

    def step_fn(ids, positions, mask, cache: SlotCache) -> torch.Tensor:
        cache.layers[0].update(torch.full((2, 1, 1, 4), 5.0), torch.full((2, 1, 1, 4), 6.0))
        calls.append(((mask[:, 0, 0] == 0).sum(-1).tolist(), ids[:, 0].tolist()))
        return torch.zeros(2, 10)

    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    decoder = FixedShapeDecoder(step_fn, prefilled, mask, torch.float32, graph=False)
    decoder.step(torch.tensor([7, 8]), torch.tensor([[2], [3]]))
    decoder.step(torch.tensor([9, 9]), torch.tensor([[3], [4]]))
    assert calls == [([3, 4], [7, 8]), ([4, 5], [9, 9])]
    layer = decoder.cache.layers[0]
    assert layer.keys.data_ptr() == buffer.data_ptr() and layer.keys.shape == (2, 1, 8, 4)
    assert layer.keys[:, 0, 3:5, 0].tolist() == [[5.0, 5.0], [5.0, 5.0]]
    assert layer.keys[:, 0, 5:, 0].abs().sum() == 0  # later slots untouched
    assert decoder.mask[0, 0, 0, 0] == torch.finfo(torch.float32).min  # padding stays shut


@pytest.mark.slow
def test_fixed_steps_on_the_embedded_llm(llm: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded SmolLM2 (float32): the fixed steps' texts are the dynamic path's."""
    dynamic = [texts(llm, GREEDY), texts(llm, SAMPLED)]
    monkeypatch.setattr(llm, "decode", "fixed")
    assert [texts(llm, GREEDY), texts(llm, SAMPLED)] == dynamic


def test_decode_and_prefill_are_model_args_of_the_hf_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``--model_args decode=dynamic`` reaches HFEngine; with backend=auto on vLLM it is
    dropped with a warning, as vLLM's own arguments are on the HF engine."""
    from dep_eval.methods.lm_eval_model import _engine_args

    args = {"decode": "dynamic", "prefill": "rows", "k": 4}
    assert _engine_args("hf", "hf", args) == {"decode": "dynamic", "prefill": "rows"}
    assert args == {"k": 4}  # the method keeps its own
    args = {"decode": "graph", "k": 4}
    with caplog.at_level(logging.WARNING, logger="dep_eval"):
        assert _engine_args("vllm", "auto", args) == {}
    assert args == {"k": 4} and "ignoring the other engine's ['decode']" in caplog.text
    args = {"decode": "graph"}
    assert _engine_args("vllm", "vllm", args) == {} and args == {"decode": "graph"}


@pytest.mark.parametrize("decode", ["dynamic", "fixed"])
def test_an_adapter_on_the_lm_head_reaches_the_first_token(
    tiny_folder: Path, tmp_path: Path, decode: str
) -> None:
    """A per-prompt LoRA on ``lm_head`` (OPPU's ``target_modules`` may name it) acts on every
    token, the first (computed from the prefill) included: a mixed batch's rows give the
    texts of the adapter folded in (``peft=``) and of no adapter."""
    from peft import LoraConfig, get_peft_model

    from dep_eval.engine.adapters import quiet_peft

    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32", decode=decode)
    torch.manual_seed(3)  # a strong adapter: the LM head's LoRA term decides every token
    config = LoraConfig(r=4, lora_alpha=512, target_modules=["lm_head"], init_lora_weights=False)
    with quiet_peft():
        peft_model = get_peft_model(engine.model, config)
    peft_model.save_pretrained(str(tmp_path / "head"), save_embedding_layers=False)
    engine.model = peft_model.unload()
    greedy = GenerationSettings(max_new_tokens=4, do_sample=False)
    rows = [Prompt(PROMPTS[0].messages, adapter=str(tmp_path / "head")), PROMPTS[1]]
    mixed = [g.text for g in engine.generate(rows, [0, 0], greedy, batch_size=2)]
    plain = [g.text for g in engine.generate(PROMPTS[:2], [0, 0], greedy, batch_size=2)]
    folded = HFEngine(
        pretrained=str(tiny_folder), device="cpu", dtype="float32", peft=str(tmp_path / "head")
    )
    (with_adapter,) = [g.text for g in folded.generate(PROMPTS[:1], [0], greedy)]
    assert mixed == [with_adapter, plain[1]]
    assert with_adapter[:4] != plain[0][:4]  # the adapter changes the very first token


def test_the_fixed_step_traces_as_one_graph(tiny_folder: Path) -> None:
    """What a CUDA graph replays, traced by torch.compile's front end on the CPU: one graph and
    no break. A break marks a host-side op in the step (a ``.item()``, a branch on a tensor's
    value), which capturing would also trip on; gpu_preflight.sh runs this under the GPU
    image's transformers."""
    engine = HFEngine(pretrained=str(tiny_folder), device="cpu", dtype="float32", decode="fixed")
    ids = [list(range(100, 130)), list(range(200, 220))]
    with torch.no_grad():
        decoder, _, positions = engine.start_decoding(ids, [None, None], 8, "fixed")
        assert isinstance(decoder, FixedShapeDecoder)
        decoder.step(torch.tensor([5, 6]), positions + 1)  # the buffers are set
        explained = torch._dynamo.explain(decoder.step_fn)(
            decoder.ids, decoder.positions, decoder.mask, decoder.cache
        )
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1

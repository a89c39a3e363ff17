"""The shared generation engine: seeding, batch invariance, soft prompts, settings."""

from __future__ import annotations

import logging

import pytest
import torch

from dep_eval.engine import GenerationSettings, Prompt, seed_for
from dep_eval.engine.hf import HFEngine
from dep_eval.methods.lm_eval_model import generation_settings

SETTINGS = GenerationSettings(max_new_tokens=12)


def chat(text: str) -> Prompt:
    return Prompt(
        [
            {"role": "system", "content": "You write product reviews."},
            {"role": "user", "content": text},
        ]
    )


PROMPTS = [
    chat(f"Write a review of {x}.")
    for x in [
        "a red lipstick",
        "a citrus body lotion with a long name and a vanilla scent",
        "nail files",
        "a shampoo for curly hair",
    ]
]


def test_output_does_not_depend_on_batch_size_or_order(llm: HFEngine) -> None:
    seeds = [seed_for(1234, i) for i in range(len(PROMPTS))]
    one = [g.text for g in llm.generate(PROMPTS, seeds, SETTINGS, batch_size=1)]
    four = [g.text for g in llm.generate(PROMPTS, seeds, SETTINGS, batch_size=4)]
    reordered = [g.text for g in llm.generate(PROMPTS[::-1], seeds[::-1], SETTINGS, batch_size=3)]
    assert one == four == reordered[::-1]
    assert len(set(one)) == len(one)  # and the prompts really produced different texts


def test_the_seed_changes_a_sampled_output(llm: HFEngine) -> None:
    texts = {llm.generate(PROMPTS[:1], [seed], SETTINGS)[0].text for seed in range(4)}
    assert len(texts) > 1


def test_greedy_ignores_the_seed(llm: HFEngine) -> None:
    greedy = GenerationSettings(max_new_tokens=8, do_sample=False)
    texts = {llm.generate(PROMPTS[:1], [seed], greedy)[0].text for seed in range(3)}
    assert len(texts) == 1


def test_soft_vectors_fill_placeholders_in_order(llm: HFEngine) -> None:
    ids = llm.add_placeholder_tokens(["<|test_a|>", "<|test_b|>"])
    assert min(ids) >= llm.tokens.vocab_size  # outside the LLM's vocabulary: its weights untouched
    prompt = chat("Hints <|test_b|> and <|test_a|>. Write a review.")
    token_ids = torch.tensor([llm.tokenize(prompt)])
    vectors = torch.randn(2, llm.hidden_size)
    embeds = llm.tokens.embed(token_ids, [vectors])
    positions = [i for i, t in enumerate(token_ids[0].tolist()) if t in ids]
    assert torch.equal(embeds[0, positions[0]], vectors[0])
    assert torch.equal(embeds[0, positions[1]], vectors[1])
    others = [i for i in range(token_ids.shape[1]) if i not in positions]
    plain = llm.tokens.embedding(token_ids[0, others])
    assert torch.equal(embeds[0, others], plain)


def test_soft_vectors_reach_the_output(llm: HFEngine) -> None:
    llm.add_placeholder_tokens(["<|test_c|>"])
    greedy = GenerationSettings(max_new_tokens=10, do_sample=False)
    texts = {
        llm.generate(
            [
                Prompt(
                    chat("Topic: <|test_c|>. Write one sentence.").messages,
                    soft_vectors=torch.randn(
                        1, llm.hidden_size, generator=torch.Generator().manual_seed(s)
                    )
                    * 3,
                )
            ],
            [0],
            greedy,
        )[0].text
        for s in range(3)
    }
    assert len(texts) > 1


def test_placeholder_count_mismatch_is_an_error(llm: HFEngine) -> None:
    llm.add_placeholder_tokens(["<|test_d|>"])
    token_ids = torch.tensor([llm.tokenize(chat("One <|test_d|> slot."))])
    with pytest.raises(ValueError, match="1 placeholder tokens but 2 soft vectors"):
        llm.tokens.embed(token_ids, [torch.zeros(2, llm.hidden_size)])


def test_lm_eval_default_cuda_device_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    from dep_eval.engine.loading import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda:0").type == "cpu"
    assert "CUDA is not available" in caplog.text


def test_generation_settings_from_lm_eval_gen_kwargs() -> None:
    settings = generation_settings(
        {
            "until": ["<|im_end|>"],
            "do_sample": "false",
            "temperature": "0.7",
            "top_p": 0.9,
            "max_gen_toks": "64",
            "seed": 7,
        }
    )
    assert settings == GenerationSettings(64, False, 0.7, 0.9, 7, ("<|im_end|>",))
    assert settings.greedy

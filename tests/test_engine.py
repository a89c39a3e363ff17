"""The shared generation engine: seeding, batch invariance, soft prompts, settings."""

from __future__ import annotations

import logging

import pytest
import torch

from dep_eval.engine import (
    Engine,
    GenerationSettings,
    Prompt,
    TrainableEngine,
    require_trainable,
    seed_for,
    truncate_prompt,
)
from dep_eval.engine import hf as hf_module
from dep_eval.engine.base import DEFAULT_BATCH_SIZE
from dep_eval.engine.hf import HFEngine, _prefill_groups
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


def test_progress_bar_counts_documents(llm: HFEngine, capsys: pytest.CaptureFixture[str]) -> None:
    short = GenerationSettings(max_new_tokens=2)
    llm.generate(PROMPTS[:3], [1, 2, 3], short, batch_size=2, progress="x: generating 3 reviews")
    bar = capsys.readouterr().err
    assert "x: generating 3 reviews" in bar and "3/3 [" in bar
    assert "/2 [" not in bar  # never a count of the two batches


@pytest.mark.slow
def test_output_does_not_depend_on_batch_size_or_order(llm: HFEngine) -> None:
    seeds = [seed_for(1234, i) for i in range(len(PROMPTS))]
    one = [g.text for g in llm.generate(PROMPTS, seeds, SETTINGS, batch_size=1)]
    four = [g.text for g in llm.generate(PROMPTS, seeds, SETTINGS, batch_size=4)]
    reordered = [g.text for g in llm.generate(PROMPTS[::-1], seeds[::-1], SETTINGS, batch_size=3)]
    assert one == four == reordered[::-1]
    assert len(set(one)) == len(one)  # and the prompts really produced different texts


@pytest.mark.slow
def test_the_seed_changes_a_sampled_output(llm: HFEngine) -> None:
    texts = {llm.generate(PROMPTS[:1], [seed], SETTINGS)[0].text for seed in range(4)}
    assert len(texts) > 1


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_lm_eval_default_cuda_device_falls_back_to_cpu_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dep_eval.engine.loading import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="dep_eval"):
        assert resolve_device("cuda:0").type == "cpu"  # lm-eval's default, not a user request
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "CUDA is not available" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dep_eval"):
        assert resolve_device("cuda").type == "cpu"  # the user's own choice: warn
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


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


@pytest.mark.slow
def test_batched_prefill_gives_the_texts_of_the_row_by_row_prefill(
    llm: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU route (left-padded groups) on the CPU: the same greedy texts, with one group
    per batch and with groups small enough that the batch's cache is assembled from three."""
    greedy = GenerationSettings(max_new_tokens=12, do_sample=False)
    seeds = [0] * len(PROMPTS)
    assert llm.prefill == "rows"  # the CPU's default
    rows = [g.text for g in llm.generate(PROMPTS, seeds, greedy, batch_size=4)]
    lengths = sorted((len(llm.tokenize(p)) for p in PROMPTS), reverse=True)
    monkeypatch.setattr(llm, "prefill", "batched")
    batched = [g.text for g in llm.generate(PROMPTS, seeds, greedy, batch_size=4)]
    small = 2 * lengths[1]  # the longest alone, the next two together, the last alone
    monkeypatch.setattr(hf_module, "PREFILL_TOKENS", small)
    assert len(_prefill_groups(lengths, small)) == 3
    grouped = [g.text for g in llm.generate(PROMPTS, seeds, greedy, batch_size=4)]
    assert rows == batched == grouped
    assert len(set(rows)) >= 3  # the prompts really produced different texts


def test_prefill_groups_stay_within_their_token_budget() -> None:
    assert _prefill_groups([10, 8, 8, 3, 3, 3], 24) == [[0, 1], [2, 3, 4], [5]]
    assert _prefill_groups([50, 4], 24) == [[0], [1]]  # a longer row is a group alone
    with pytest.raises(ValueError, match="prefill='padded'"):
        HFEngine(prefill="padded")  # refused before anything loads


def test_soft_vectors_take_the_tables_dtype(llm: HFEngine) -> None:
    """Vectors built in another dtype (or, on a GPU, on the CPU: tests/test_cuda.py) are
    converted, not refused."""
    ids = llm.add_placeholder_tokens(["<|test_e|>"])
    token_ids = torch.tensor([llm.tokenize(chat("One <|test_e|> slot."))])
    vector = torch.randn(1, llm.hidden_size, dtype=torch.float64)
    embeds = llm.tokens.embed(token_ids, [vector])
    assert embeds.dtype == llm.tokens.dtype
    slot = token_ids[0].tolist().index(ids[0])
    assert torch.equal(embeds[0, slot], vector[0].to(llm.tokens.dtype))


def test_one_truncation_rule_keeps_the_end_of_a_prompt(caplog: pytest.LogCaptureFixture) -> None:
    assert truncate_prompt([1, 2, 3], max_length=10, new_tokens=7) == [1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="dep_eval"):
        assert truncate_prompt([1, 2, 3, 4, 5], max_length=10, new_tokens=7) == [3, 4, 5]
    assert "keeping its last 3" in caplog.text
    with pytest.raises(ValueError, match="max_length=10 leaves no room .* 10 new tokens"):
        truncate_prompt([1], max_length=10, new_tokens=10)


def test_the_engine_cuts_a_long_prompt_by_that_rule(
    llm: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    greedy = GenerationSettings(max_new_tokens=4, do_sample=False)
    full = len(llm.tokenize(PROMPTS[1]))
    monkeypatch.setattr(llm, "max_length", full)  # room for full - 4 prompt tokens
    (cut,) = llm.generate(PROMPTS[1:2], [0], greedy)
    assert cut.prompt_tokens == full - 4 and cut.generated_tokens == 4
    monkeypatch.setattr(llm, "max_length", 4)
    with pytest.raises(ValueError, match="max_length=4 leaves no room"):
        llm.generate(PROMPTS[1:2], [0], greedy)


class _PlainEngine(Engine):
    """The interface alone: what an engine that declares nothing more gets by default."""

    name = "plain"

    def generate(self, *args: object, **kwargs: object) -> list:
        raise NotImplementedError


def test_the_interface_declares_capabilities_and_defaults(llm: HFEngine) -> None:
    assert HFEngine.per_prompt_adapters and HFEngine.trainable
    assert isinstance(llm, TrainableEngine) and require_trainable(llm, "training") is llm
    plain = _PlainEngine()
    assert not plain.per_prompt_adapters and not plain.trainable
    assert plain.auto_batch_size(1000, 256, rows=100) == DEFAULT_BATCH_SIZE
    plain.close()  # nothing to free: no error
    with pytest.raises(ValueError, match="OPPU: _PlainEngine cannot be trained through"):
        require_trainable(plain, "OPPU")

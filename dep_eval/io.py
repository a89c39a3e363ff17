"""Writing files so that a crash never leaves half of one, and JSONL in and out.

Every file dep-eval writes for later runs to read (checkpoints, caches, logs, tables) goes
through ``atomic_path`` / ``atomic_write`` / ``atomic_folder``: the new content is written
beside the target and renamed over it, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonlines

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; it replaces ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temp:
        if isinstance(data, str):
            temp.write_text(data, encoding="utf-8")
        else:
            temp.write_bytes(data)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty staging folder that replaces ``folder`` (and all it held) if the block succeeds.

    A folder cannot be swapped in one step: the old one is renamed aside first, then the new
    one into place, then the old one is deleted, so ``folder`` is at every moment either the
    complete old folder, the complete new one, or (for an instant) absent.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        yield staging
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Replace ``path`` with one JSON object per line, atomically."""
    with atomic_path(path) as temp, jsonlines.open(temp, mode="w") as writer:
        writer.write_all(rows)


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Append rows and flush them to disk; a torn last line is ended first, so it stays
    one bad line instead of swallowing the first appended row."""
    path = Path(path)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"
    else:
        torn = False
    with path.open("ab") as handle:
        if torn:
            logger.warning("%s: torn last line ended before appending", path)
            handle.write(b"\n")
        with jsonlines.Writer(handle) as writer:
            writer.write_all(rows)
        handle.flush()
        os.fsync(handle.fileno())

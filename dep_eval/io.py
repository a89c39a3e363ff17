"""Writing files so that a crash never leaves half of one, and JSONL in and out.

Every file dep-eval writes for later runs to read (checkpoints, caches, logs, tables) goes
through ``atomic_path`` / ``atomic_write`` / ``atomic_folder``: the new content is written
beside the target and renamed over it, so a reader sees the old file or the new one. What
is written gets the modes a plain ``open``/``mkdir`` would give under the umask (a shared
cache or checkpoint stays readable to colleagues), not the 0600/0700 of ``tempfile``.

Staging names carry their writer (``.<name>.tmp-<pid>@<host>-<random>``), so that a later
run can tell the debris of a killed writer (its pid gone on this host) from the work of a
live one and remove it (``remove_abandoned``), and a folder whose save was killed between
its two renames is put back from its complete copy (``recover_folder``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonlines

logger = logging.getLogger(__name__)

# A staging name of another host (or of a dep-eval that did not tag them) is taken as
# abandoned after this long without change: its pid cannot be checked from here.
FOREIGN_STALE_SECONDS = 3600.0
# ``.new`` and ``.old`` copies exist only for the instant between two renames.
RENAME_STALE_SECONDS = 60.0
_TAGGED = re.compile(r"^(\d+)@(.+)-[^-]+$")


def umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path: Path, *, folder: bool) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would have: 0666/0777 less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def plain_modes(tree: Path) -> None:
    """``plain_mode`` for ``tree`` and everything in it (safetensors writes its files 0600;
    an executable keeps its x bits)."""
    mask = umask()
    for root, _, files in os.walk(tree):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, (0o666 | executable) & ~mask)


def _tag() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def staging_folder(parent: Path, name: str, kind: str = "tmp") -> Path:
    """A new empty hidden folder ``parent/.<name>.<kind>-<pid>@<host>-<random>``."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{kind}-{_tag()}-"))
    plain_mode(staging, folder=True)
    return staging


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _age(path: Path) -> float:
    info = path.lstat()  # a rename updates ctime, not mtime
    return time.time() - max(info.st_mtime, info.st_ctime)


def is_abandoned(
    path: Path, marker: str, foreign_after: float, untagged_after: float | None = None
) -> bool:
    """Whether the staging entry ``path`` (``.<name><marker><pid>@<host>-<random>``) was
    left by a writer that is gone: its pid is dead on this host; another host's after
    ``foreign_after`` seconds without change; an untagged one (an older dep-eval's) after
    ``untagged_after`` (default: ``foreign_after``)."""
    match = _TAGGED.match(path.name.split(marker, 1)[-1])
    if match and match.group(2) == socket.gethostname():
        pid = int(match.group(1))
        return pid != os.getpid() and not _pid_alive(pid)
    limit = foreign_after if match or untagged_after is None else untagged_after
    try:
        return _age(path) > limit
    except FileNotFoundError:
        return False


def _siblings(folder: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-*`` beside ``folder``, newest first."""
    found = []
    for path in folder.parent.glob(f".{glob_escape(folder.name)}.{kind}-*"):
        with contextlib.suppress(FileNotFoundError):
            found.append((path.lstat().st_ctime, path))
    return [path for _, path in sorted(found, reverse=True)]


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _remove(path: Path) -> None:
    """Best effort: debris in a folder this process may not write (a shared install) stays."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def recover_folder(
    folder: str | os.PathLike[str], is_complete: Callable[[Path], bool] | None = None
) -> bool:
    """Put ``folder`` back when a save was killed between ``atomic_folder``'s two renames
    (the folder gone, its new and old copies hidden beside it); True if it did.

    The new copy wins (``.new-*``: complete by construction; or, for writers that did not
    mark it, a ``.tmp-*`` that ``is_complete`` accepts), else the old one (``.old-*``,
    the folder as it was). Copies of writers that are still alive are left alone. Any other
    abandoned copy beside the folder is removed afterwards, with a warning.
    """
    folder = Path(folder)
    recovered = False
    if not folder.exists() and folder.parent.is_dir():
        # a copy is the whole folder from the moment it is renamed: untagged ones (an older
        # dep-eval's) are taken at once, since no writer stays between two renames
        def gone(path: Path, kind: str) -> bool:
            return is_abandoned(path, f".{kind}-", RENAME_STALE_SECONDS, 0.0)

        candidates = [p for p in _siblings(folder, "new") if gone(p, "new")]
        if is_complete is not None:
            candidates += [p for p in _siblings(folder, "tmp") if gone(p, "tmp") and is_complete(p)]
        candidates += [p for p in _siblings(folder, "old") if gone(p, "old")]
        for candidate in candidates:
            try:
                os.rename(candidate, folder)
            except OSError:  # another process recovered it first, or it went away
                continue
            logger.warning(
                "%s was missing: a save was interrupted between its two renames; recovered "
                "the complete copy %s",
                folder,
                candidate.name,
            )
            recovered = True
            break
    # with the folder gone and no copy taken, a renamed copy is all there is: keep those
    remove_abandoned(folder, ("tmp", "new", "old") if folder.exists() else ("tmp",))
    return recovered


def remove_abandoned(folder: Path, kinds: Iterable[str] = ("tmp", "new", "old")) -> None:
    """Delete the staging copies beside ``folder`` whose writers are gone (see
    ``is_abandoned``), saying which."""
    for kind in kinds:
        # a staging folder may be written for minutes; a renamed copy lives for an instant
        if kind == "tmp":
            limits = (FOREIGN_STALE_SECONDS, FOREIGN_STALE_SECONDS)
        else:
            limits = (RENAME_STALE_SECONDS, 0.0)
        for path in _siblings(folder, kind):
            if is_abandoned(path, f".{kind}-", *limits):
                logger.warning("removing %s, left by an interrupted save of %s", path, folder)
                _remove(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; it replaces ``path`` if the block succeeds.

    The result keeps the mode of the file it replaces, else gets the umask's usual mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        try:
            os.chmod(temp, stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            plain_mode(Path(temp), folder=False)
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

    A folder cannot be swapped in one step. The finished staging folder is first renamed to
    ``.<name>.new-*`` (complete from then on), the old folder aside to ``.<name>.old-*``, the
    new one into place, and the old one deleted; so ``folder`` is at every moment the
    complete old folder, the complete new one, or (for an instant) absent with both copies
    beside it, from which ``recover_folder`` puts it back after a crash.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    staging = staging_folder(folder.parent, folder.name)
    try:
        yield staging
        plain_modes(staging)
        new = folder.parent / f".{folder.name}.new-{_tag()}-{uuid.uuid4().hex[:8]}"
        os.replace(staging, new)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{_tag()}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            os.replace(new, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(new, folder)
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

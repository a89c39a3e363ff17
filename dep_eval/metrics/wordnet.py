"""WordNet 3.0 for nltk's METEOR, without ``nltk.download``.

METEOR matches words through WordNet synonyms, so a METEOR computed without WordNet is a
different metric. ``nltk.download`` needs nltk's data server, which offline machines cannot
reach. Order of preference:

1. nltk already finds a ``wordnet`` corpus (a user's ``nltk.download("wordnet")``, or an
   earlier run of this module): use it.
2. Debian/Ubuntu's ``wordnet-base`` + ``wordnet-sense-index`` packages are installed
   (``/usr/share/wordnet``): copy their files into ``<root>/corpora/wordnet/`` and add
   ``<root>`` to ``nltk.data.path``. The files are COPIED, not linked: nltk 3.10 refuses
   data paths that resolve outside its data folders. Debian ships no ``lexnames`` file, which
   nltk's reader needs, so the standard WordNet 3.0 lexicographer-file list is written too.
   The copy is built in a temporary folder and renamed into place, so concurrent processes
   never see a half-written corpus.
3. Otherwise raise ``WordNetUnavailableError`` saying exactly what to install.

``<root>`` is ``$DEP_EVAL_NLTK_DATA`` when set, else ``nltk_data`` in dep-eval's one cache
root, ``dep_eval.cache.cache_dir()`` (``$DEP_EVAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/dep-eval``, else ``~/.cache/dep-eval``): a cache of this package, not the
user's own ``~/nltk_data``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

from dep_eval.cache import CACHE_ENV, cache_dir
from dep_eval.io import plain_modes

logger = logging.getLogger(__name__)

SYSTEM_WORDNET = Path("/usr/share/wordnet")
WORDNET_VERSION = "3.0"
ROOT_ENV = "DEP_EVAL_NLTK_DATA"

# Files nltk's WordNetCorpusReader opens (its ``_FILES``), minus ``lexnames`` (generated).
# ``index.sense`` comes from ``wordnet-sense-index``, the rest from ``wordnet-base``.
REQUIRED_FILES = (
    "cntlist.rev",
    "index.sense",
    *(f"index.{pos}" for pos in ("adj", "adv", "noun", "verb")),
    *(f"data.{pos}" for pos in ("adj", "adv", "noun", "verb")),
    *(f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")),
)
# Copied when present; nltk does not need them, but they belong to the corpus.
OPTIONAL_FILES = ("cntlist", "frames.vrb", "sentidx.vrb", "sents.vrb")

# The WordNet 3.0 lexicographer files (``lexnames(5WN)``): number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb). The line number is the ``lex_filenum`` field of
# every synset in ``data.*``, so the order is fixed by the data files.
_LEXNAMES = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)

INSTALL_HINT = (
    "METEOR needs WordNet 3.0 and nltk cannot find it. Either run "
    "`python -m nltk.downloader wordnet` (needs internet), or on Debian/Ubuntu "
    "`apt-get install wordnet-base wordnet-sense-index` (files in /usr/share/wordnet), "
    "which dep-eval copies into its nltk data cache by itself."
)


class WordNetUnavailableError(RuntimeError):
    """WordNet 3.0 can be neither found nor provisioned."""


def lexnames_text() -> str:
    """The ``lexnames`` file: one ``NN<TAB>name<TAB>category`` line per lexicographer file."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(_LEXNAMES))


def data_root() -> Path:
    """The nltk data folder this package provisions into (see the module docstring)."""
    override = os.environ.get(ROOT_ENV)
    if override:
        return Path(override).expanduser()
    return cache_dir() / "nltk_data"


def _nltk_finds_wordnet() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return False
    return True


def provision_from_system(root: Path, source: Path = SYSTEM_WORDNET) -> Path:
    """Copy the system WordNet into ``root/corpora/wordnet`` (atomically); return that folder.

    Raises ``WordNetUnavailableError`` when ``source`` lacks a required file.
    """
    target = root / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return target
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetUnavailableError(f"{source} lacks {', '.join(missing)}. {INSTALL_HINT}")
    names = [name for name in REQUIRED_FILES + OPTIONAL_FILES if (source / name).is_file()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_room(target.parent, sum((source / name).stat().st_size for name in names))
        _copy(source, names, target)
    except OSError as error:
        raise WordNetUnavailableError(
            f"cannot copy WordNet into {target.parent} ({error.strerror or error}); free "
            f"space there or make it writable, or point {_root_variable()} at another folder"
        ) from error
    logger.info("Provisioned WordNet from %s into %s", source, target)
    return target


def _copy(source: Path, names: list[str], target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in names:
            shutil.copyfile(source / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        plain_modes(staging)  # mkdtemp's 0700: a shared cache is read by all
        try:
            os.rename(staging, target)
        except OSError:
            # Another process won the race (target exists and is not empty): use its copy.
            if not (target / "lexnames").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_room(folder: Path, needed: int) -> None:
    """Fail before copying, not half-way: a copy cut short by a full disk leaves nothing
    usable and its error names no folder."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"WordNet needs {needed / 2**20:.1f} MB, {free / 2**20:.1f} MB free",
        )


def _root_variable() -> str:
    return ROOT_ENV if os.environ.get(ROOT_ENV) else CACHE_ENV


@functools.lru_cache(maxsize=1)
def ensure_wordnet() -> str:
    """Make WordNet 3.0 loadable by ``nltk.corpus.wordnet``; return its version.

    Cached: the check and any provisioning run once per process.
    """
    import nltk

    if not _nltk_finds_wordnet():
        root = data_root()
        if not (root / "corpora" / "wordnet" / "lexnames").is_file():
            if not SYSTEM_WORDNET.is_dir():
                raise WordNetUnavailableError(INSTALL_HINT)
            provision_from_system(root)
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    version = wordnet.get_version()
    if version != WORDNET_VERSION:
        # METEOR's synonym matches (and so the paper's numbers) depend on the WordNet version.
        raise WordNetUnavailableError(
            f"nltk loads WordNet {version!r}, METEOR here needs {WORDNET_VERSION}. {INSTALL_HINT}"
        )
    return version

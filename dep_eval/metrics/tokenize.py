"""Word tokenization for METEOR, as close to the reference evaluation as works offline.

The reference evaluation (HF ``evaluate``'s ``meteor``) tokenizes both texts with nltk's
``word_tokenize``: Punkt sentence splitting with the pretrained English model (nltk data
``punkt_tab``), then nltk's improved Treebank word tokenizer on each sentence. That data is
fetched with ``nltk.download``, which offline machines cannot reach.

- When the English Punkt model IS installed, ``word_tokenize`` itself is used (identical to
  the reference).
- Otherwise the same pipeline runs with an *untrained* ``PunktSentenceTokenizer`` (Punkt's
  algorithm with empty learned parameters: no abbreviation list, so e.g. "Mr." may end a
  sentence). Sentence splitting matters because the Treebank tokenizer only splits off a
  sentence's final period: without it "great. I" would give the token "great.". The
  remaining difference to the reference is confined to abbreviations and affects
  predictions and references alike, so METEOR moves by far less than a paper's reported
  precision.

ROUGE's tokenizer (``RougeTokenizer``, below) is rouge-score's default one made to see the
scripts it drops: identical tokens on English, credit for Chinese, Arabic, emoji.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Callable

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Callable[[str], list[str]]:
    from nltk.tokenize import NLTKWordTokenizer, punkt_model_available, word_tokenize
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    if punkt_model_available("english"):
        logger.info("METEOR tokenization: nltk word_tokenize with the English Punkt model")
        return word_tokenize
    logger.info(
        "METEOR tokenization: nltk's English Punkt model is not installed; using untrained "
        "Punkt sentence splitting + nltk's Treebank word tokenizer (see dep_eval.metrics."
        "tokenize)"
    )
    sentences = PunktSentenceTokenizer()
    words = NLTKWordTokenizer()

    def tokenize(text: str) -> list[str]:
        return [token for sent in sentences.tokenize(text) for token in words.tokenize(sent)]

    return tokenize


def word_tokens(text: str) -> list[str]:
    """Tokens of ``text`` the way the reference METEOR sees them (case is kept)."""
    return _tokenizer()(text)


# --------------------------------------------------------------------------- ROUGE

# Scripts written without spaces between words: each character is one token, as ROUGE
# implementations for Chinese and Japanese do (a whole sentence would otherwise be one word).
_CHARACTER_SCRIPTS = (
    "CJK UNIFIED IDEOGRAPH",
    "CJK COMPATIBILITY IDEOGRAPH",
    "HIRAGANA",
    "KATAKANA",
    "HALFWIDTH KATAKANA",
    "THAI",
    "LAO",
    "KHMER",
    "MYANMAR",
    "TIBETAN",
)


@functools.lru_cache(maxsize=4096)
def _kind(char: str) -> str:
    """How the ROUGE tokenizer reads one character (lower-cased already):
    ``word`` (part of a word of a non-Latin script), ``mark`` (a combining mark: part of the
    word before it if that word is non-Latin), ``char`` (a token by itself), ``emoji``, or
    ``sep`` (a separator, as rouge-score treats every non-ASCII character); ``ascii`` for
    ``[a-z0-9]``, rouge-score's word characters."""
    if char.isascii():
        return "ascii" if char.isalnum() else "sep"
    category = unicodedata.category(char)
    name = unicodedata.name(char, "")
    if category[0] in "LN":
        if name.startswith(("LATIN", "FULLWIDTH LATIN")):
            return "sep"  # rouge-score drops them: kept so, English scores stay identical
        return "char" if name.startswith(_CHARACTER_SCRIPTS) else "word"
    if category[0] == "M":
        return "mark"
    if category == "So":
        return "emoji"
    return "sep"


class RougeTokenizer:
    """rouge-score's default tokenizer, extended to the scripts it drops.

    rouge-score lower-cases, keeps runs of ``[a-z0-9]`` and drops every other character, so a
    perfect copy of a Chinese, Arabic or emoji text scores 0. Here:

    - ASCII and Latin-script text gives exactly rouge-score's tokens (a Latin letter with a
      diacritic, ``é``, is still a separator, as there): every English score is unchanged;
    - words of other scripts (Arabic, Cyrillic, Greek, Hebrew, Devanagari, Hangul, ...) are
      tokens: runs of their letters, digits and combining marks;
    - Chinese, Japanese, Thai, Lao, Khmer, Myanmar and Tibetan characters are one token each;
    - emoji (Unicode category So) are tokens only in a text with no word at all: an English
      review with a heart keeps today's score, an emoji-only text gets credit.
    """

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        emoji: list[str] = []
        word: list[str] = []
        word_kind = ""  # "ascii", "word" or "" (no word under way)

        def end_word() -> None:
            nonlocal word_kind
            if word:
                tokens.append("".join(word))
                word.clear()
            word_kind = ""

        for char in text.lower():
            kind = _kind(char)
            if kind == "mark" and word_kind == "word":
                word.append(char)
                continue
            if kind in ("ascii", "word"):
                if word_kind != kind:
                    end_word()
                word.append(char)
                word_kind = kind
                continue
            end_word()
            if kind == "char":
                tokens.append(char)
            elif kind == "emoji":
                emoji.append(char)
        end_word()
        return tokens or emoji

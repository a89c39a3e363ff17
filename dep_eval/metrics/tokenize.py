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
"""

from __future__ import annotations

import functools
import logging
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

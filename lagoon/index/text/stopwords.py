"""Stopword lists for ``remove_stopwords``: one short, standard list per language.

Role: give the analyzer the words ``remove_stopwords: true`` drops. Search engines drop only the
few function words that carry no meaning (Lucene's English list has 33 words, Snowball's lists a
few hundred); a long list such as stopwords-iso's 1,298 English words would make ordinary words
(``hello``, ``world``, ``information``, ``new``) unsearchable.

Sources, by preference (each a maintained package pinned in ``uv.lock``):

- ``bm25s.stopwords``: Lucene's English list (33 words) and the Snowball lists of danish, dutch,
  french, german, italian, norwegian, portuguese, russian, spanish, swedish and turkish;
- ``stop-words``: arabic, finnish, hungarian and romanian (Snowball publishes no arabic or
  romanian list; bm25s has none of these four);
- ``stopwordsiso``: greek (the ``stop-words`` greek list is Ancient Greek);
- tamil: no list, so ``remove_stopwords`` keeps every Tamil word.

``STOPWORDS_VERSION`` names this choice of lists. Postings persisted by an index builder record it
(``lagoon/segment/build.py``); a reader whose version differs re-analyses the text, exactly as it
does when the ``full_text_search`` options change. Pure: no I/O beyond importing the packages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Final

STOPWORDS_VERSION: Final = 2  # 1: stopwords-iso for every language; 2: the short lists below

# turbopuffer language name -> (package, list name within it)
_SOURCES: Final[Mapping[str, tuple[str, str]]] = {
    "english": ("bm25s", "STOPWORDS_EN"),
    "danish": ("bm25s", "STOPWORDS_DANISH"),
    "dutch": ("bm25s", "STOPWORDS_DUTCH"),
    "french": ("bm25s", "STOPWORDS_FRENCH"),
    "german": ("bm25s", "STOPWORDS_GERMAN"),
    "italian": ("bm25s", "STOPWORDS_ITALIAN"),
    "norwegian": ("bm25s", "STOPWORDS_NORWEGIAN"),
    "portuguese": ("bm25s", "STOPWORDS_PORTUGUESE"),
    "russian": ("bm25s", "STOPWORDS_RUSSIAN"),
    "spanish": ("bm25s", "STOPWORDS_SPANISH"),
    "swedish": ("bm25s", "STOPWORDS_SWEDISH"),
    "turkish": ("bm25s", "STOPWORDS_TURKISH"),
    "arabic": ("stop-words", "arabic"),
    "finnish": ("stop-words", "finnish"),
    "hungarian": ("stop-words", "hungarian"),
    "romanian": ("stop-words", "romanian"),
    "greek": ("stopwordsiso", "el"),
}


@cache
def stopwords(language: str) -> frozenset[str]:
    """The raw (not normalised) stopwords of a turbopuffer language name; empty when it has none."""
    source = _SOURCES.get(language)
    if source is None:
        return frozenset()
    package, name = source
    if package == "bm25s":
        import bm25s.stopwords

        words: Iterable[str] = getattr(bm25s.stopwords, name)
    elif package == "stop-words":
        from stop_words import get_stop_words

        words = get_stop_words(name, cache=False)
    else:
        import stopwordsiso

        words = stopwordsiso.stopwords(name)
    return frozenset(str(w) for w in words)

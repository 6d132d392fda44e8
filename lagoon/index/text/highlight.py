"""Highlighting primitives: where the tokens, sentences and paragraphs of a text are.

Role: the pure half of the ``Highlight`` computed attribute (``lagoon/query/highlight.py`` scores
the fragments). Offsets are Python string indices (code points) into the original text; the
caller converts them to the unit the client asked for (``offset_in``).

- ``token_spans``: every analysed token of a text with its (start, end) in the original text and
  its analysed term (normalised, stemmed), from the attribute's own ``Analyzer``, so a span's term
  equals the term BM25 indexes. Stopwords and over-long tokens have no span.
- ``fragment_spans``: ``none`` (the whole text), ``paragraph`` (lines: text between line breaks),
  ``sentence`` (a paragraph split after ``.``, ``!``, ``?`` and their full-width forms, plus
  closing quotes and brackets, when whitespace or the end follows), ``word`` (the token spans).
  Surrounding whitespace is trimmed; empty fragments are dropped.

Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from lagoon.index.text.analyze import Analyzer

_LINE: Final = re.compile(r"[^\r\n\u2028\u2029\x0b\x0c\x85]+")
_SENTENCE_END: Final = re.compile(r"[.!?。！？‼⁇⁈⁉]+[\"'”’»)\]}]*(?=\s|$)")


def _is_word_char(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c).startswith("M")


def _is_ideograph(c: str) -> bool:
    return unicodedata.name(c, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def token_spans(text: str, analyzer: Analyzer) -> list[tuple[int, int, str]]:
    """(start, end, term) of each token of ``text`` under ``analyzer``, in text order."""
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        if not _is_word_char(text[i]):
            i += 1
            continue
        j = i
        while j < n and _is_word_char(text[j]):
            j += 1
        terms = analyzer.tokens(text[i:j])
        if len(terms) == 1:
            out.append((i, j, terms[0]))
        elif len(terms) > 1:  # ideographs split off (word_v2+): analyse the pieces one by one
            out.extend(_pieces(text, i, j, analyzer))
        i = j
    return out


def _pieces(text: str, start: int, end: int, analyzer: Analyzer) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    k = start
    while k < end:
        m = k + 1
        if not _is_ideograph(text[k]):
            while m < end and not _is_ideograph(text[m]):
                m += 1
        terms = analyzer.tokens(text[k:m])
        if len(terms) == 1:
            out.append((k, m, terms[0]))
        k = m
    return out


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def fragment_spans(text: str, fragment_by: str, tokens: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """(start, end) of each fragment of ``text`` (``tokens`` = ``token_spans(text, …)``)."""
    if fragment_by == "word":
        return [(s, e) for s, e, _ in tokens]
    if fragment_by == "none":
        whole = _trimmed(text, 0, len(text))
        return [whole] if whole else []
    out: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        if fragment_by == "paragraph":
            span = _trimmed(text, line.start(), line.end())
            if span:
                out.append(span)
            continue
        start = line.start()
        for end_mark in _SENTENCE_END.finditer(text, line.start(), line.end()):
            span = _trimmed(text, start, end_mark.end())
            if span:
                out.append(span)
            start = end_mark.end()
        span = _trimmed(text, start, line.end())
        if span:
            out.append(span)
    return out


def offset_in(text: str, index: int, unit: str) -> int:
    """A code-point index of ``text`` in ``unit``: ``codepoints``, ``utf-8`` bytes or ``utf-16``
    code units."""
    if unit == "codepoints":
        return index
    prefix = text[:index]
    if unit == "utf-8":
        return len(prefix.encode("utf-8"))
    return len(prefix.encode("utf-16-le")) // 2

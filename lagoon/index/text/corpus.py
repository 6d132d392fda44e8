"""A deterministic real-text corpus for full-text tests and benchmarks (not used at run time).

``corpus(n)`` returns ``n`` short documents (≤ 80 words, ≥ 40 characters) of real English text
found on every Debian/Python machine: about half are chunks of the triple-quoted strings
(docstrings, mostly) of the Python standard library, the rest chunks of Debian package changelog
entries (``/usr/share/doc/*/changelog*.gz``). If there are not enough of one kind, the other fills
in. Each document also has ``src`` (module or package), ``cat`` ("docstring" | "changelog") and
``year`` (2000..2025) for filter tests. The logic follows the shared benchmark generator but reads
sources lazily (in a seeded order, stopping once it has enough), so 10,000 documents take about a
second. Output is deterministic for a given machine image and seed.

``sample_queries`` draws 2–4 content words from random documents, as the benchmarks do.
"""

from __future__ import annotations

import glob
import gzip
import os
import random
import re
import sysconfig
from collections.abc import Iterator
from typing import TypedDict

_TRIPLE_QUOTED = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)
_CHANGELOG_ENTRY = re.compile(r"\n(?=\S+ \([^)]*\) )")
_WORD = re.compile(r"[a-z]{3,}")
_CHUNK_WORDS = 80
_MIN_CHARS = 40


class CorpusDoc(TypedDict):
    id: int
    text: str
    src: str
    cat: str
    year: int


def _chunks(text: str) -> list[str]:
    words = text.split()
    out = []
    for i in range(0, len(words), _CHUNK_WORDS):
        chunk = " ".join(words[i : i + _CHUNK_WORDS])
        if len(chunk) >= _MIN_CHARS:
            out.append(chunk)
    return out


def _docstring_chunks(rnd: random.Random) -> Iterator[tuple[str, str]]:
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d != "site-packages" and not d.startswith("test"))
        paths += [
            os.path.join(root, f) for f in sorted(files) if f.endswith(".py") and not f.startswith("test")
        ]
    rnd.shuffle(paths)
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                source = f.read()
        except OSError:
            continue
        rel = os.path.relpath(path, stdlib)
        for m in _TRIPLE_QUOTED.finditer(source):
            for chunk in _chunks(m.group(1) or m.group(2) or ""):
                yield chunk, rel


def _changelog_chunks(rnd: random.Random) -> Iterator[tuple[str, str]]:
    paths = sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))
    rnd.shuffle(paths)
    for path in paths:
        try:
            with gzip.open(path, "rt", errors="replace") as f:
                text = f.read()
        except (OSError, EOFError):
            continue
        pkg = path.split("/")[4]
        for entry in _CHANGELOG_ENTRY.split(text):
            body = "\n".join(line for line in entry.splitlines()[1:] if not line.startswith(" -- "))
            for chunk in _chunks(body):
                yield chunk, pkg


def _take(it: Iterator[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    while len(out) < n:
        item = next(it, None)
        if item is None:
            break
        out.append(item)
    return out


def corpus(n: int, seed: int = 0) -> list[CorpusDoc]:
    """``n`` short real-text documents (fewer only if the machine has too little text)."""
    rnd = random.Random(seed)
    doc_it = _docstring_chunks(random.Random(rnd.random()))
    log_it = _changelog_chunks(random.Random(rnd.random()))
    docstrings = _take(doc_it, n // 2)
    changelogs = _take(log_it, n - len(docstrings))
    docstrings += _take(doc_it, n - len(docstrings) - len(changelogs))
    picked = [(t, s, "docstring") for t, s in docstrings] + [(t, s, "changelog") for t, s in changelogs]
    rnd.shuffle(picked)
    return [
        CorpusDoc(id=i, text=text, src=src, cat=cat, year=2000 + (i * 7919) % 26)
        for i, (text, src, cat) in enumerate(picked)
    ]


def sample_queries(
    texts: list[str], nq: int, seed: int = 7, min_terms: int = 2, max_terms: int = 4
) -> list[str]:
    """``nq`` queries of ``min_terms``..``max_terms`` distinct words (≥ 3 letters) of one random document."""
    rnd = random.Random(seed)
    out: list[str] = []
    while len(out) < nq and texts:
        words = sorted(set(_WORD.findall(rnd.choice(texts).lower())))
        if len(words) < min_terms:
            continue
        out.append(" ".join(rnd.sample(words, rnd.randint(min_terms, min(max_terms, len(words))))))
    return out

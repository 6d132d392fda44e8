"""Text analysis for full-text search: the ``full_text_search`` options and the token pipeline.

Role: turn attribute values (strings, or token arrays for ``pre_tokenized_array``) and query text
into the terms that the postings index stores and BM25 scores. Documents and queries go through the
same ``Analyzer``, so a query term matches a document term exactly when both came from equal words.

Pipeline, in order (``docs/bm25.md`` is the normative description):

1. normalise: NFC for non-ASCII text; ``str.lower`` unless ``case_sensitive``; with ``ascii_folding``
   every character that has an ASCII equivalent is replaced by it (NFKD minus diacritics, plus a
   small table for letters such as ß, æ, ø) and stray combining diacritics are dropped;
2. split (word tokenizers only): a token is a maximal run of Unicode alphanumeric characters and
   combining marks; everything else separates tokens. ``word_v2``..``word_v4`` also make every
   ideographic character a token of its own; ``word_v0``/``word_v1`` keep ideographs inside runs.
   ``pre_tokenized_array`` skips splitting: each array element is one token;
3. drop tokens longer than ``max_token_length`` UTF-8 bytes (and empty ones);
4. drop stopwords (``remove_stopwords``; the short per-language lists of ``stopwords.py``,
   normalised like tokens);
5. stem (``stemming``; Snowball stemmers from PyStemmer, one per language and thread).

Invariants: ``tokenize_many(xs) == [tokens(x) for x in xs]``; analysis depends only on
``FtsConfig.analysis_key()`` (``k1``, ``b`` and ``k3`` never change tokens). The hot path
(``tokenize_many``) is ``str.lower`` + ``str.translate`` + ``str.split`` per document, with a
per-character table built lazily, and stemming of each distinct token once per batch.

Pure functions: no I/O, no asyncio, no global mutable state other than caches.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain, pairwise
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import Stemmer

from lagoon.errors import InternalError, InvalidRequest
from lagoon.index.text.stopwords import stopwords as language_stopwords
from lagoon.schema import LANGUAGES, PRE_TOKENIZED, FtsConfig, tokenizer_family

# ---------------------------------------------------------------------------------------------
# Per-character tables for str.translate, built lazily (a dict subclass filled on first sight).

_DIACRITIC_BLOCKS: Final = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)

# Ideographic characters (Unicode "Ideographic" property, by block; unassigned code points are
# not alphanumeric and so never reach this test).
_IDEOGRAPHIC_RANGES: Final = (
    (0x3006, 0x3007),
    (0x3021, 0x3029),
    (0x3038, 0x303A),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x16FE4, 0x16FE4),
    (0x17000, 0x18D7F),
    (0x1B170, 0x1B2FF),
    (0x20000, 0x3FFFF),
)

# Letters that NFKD does not decompose but that have a conventional ASCII spelling (after the
# Lucene ASCIIFoldingFilter); lowercase and uppercase.
_FOLD_SPECIAL: Final[Mapping[str, str]] = {
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ł": "l", "Ł": "L",
    "ı": "i", "ħ": "h", "Ħ": "H", "ŀ": "l", "Ŀ": "L", "ŧ": "t", "Ŧ": "T", "ĸ": "q", "ŋ": "n", "Ŋ": "N",
}  # fmt: skip


def _in_ranges(cp: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or unicodedata.category(c)[0] == "M"


def _ascii_fold_char(c: str, lower: bool) -> str | None:
    """The ASCII spelling of one character, or None if it has none."""
    folded = _FOLD_SPECIAL.get(c)
    if folded is None:
        decomposed = unicodedata.normalize("NFKD", c)
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    if not folded or not folded.isascii() or not folded.isalnum():
        return None
    return folded.lower() if lower else folded


def _check_unicode(token: str) -> None:
    try:
        token.encode()
    except UnicodeEncodeError:
        raise InvalidRequest("tokens must be valid Unicode (found a lone surrogate)") from None


class _CharTable(dict[int, int | str | None]):
    """Maps a code point to what ``str.translate`` should put in its place; filled lazily."""

    def __init__(self, split: bool, split_ideographs: bool, fold: bool, lower: bool) -> None:
        super().__init__()
        self._split = split
        self._split_ideographs = split_ideographs
        self._fold = fold
        self._lower = lower
        for cp in range(128):  # pre-fill ASCII: str.translate caches it on its fast path
            self.__missing__(cp)

    def __missing__(self, cp: int) -> int | str | None:
        value = self._compute(cp)
        self[cp] = value
        return value

    def _compute(self, cp: int) -> int | str | None:
        c = chr(cp)
        if not _is_word_char(c):
            return 32 if self._split else cp  # a separator (pre-tokenized tokens are not split)
        if self._fold and cp >= 128:
            if _in_ranges(cp, _DIACRITIC_BLOCKS):
                return None
            folded = _ascii_fold_char(c, self._lower)
            if folded is not None:
                return folded
        if self._split_ideographs and _in_ranges(cp, _IDEOGRAPHIC_RANGES):
            return f" {c} "
        return cp


@cache
def _char_table(split: bool, split_ideographs: bool, fold: bool, lower: bool) -> _CharTable:
    return _CharTable(split, split_ideographs, fold, lower)


_stemmers = threading.local()


def _stemmer(algorithm: str) -> Any:
    """PyStemmer objects must not be shared between threads: one per (thread, language)."""
    cache_: dict[str, Any] | None = getattr(_stemmers, "by_language", None)
    if cache_ is None:
        cache_ = {}
        _stemmers.by_language = cache_
    stemmer = cache_.get(algorithm)
    if stemmer is None:
        # no PyStemmer cache: callers stem each distinct word once per batch
        stemmer = cache_[algorithm] = Stemmer.Stemmer(algorithm, 0)
    return stemmer


@dataclass(frozen=True)
class AnalyzedQuery:
    """A query after analysis. ``terms`` keeps duplicates (they give the query-term frequency);
    ``prefixes`` is empty, or holds the spellings the last query token may be a prefix of."""

    terms: tuple[str, ...]
    prefixes: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.terms and not self.prefixes


@dataclass(frozen=True, eq=False)
class TokenBatch:
    """The analysed tokens of a batch of values, dictionary-encoded.

    Document i has the terms ``vocab[term_ids[j]]`` for ``offsets[i] <= j < offsets[i+1]``, in
    order. ``vocab`` holds distinct terms (in no particular order), each used at least once.
    """

    vocab: list[str]
    term_ids: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]

    @property
    def n_docs(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.term_ids.shape[0])

    def doc_lengths(self) -> npt.NDArray[np.int64]:
        return np.diff(self.offsets)

    def to_lists(self) -> list[list[str]]:
        objs = np.empty(len(self.vocab), dtype=object)
        objs[:] = self.vocab
        flat = objs[self.term_ids].tolist()
        bounds = self.offsets.tolist()
        return [flat[lo:hi] for lo, hi in pairwise(bounds)]

    @classmethod
    def from_lists(cls, token_lists: Sequence[Sequence[str]]) -> TokenBatch:
        """Encode already-analysed token lists (no analysis is applied)."""
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        offsets = np.zeros(len(token_lists) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        try:
            flat = pa.array(token_lists, type=pa.large_list(pa.large_string())).flatten()
        except (pa.ArrowException, UnicodeEncodeError):  # lone surrogates: the slow, exact way
            index: dict[str, int] = {}
            ids = np.fromiter(
                (index.setdefault(t, len(index)) for t in chain.from_iterable(token_lists)),
                dtype=np.int32,
                count=int(offsets[-1]),
            )
            return cls(list(index), ids, offsets)
        encoded = flat.dictionary_encode()
        return cls(encoded.dictionary.to_pylist(), _indices(encoded), offsets)


def _indices(encoded: pa.DictionaryArray) -> npt.NDArray[np.int32]:
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32)


_ARROW_CHUNK = 1 << 18  # documents per Arrow pass (bounds temporaries; int32 list offsets)


class Analyzer:
    """Applies one ``FtsConfig`` to documents and queries. Cheap to construct; thread-safe.

    Two implementations of one pipeline: a batch one for indexing (``analyze_many``: per-document
    ``str.translate`` then splitting and dictionary-encoding in Arrow, and every per-token step —
    length filter, stopwords, stemming — applied once per distinct token), and a plain-Python one
    for single values and queries (``tokens``, ``query``). Tests check they agree.
    """

    def __init__(self, config: FtsConfig | None = None) -> None:
        self.config = config = config or FtsConfig()
        self._pre_tokenized = config.tokenizer == PRE_TOKENIZED
        self._lower = not config.case_sensitive
        self._max_len = config.max_token_length
        self._split_table = _char_table(
            True,
            tokenizer_family(config.tokenizer) == "word_ideograph_split",
            config.ascii_folding,
            self._lower,
        )
        self._fold_table = _char_table(False, False, True, self._lower) if config.ascii_folding else None
        algorithm, _ = LANGUAGES[config.language]
        self._stem_algorithm = algorithm if config.stemming else None
        self._stopwords = self._normalised_stopwords(config.language) if config.remove_stopwords else None

    def _normalised_stopwords(self, language: str) -> frozenset[str]:
        out: set[str] = set()
        for word in language_stopwords(language):
            out.add(word)
            out.add(self._normalise_token(word))
        return frozenset(out)

    # --- the per-token steps, shared by both implementations ---------------------------------

    def _normalise_token(self, token: str) -> str:
        """Normalisation of a pre-tokenized token (word tokens are normalised before splitting)."""
        if not token.isascii():
            token = unicodedata.normalize("NFC", token)
        if self._lower:
            token = token.lower()
        if self._fold_table is not None and not token.isascii():
            token = token.translate(self._fold_table)
        return token

    def _keep_length(self, token: str) -> bool:
        return 0 < len(token) <= self._max_len and (token.isascii() or len(token.encode()) <= self._max_len)

    def _is_stopword(self, token: str) -> bool:
        stop = self._stopwords
        return stop is not None and (token in stop or (not self._lower and token.lower() in stop))

    def _stem_all(self, words: list[str]) -> list[str]:
        if self._stem_algorithm is None or not words:
            return words
        stems: list[str] = _stemmer(self._stem_algorithm).stemWords(words)
        return stems

    def _raw_to_terms(self, raw: Sequence[str]) -> list[str | None]:
        """Steps 3-5 (and normalisation for pre-tokenized input) for distinct raw tokens:
        the final term of each, or None if it is dropped."""
        out: list[str | None] = []
        for token in raw:
            t = self._normalise_token(token) if self._pre_tokenized else token
            out.append(None if not self._keep_length(t) or self._is_stopword(t) else t)
        if self._stem_algorithm is not None:
            where = [i for i, t in enumerate(out) if t is not None]
            stems = self._stem_all([t for t in out if t is not None])
            for i, stem in zip(where, stems, strict=True):
                out[i] = stem
        return out

    # --- splitting -------------------------------------------------------------------------

    def _prepare_text(self, text: str) -> str:
        """Step 1 and the character classification of step 2: separators become spaces."""
        if not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if self._lower:
            text = text.lower()
        return text.translate(self._split_table)

    def _raw_tokens(self, value: str | Sequence[str] | None) -> list[str]:
        """Steps 1-2 for one value, in plain Python."""
        if value is None:
            return []
        if self._pre_tokenized:
            return list(self._check_token_array(value, check_unicode=True))
        if not isinstance(value, str):
            value = " ".join(self._check_token_array(value))
        return self._prepare_text(value).split()

    @staticmethod
    def _check_token_array(value: str | Sequence[str], *, check_unicode: bool = False) -> Sequence[str]:
        if isinstance(value, str):
            raise InvalidRequest("an attribute with tokenizer pre_tokenized_array takes an array of strings")
        for token in value:
            if not isinstance(token, str):
                raise InvalidRequest(f"array elements must be strings; got {type(token).__name__}")
            if check_unicode and not token.isascii():
                _check_unicode(token)
        return value

    # --- documents -------------------------------------------------------------------------

    def tokens(self, value: str | Sequence[str] | None) -> list[str]:
        """The terms of one attribute value (None -> no terms). Plain Python; for single values."""
        raw = self._raw_tokens(value)
        distinct = list(dict.fromkeys(raw))
        mapping = dict(zip(distinct, self._raw_to_terms(distinct), strict=True))
        return [t for t in map(mapping.__getitem__, raw) if t is not None]

    def tokenize_many(self, values: Sequence[str | Sequence[str] | None]) -> list[list[str]]:
        """``[self.tokens(v) for v in values]``, computed in batch."""
        return self.analyze_many(values).to_lists()

    def analyze_many(self, values: Sequence[str | Sequence[str] | None]) -> TokenBatch:
        """The terms of many attribute values, dictionary-encoded: the indexing hot path.

        Word tokenizers take strings (a list of strings is analysed as its elements joined by a
        space); ``pre_tokenized_array`` takes lists of tokens. None gives no terms.
        """
        vocab: dict[str, int] = {}
        ids_parts: list[npt.NDArray[np.int32]] = []
        length_parts: list[npt.NDArray[np.int64]] = []
        for lo in range(0, max(len(values), 1), _ARROW_CHUNK):
            chunk = values[lo : lo + _ARROW_CHUNK]
            raw_vocab, raw_ids, raw_lengths = self._arrow_split(chunk)
            terms = self._raw_to_terms(raw_vocab)
            remap = np.fromiter(
                (-1 if t is None else vocab.setdefault(t, len(vocab)) for t in terms),
                dtype=np.int32,
                count=len(terms),
            )
            ids = remap[raw_ids]
            keep = ids >= 0
            if not keep.all():
                doc_of_token = np.repeat(np.arange(len(chunk), dtype=np.int64), raw_lengths)
                raw_lengths = np.bincount(doc_of_token[keep], minlength=len(chunk)).astype(np.int64)
                ids = ids[keep]
            ids_parts.append(ids)
            length_parts.append(raw_lengths)
        lengths = np.concatenate(length_parts) if length_parts else np.zeros(0, np.int64)
        offsets = np.zeros(len(values) + 1, np.int64)
        np.cumsum(lengths[: len(values)], out=offsets[1:])
        term_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
        return TokenBatch(list(vocab), term_ids.astype(np.int32, copy=False), offsets)

    def _arrow_split(
        self, values: Sequence[str | Sequence[str] | None]
    ) -> tuple[list[str], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """Steps 1-2 for a chunk: (distinct raw tokens, raw token ids, tokens per value)."""
        n = len(values)
        if self._pre_tokenized:
            arrays = [[] if v is None else self._check_token_array(v) for v in values]
            try:
                lists = pa.array(arrays, type=pa.large_list(pa.large_string()))
            except UnicodeEncodeError:
                for v in arrays:
                    self._check_token_array(v, check_unicode=True)
                raise
        else:
            texts = [
                ""
                if v is None
                else self._prepare_text(v if isinstance(v, str) else " ".join(self._check_token_array(v)))
                for v in values
            ]
            lists = pc.ascii_split_whitespace(pa.array(texts, type=pa.large_string()))
        lengths = np.asarray(lists.value_lengths().fill_null(0).to_numpy(), dtype=np.int64)
        encoded = lists.flatten().dictionary_encode()
        if lengths.shape[0] != n:  # pragma: no cover - defensive
            raise InternalError("token batch length mismatch")
        return encoded.dictionary.to_pylist(), _indices(encoded), lengths

    # --- queries ---------------------------------------------------------------------------

    def query(self, value: str | Sequence[str], *, last_as_prefix: bool = False) -> AnalyzedQuery:
        """Analyse query text (or a token array) exactly as documents are analysed.

        With ``last_as_prefix`` the last token (after normalisation and the length filter,
        before stopword removal and stemming: it is a literal prefix) is taken out of ``terms``
        and becomes the prefix; with stemming on, its stem is a second accepted spelling, since
        the index holds stems.
        """
        if isinstance(value, str) and self._pre_tokenized:
            raise InvalidRequest("a query on a pre_tokenized_array attribute takes an array of strings")
        raw = self._raw_tokens(value)
        if self._pre_tokenized:
            raw = [self._normalise_token(t) for t in raw]
        raw = [t for t in raw if self._keep_length(t)]
        prefixes: tuple[str, ...] = ()
        if last_as_prefix and raw:
            prefix = raw.pop()
            spellings = [prefix]
            stem = self._stem_all([prefix])[0]
            if stem and stem != prefix:
                spellings.append(stem)
            prefixes = tuple(spellings)
        terms = self._stem_all([t for t in raw if not self._is_stopword(t)])
        return AnalyzedQuery(tuple(terms), prefixes)

"""Tests of lagoon.index.text.analyze: the full_text_search options and the token pipeline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.errors import InvalidRequest
from lagoon.index.text import analyze
from lagoon.index.text.analyze import Analyzer, TokenBatch
from lagoon.schema import LANGUAGES, TOKENIZERS, FtsConfig

# --- FtsConfig -------------------------------------------------------------------------------


def test_defaults_and_round_trip() -> None:
    c = FtsConfig()
    assert c.to_json() == {
        "tokenizer": "word_v3",
        "language": "english",
        "stemming": False,
        "remove_stopwords": False,
        "case_sensitive": False,
        "ascii_folding": False,
        "max_token_length": 39,
        "k1": 1.2,
        "b": 0.75,
        "k3": 8.0,
    }
    assert FtsConfig.from_json(True) == c
    assert FtsConfig.from_json({}) == c
    assert FtsConfig.from_json(False) is None
    custom = FtsConfig.from_json(
        {"tokenizer": "word_v1", "language": "french", "stemming": True, "k1": 2, "b": 0}
    )
    assert custom is not None
    assert custom.k1 == 2.0 and isinstance(custom.k1, float)
    assert FtsConfig.from_json(custom.to_json()) == custom
    assert FtsConfig.from_json({"stemming": None}) == c  # null means default


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_every_tokenizer_accepted(tokenizer: str) -> None:
    config = FtsConfig.from_json({"tokenizer": tokenizer})
    assert config is not None and config.tokenizer == tokenizer


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_language_stems_and_has_stopword_handling(language: str) -> None:
    config = FtsConfig(language=language, stemming=True, remove_stopwords=True)
    Analyzer(config).tokens("some words")  # constructs the stemmer and the stopword list


@pytest.mark.parametrize(
    ("value", "option"),
    [
        ({"tokenizer": "word_v9"}, "tokenizer"),
        ({"language": "klingon"}, "language"),
        ({"language": "English"}, "language"),
        ({"stemming": 1}, "stemming"),
        ({"remove_stopwords": "yes"}, "remove_stopwords"),
        ({"case_sensitive": 0}, "case_sensitive"),
        ({"ascii_folding": []}, "ascii_folding"),
        ({"max_token_length": 0}, "max_token_length"),
        ({"max_token_length": 255}, "max_token_length"),
        ({"max_token_length": 10.5}, "max_token_length"),
        ({"max_token_length": True}, "max_token_length"),
        ({"k1": -0.1}, "k1"),
        ({"k1": math.inf}, "k1"),
        ({"k1": math.nan}, "k1"),
        ({"k1": "1.2"}, "k1"),
        ({"k1": True}, "k1"),
        ({"b": 1.5}, "b"),
        ({"b": -1}, "b"),
        ({"k3": -1}, "k3"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_options_name_the_option(value: dict[str, Any], option: str) -> None:
    with pytest.raises(InvalidRequest, match=f"'{option}' of attribute 'title'"):
        FtsConfig.from_json(value, attribute="title")
    if option != "bogus":
        with pytest.raises(InvalidRequest, match=f"'{option}'"):
            FtsConfig(**value)


def test_from_json_rejects_non_object() -> None:
    with pytest.raises(InvalidRequest, match="boolean or an object"):
        FtsConfig.from_json("yes")  # type: ignore[arg-type]


def test_analysis_key() -> None:
    base = FtsConfig()
    assert FtsConfig(k1=2.0, b=0.1, k3=0.0).analysis_key() == base.analysis_key()
    assert FtsConfig(tokenizer="word_v4").analysis_key() == base.analysis_key()
    assert FtsConfig(tokenizer="word_v0").analysis_key() == FtsConfig(tokenizer="word_v1").analysis_key()
    assert FtsConfig(tokenizer="word_v1").analysis_key() != base.analysis_key()
    assert FtsConfig(language="french").analysis_key() == base.analysis_key()  # language unused
    assert (
        FtsConfig(language="french", stemming=True).analysis_key() != FtsConfig(stemming=True).analysis_key()
    )
    assert FtsConfig(case_sensitive=True).analysis_key() != base.analysis_key()


# --- tokens ----------------------------------------------------------------------------------


def tokens(text: Any, **options: Any) -> list[str]:
    return Analyzer(FtsConfig(**options)).tokens(text)


def test_word_splitting() -> None:
    assert tokens("Hello, World! it's snake_case x-ray 3.14 C++ e-mail@host.org") == [
        "hello", "world", "it", "s", "snake", "case", "x", "ray", "3", "14", "c", "e", "mail", "host", "org",
    ]  # fmt: skip
    assert tokens("") == []
    assert tokens(None) == []
    assert tokens("   ...!!! ") == []
    assert tokens(["first value", "Second"]) == ["first", "value", "second"]  # []string attribute


def test_unicode_words_keep_combining_marks_and_are_nfc() -> None:
    assert tokens("naïve café") == ["naïve", "café"]
    assert tokens("cafe\u0301") == ["café"]  # decomposed input is composed (NFC)
    assert tokens("தமிழ் மொழி") == ["தமிழ்", "மொழி"]  # Tamil vowel signs stay inside the word
    assert tokens("Привет, мир") == ["привет", "мир"]
    assert tokens("emoji 🎉🎉 here ★") == ["emoji", "here"]


def test_ideographs_by_tokenizer_version() -> None:
    text = "東京abc中文 def"
    assert tokens(text, tokenizer="word_v3") == ["東", "京", "abc", "中", "文", "def"]
    assert tokens(text, tokenizer="word_v2") == tokens(text, tokenizer="word_v4") == tokens(text)
    assert tokens(text, tokenizer="word_v1") == ["東京abc中文", "def"]
    assert tokens(text, tokenizer="word_v0") == ["東京abc中文", "def"]
    assert tokens("ひらがな カタカナ") == ["ひらがな", "カタカナ"]  # kana are not ideographs


def test_case_sensitivity() -> None:
    assert tokens("Apple APPLE apple") == ["apple", "apple", "apple"]
    assert tokens("Apple APPLE apple", case_sensitive=True) == ["Apple", "APPLE", "apple"]


def test_ascii_folding() -> None:
    assert tokens("Naïve café Straße ŁÓDŹ Ærø ﬁne", ascii_folding=True) == [
        "naive", "cafe", "strasse", "lodz", "aero", "fine",
    ]  # fmt: skip
    assert tokens("Crème", ascii_folding=True, case_sensitive=True) == ["Creme"]
    assert tokens("cafe\u0301", ascii_folding=True) == ["cafe"]
    assert tokens("привет தமிழ்", ascii_folding=True) == ["привет", "தமிழ்"]  # no ASCII equivalent: kept
    assert tokens("naïve") == ["naïve"]  # off by default


def test_max_token_length_counts_utf8_bytes() -> None:
    assert tokens("a" * 39 + " " + "b" * 40 + " c") == ["a" * 39, "c"]
    assert tokens("é" * 19 + " " + "é" * 20) == ["é" * 19]  # 38 bytes kept, 40 bytes dropped
    assert tokens("abcd abcde", max_token_length=4) == ["abcd"]
    assert tokens("x" * 254, max_token_length=254) == ["x" * 254]


def test_stopwords() -> None:
    assert tokens("The cat and the hat", remove_stopwords=True) == ["cat", "hat"]
    assert tokens("The cat", remove_stopwords=True, case_sensitive=True) == ["cat"]
    assert tokens("été chat", language="french", remove_stopwords=True) == ["chat"]
    assert tokens("Été chat", language="french", remove_stopwords=True, ascii_folding=True) == ["chat"]
    assert tokens("The cat") == ["the", "cat"]  # off by default
    assert tokens("அது ஒரு", language="tamil", remove_stopwords=True) == ["அது", "ஒரு"]  # no Tamil list


def test_stemming() -> None:
    assert tokens("Running engines RAN", stemming=True) == ["run", "engin", "ran"]
    assert tokens("chevaux mangeaient", language="french", stemming=True) == ["cheval", "mang"]
    assert tokens("running the", stemming=True, remove_stopwords=True) == ["run"]
    assert tokens("running") == ["running"]


def test_pre_tokenized_array() -> None:
    def pre(value: Any, **options: Any) -> list[str]:
        return tokens(value, tokenizer="pre_tokenized_array", **options)

    assert pre(["New York", "SF", "", "a-b"]) == ["new york", "sf", "a-b"]  # not split; empty dropped
    assert pre(["New York"], case_sensitive=True) == ["New York"]
    assert pre(["Café"], ascii_folding=True) == ["cafe"]
    assert pre(["running", "the"], stemming=True, remove_stopwords=True) == ["run"]
    assert pre(["x" * 40, "y"]) == ["y"]
    assert pre(None) == []
    with pytest.raises(InvalidRequest, match="array of strings"):
        pre("a string")
    with pytest.raises(InvalidRequest, match="must be strings"):
        pre(["ok", 3])
    with pytest.raises(InvalidRequest, match="array of strings"):
        Analyzer(FtsConfig(tokenizer="pre_tokenized_array")).query("text")


def test_word_tokenizer_rejects_non_string_array_elements() -> None:
    with pytest.raises(InvalidRequest, match="must be strings"):
        tokens(["ok", None])


# --- queries ---------------------------------------------------------------------------------


def test_query_analysis() -> None:
    a = Analyzer(FtsConfig(stemming=True, remove_stopwords=True))
    q = a.query("The Running ENGINES running")
    assert q.terms == ("run", "engin", "run") and q.prefixes == ()
    q = a.query("running engi", last_as_prefix=True)
    assert q.terms == ("run",) and q.prefixes == ("engi",)
    q = a.query("engines", last_as_prefix=True)
    assert q.terms == () and q.prefixes == ("engines", "engin")  # literal prefix and its stem
    q = a.query("cat the", last_as_prefix=True)
    assert q.terms == ("cat",) and q.prefixes == ("the",)  # the prefix is not a stopword
    assert a.query("...").is_empty
    assert a.query("", last_as_prefix=True).is_empty
    assert Analyzer().query(["Two words", "more"]).terms == ("two", "words", "more")
    pre = Analyzer(FtsConfig(tokenizer="pre_tokenized_array"))
    assert pre.query(["New York", "LA"], last_as_prefix=True) == analyze.AnalyzedQuery(("new york",), ("la",))


# --- batch implementation == single-value implementation --------------------------------------

_ALPHABET = st.sampled_from(
    [
        *"abcxyzABC0129 _-.,'\t\n",
        "é",
        "\u0301",
        "ß",
        "Æ",
        "İ",
        "東",
        "京",
        "ひ",
        "த",
        "ி",
        "🎉",
        "ﬁ",
        "½",
        "\u00a0",
    ]
)
_TEXT = st.text(_ALPHABET, max_size=40)
_VALUE = st.one_of(_TEXT, st.none(), st.lists(_TEXT, max_size=3))
_CONFIG = st.builds(
    FtsConfig,
    tokenizer=st.sampled_from(["word_v1", "word_v3"]),
    stemming=st.booleans(),
    remove_stopwords=st.booleans(),
    case_sensitive=st.booleans(),
    ascii_folding=st.booleans(),
    max_token_length=st.integers(1, 8),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_CONFIG, values=st.lists(_VALUE, max_size=12))
def test_tokenize_many_equals_tokens(config: FtsConfig, values: list[Any]) -> None:
    a = Analyzer(config)
    expected = [a.tokens(v) for v in values]
    assert a.tokenize_many(values) == expected
    batch = a.analyze_many(values)
    assert batch.n_docs == len(values)
    assert len(set(batch.vocab)) == len(batch.vocab)
    assert batch.to_lists() == expected


@settings(max_examples=60, deadline=None)
@given(
    config=st.builds(FtsConfig, tokenizer=st.just("pre_tokenized_array"), stemming=st.booleans(),
                     case_sensitive=st.booleans(), ascii_folding=st.booleans(), remove_stopwords=st.booleans()),
    values=st.lists(st.one_of(st.none(), st.lists(_TEXT, max_size=4)), max_size=8),
)  # fmt: skip
def test_tokenize_many_equals_tokens_pre_tokenized(config: FtsConfig, values: list[Any]) -> None:
    a = Analyzer(config)
    assert a.tokenize_many(values) == [a.tokens(v) for v in values]


def test_batches_larger_than_one_arrow_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze, "_ARROW_CHUNK", 3)
    values = ["a b", None, "c a", "", "b b d", "e", "a"]
    a = Analyzer()
    batch = a.analyze_many(values)
    assert batch.to_lists() == [a.tokens(v) for v in values]
    assert a.analyze_many([]).to_lists() == []


def test_lone_surrogates_in_pre_tokenized_input() -> None:
    a = Analyzer(FtsConfig(tokenizer="pre_tokenized_array"))
    values = [["ok", "bad\ud800"], ["ok"]]
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        a.tokenize_many(values)
    with pytest.raises(InvalidRequest, match="lone surrogate"):
        a.tokens(values[0])
    assert tokens("bad\ud800text") == ["bad", "text"]  # a word tokenizer treats it as a separator


def test_token_batch_from_lists() -> None:
    lists = [["b", "a", "b"], [], ["c"]]
    batch = TokenBatch.from_lists(lists)
    assert batch.to_lists() == lists
    assert batch.doc_lengths().tolist() == [3, 0, 1]
    assert batch.term_ids.dtype == np.int32
    assert TokenBatch.from_lists([["x\udc00"]]).to_lists() == [["x\udc00"]]

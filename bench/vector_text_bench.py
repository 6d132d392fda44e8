"""Parsing the JSON vectors of a write request: orjson, the write route's simdjson decoder, C routines.

A 100-row JSON upsert of 128-d vectors spends most of its decode building 12,800 Python floats
(orjson), then checking and packing them into float32 (``values.coerce_vectors``). The idea
measured here: scan the body with msgspec keeping each vector as its raw text
(``msgspec.Raw``), and turn the texts of the whole column into one float32 matrix with a library
routine written in C, so no Python float is ever built. Each candidate gets the same texts, must
give the same float32 bits as today's path (float64 correctly rounded, then float32), and is
timed against today's path in the same run.

    .venv/bin/python bench/vector_text_bench.py [--rows 100] [--dims 128] [--repeat 7]

Prints one line per routine: best-of-``repeat`` ms for the column and the ratio to today's path;
``exact`` says whether its float32 bits equal today's on random values and on the edge values
above (``-0``, an integer, is +0.0 today: orjson gives the int 0). The msgspec ``Raw`` scan of the body is shown too: it is the cost the new design adds back.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from lagoon.schema import AttrType
from lagoon.server.body import parse_write_body
from lagoon.values import coerce_vectors

EDGE_TOKENS = [
    "-0.0",
    "-0",
    "0",
    "1e-45",
    "1.4e-45",
    "1.17549435e-38",
    "3.4028235e38",
    "3.4028234663852886e38",
    "1E5",
    "2e+3",
    "-4E-2",
    "0.1000000000000000055511151231257827",
    "123456789",
    "0.33333333333333333333333333333",
    "-1.5e-7",
]


def vector_texts(rows: int, dims: int) -> list[bytes]:
    """``rows`` JSON number arrays of ``dims`` values as a client sends them (shortest repr of
    float32 values), the first row holding the edge tokens."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((rows, dims)).astype(np.float32).tolist()
    texts = [("[" + ",".join(map(repr, row)) + "]").encode() for row in values]
    edge = (EDGE_TOKENS * dims)[:dims]
    texts[0] = ("[" + ",".join(edge) + "]").encode()
    return texts


def today(texts: list[bytes], dims: int) -> np.ndarray:
    """orjson builds the floats, ``coerce_vectors`` checks and packs them (the write path)."""
    values = orjson.loads(b"[" + b",".join(texts) + b"]")
    return coerce_vectors(values, AttrType("vector", dims=dims, dtype="f32"), where=str)[0]


def _joined(texts: list[bytes]) -> bytes:
    """The column's numbers, comma-separated, brackets and whitespace dropped."""
    return b",".join(texts).translate(None, b"[] \t\n\r")


def numpy_fromstring(texts: list[bytes], dims: int) -> np.ndarray:
    return np.fromstring(_joined(texts).decode(), sep=",").astype(np.float32).reshape(-1, dims)


def numpy_loadtxt(texts: list[bytes], dims: int) -> np.ndarray:
    text = _joined(texts).decode()
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64).astype(np.float32).reshape(-1, dims)


def arrow_csv(texts: list[bytes], dims: int) -> np.ndarray:
    data = _joined(texts).replace(b",", b"\n")
    table = pa_csv.read_csv(
        pa.BufferReader(data),
        read_options=pa_csv.ReadOptions(column_names=["x"], use_threads=False),
        convert_options=pa_csv.ConvertOptions(column_types={"x": pa.float64()}),
    )
    return table.column(0).to_numpy().astype(np.float32).reshape(-1, dims)


def arrow_cast(texts: list[bytes], dims: int) -> np.ndarray:
    """The numbers as one Arrow string array built on the text's own bytes (offsets from the
    comma positions, no split), cast to float64 by Arrow's C++ parser."""
    joined = _joined(texts)
    commas = np.flatnonzero(np.frombuffer(joined, np.uint8) == ord(","))
    n = len(commas) + 1
    offsets = np.empty(n + 1, np.int32)
    offsets[0] = 0
    offsets[1:-1] = commas + 1 - np.arange(1, n)  # positions once the commas are dropped
    offsets[-1] = len(joined) - len(commas)
    digits = joined.translate(None, b",")
    strings = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits))
    return pc.cast(strings, pa.float64()).to_numpy().astype(np.float32).reshape(-1, dims)


def msgspec_typed(texts: list[bytes], dims: int) -> np.ndarray:
    """msgspec decoding straight to ``list[list[float]]`` (still Python floats), then numpy."""
    rows = msgspec.json.decode(b"[" + b",".join(texts) + b"]", type=list[list[float]])
    return np.asarray(rows, dtype=np.float32)


def write_decoder(texts: list[bytes], dims: int) -> np.ndarray:
    """The write route's decoder (``server/body.py: parse_write_body``: simdjson straight to
    float64, ``DecodedVector``), then ``coerce_vectors`` as the write path does."""
    body = parse_write_body(b'{"upsert_columns":{"vector":[' + b",".join(texts) + b"]}}")
    return coerce_vectors(
        body["upsert_columns"]["vector"], AttrType("vector", dims=dims, dtype="f32"), where=str
    )[0]


ROUTINES: dict[str, Callable[[list[bytes], int], np.ndarray]] = {
    "orjson + coerce_vectors (before)": today,
    "parse_write_body + coerce_vectors": write_decoder,
    "msgspec list[list[float]] + numpy": msgspec_typed,
    "pyarrow string->float64 cast": arrow_cast,
    "pyarrow.csv float64 column": arrow_csv,
    "numpy.fromstring(sep=',')": numpy_fromstring,
    "numpy.loadtxt": numpy_loadtxt,
}


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def raw_scan(texts: list[bytes]) -> Callable[[], object]:
    """The msgspec scan the design needs to find the vector texts: the rows of a body as
    ``dict[str, Raw]``."""
    rows = [b'{"id":%d,"vector":%s,"title":"doc %d"}' % (i, t, i) for i, t in enumerate(texts)]
    body = b'{"upsert_rows":[' + b",".join(rows) + b"]}"
    decoder = msgspec.json.Decoder(dict[str, list[dict[str, msgspec.Raw]]])
    return lambda: decoder.decode(body)


NEGATIVE_ZERO = np.float32(-0.0).view(np.uint32)


def agreement(got: np.ndarray, expected: np.ndarray) -> str:
    """``yes`` when the bits equal today's; ``-0 only`` when they differ only where a routine
    keeps the sign of the integer ``-0`` (today: +0.0); ``NO`` otherwise."""
    if got.shape != expected.shape:
        return "NO"
    differ = got != expected
    if not differ.any():
        return "yes"
    if ((got[differ] == NEGATIVE_ZERO) & (expected[differ] == 0)).all():
        return "-0 only"
    return "NO"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    texts = vector_texts(args.rows, args.dims)
    expected = today(texts, args.dims).view(np.uint32)
    base = 0.0
    print(f"{args.rows} vectors x {args.dims} dims, best of {args.repeat}")
    print(f"{'routine':38} {'ms':>8} {'x today':>8}  exact")
    for name, fn in ROUTINES.items():
        exact = agreement(fn(texts, args.dims).view(np.uint32), expected)
        ms = best_ms(lambda fn=fn: fn(texts, args.dims), args.repeat)  # type: ignore[misc]
        base = base or ms  # the first routine is today's path
        print(f"{name:38} {ms:8.3f} {ms / base:8.2f}  {exact}")
    scan = best_ms(raw_scan(texts), args.repeat)
    print(f"{'msgspec Raw scan of the rows (added)':38} {scan:8.3f} {scan / base:8.2f}")


if __name__ == "__main__":
    main()

"""Values: JSON wire values <-> canonical Python values <-> Arrow columns, checked against a type.

Canonical values: string -> str, int -> int (i64), uint -> int (u64), float -> float, bool -> bool,
datetime -> int milliseconds since the Unix epoch (UTC), uuid -> 16 bytes, arrays -> lists,
vectors -> numpy float32 arrays. Ids: int (u64), str (<= 64 bytes) or 16 bytes (uuid).
Pure: no I/O. Errors are InvalidRequest naming the attribute.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import math
import struct
import uuid as uuidlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pybase64

from lagoon.errors import InvalidRequest
from lagoon.schema import MAX_DIMS, MAX_SPARSE_DIMS, AttrType, id_arrow_type

U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_STRING_ID_BYTES = 64
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Id = int | str | bytes


def decode_base64_vector(text: str, *, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: not a valid base64 vector") from None
    if len(raw) % 4:
        raise InvalidRequest(f"{where}: base64 vector length {len(raw)} is not a multiple of 4 bytes (f32)")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


I8_MIN, I8_MAX = -128, 127


class DecodedVector:
    """A JSON number array of a write body that the request decoder (``server/body.py``) turned
    straight into float64 numbers, without a Python float per element: it stands for the list
    the body held there. Only flat arrays of JSON numbers become one (no bool, null, string or
    nested array), each number correctly rounded to float64 as orjson does. Code that needs the
    list itself (an attribute that is not a dense vector, an error message) calls ``as_list``,
    which gives exactly the list orjson would have built (ints stay ints)."""

    __slots__ = ("_as_list", "matrix", "row", "values")

    def __init__(
        self,
        values: np.ndarray,
        as_list: Callable[[], list[Any]],
        matrix: np.ndarray | None = None,
        row: int = -1,
    ) -> None:
        self.values = values
        self._as_list = as_list
        self.matrix = matrix  # when ``values`` is row ``row`` of the decoder's matrix of vectors
        self.row = row

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def as_list(self) -> list[Any]:
        return self._as_list()

    def __repr__(self) -> str:
        return repr(self.as_list())


def coerce_vector(value: Any, atype: AttrType, *, where: str, query: bool = False) -> np.ndarray:
    """A vector value -> float32 (dims and finiteness checked). A stored ``[N]i8`` value must hold
    integers from -128 to 127; a query vector (``query``) may hold any numbers."""
    if isinstance(value, str):
        arr = decode_base64_vector(value, where=where)
    elif isinstance(value, DecodedVector):  # numbers only, as float64: as np.asarray rounds them
        with np.errstate(over="ignore"):
            arr = value.values.astype(np.float32)
    elif isinstance(value, list | tuple):
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
            raise InvalidRequest(f"{where}: vector elements must be numbers")
        with np.errstate(over="ignore"):  # beyond float32: infinity, refused below
            arr = np.asarray(value, dtype=np.float32)
    elif isinstance(value, np.ndarray):
        with np.errstate(over="ignore"):
            arr = value.astype(np.float32, copy=False).reshape(-1)
    else:
        raise InvalidRequest(f"{where}: expected a vector (number array or base64 string), got {value!r:.60}")
    if arr.shape[0] != atype.dims:
        raise InvalidRequest(f"{where}: vector has {arr.shape[0]} dimensions, the attribute has {atype.dims}")
    if not np.all(np.isfinite(arr)):
        raise InvalidRequest(f"{where}: vector contains NaN or infinity")
    if atype.dtype == "i8" and not query and not _int8_values(arr):
        raise InvalidRequest(
            f"{where}: a {atype} vector holds integers from {I8_MIN} to {I8_MAX}, got {value!r:.80}"
        )
    return arr


def coerce_vectors(
    values: list[Any], atype: AttrType, *, where: Callable[[int], str]
) -> tuple[np.ndarray, np.ndarray]:
    """A column of vector values (None = null) -> (an n x dims float32 matrix, zero on null rows;
    the rows' validity). The same checks as ``coerce_vector`` on each value, done on the whole
    column at once when every value is a number array (checked by msgspec, packed by struct:
    no Python per element) or every value is a base64 string; any other column, and any column
    that fails a check, is coerced value by value, so the error names the first bad row
    (``where(i)``) exactly as ``coerce_vector`` does."""
    if values.count(None):
        valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        present = [v for v in values if v is not None]
    else:
        valid, present = np.ones(len(values), dtype=bool), list(values)
    fast = _vectors_at_once(present, atype)
    matrix = np.zeros((len(values), atype.dims), dtype=np.float32)
    if fast is None:
        rows = [(i, coerce_vector(v, atype, where=where(i))) for i, v in enumerate(values) if v is not None]
        for i, arr in rows:
            matrix[i] = arr
    elif len(present) == len(values):
        matrix = fast
    else:
        matrix[valid] = fast
    return matrix, valid


_NUMBER_ROWS = list[list[float]]


def _vectors_at_once(present: list[Any], atype: AttrType) -> np.ndarray | None:
    """The vectors of ``present`` as a float32 matrix when all of them pass every check of
    ``coerce_vector``; None when any may not (the caller then checks value by value)."""
    dims = atype.dims
    kinds = set(map(type, present))
    if not present:
        return np.zeros((0, dims), dtype=np.float32)
    if kinds == {DecodedVector}:
        if set(map(len, present)) != {dims}:
            return None
        with np.errstate(over="ignore"):  # beyond float32: infinity, refused below
            arr = _decoded_matrix(present).astype(np.float32)
    elif kinds == {list}:
        if set(map(len, present)) != {dims}:
            return None
        try:
            msgspec.convert(present, _NUMBER_ROWS)  # numbers only: no bool, string, null, array
            packed = struct.pack(f"<{len(present) * dims}f", *itertools.chain.from_iterable(present))
        except (msgspec.ValidationError, OverflowError):
            return None
        arr = np.frombuffer(packed, dtype="<f4").reshape(len(present), dims)
    elif kinds == {str}:
        from_base64 = _base64_matrix(present, dims)
        if from_base64 is None:
            return None
        arr = from_base64
    else:
        return None
    if not np.isfinite(arr).all() or (atype.dtype == "i8" and not _int8_values(arr)):
        return None
    return arr.astype(np.float32)


def _base64_matrix(present: list[str], dims: int) -> np.ndarray | None:
    """Base64 vectors of ``dims`` float32 each, decoded into one preallocated matrix (pybase64:
    about 3 times binascii's speed); None when any is not valid base64 of that size. pybase64
    accepts a subset of what ``binascii.a2b_base64(strict_mode=True)`` accepts, with the same
    bytes (``tests/wire/test_write.py``), so a string it refuses goes to ``coerce_vector``, whose
    message names it."""
    size = 4 * dims
    out = np.empty((len(present), dims), dtype="<f4")
    view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    try:
        for i, text in enumerate(present):
            raw = pybase64.b64decode(text, validate=True)
            if len(raw) != size:
                return None
            view[i * size : (i + 1) * size] = raw
    except (binascii.Error, ValueError, TypeError):
        return None
    return out


def _decoded_matrix(present: list[DecodedVector]) -> np.ndarray:
    """The values of ``present`` as one matrix: the decoder's own when they are all its rows,
    in order (the usual write: every document has a vector), else stacked."""
    matrix = present[0].matrix
    if (
        matrix is not None
        and matrix.shape[0] == len(present)
        and all(v.matrix is matrix for v in present)
        and [v.row for v in present] == list(range(len(present)))
    ):
        return matrix
    return np.stack([v.values for v in present])


def vectors_to_arrow(matrix: np.ndarray, valid: np.ndarray, atype: AttrType) -> pa.Array:
    """An n x dims float32 matrix and its rows' validity -> the attribute's Arrow vector column."""
    dtype = {"f32": np.float32, "f16": np.float16, "i8": np.int8}[atype.dtype]
    child = pa.array(matrix.astype(dtype, copy=False).reshape(-1))
    mask = None if valid.all() else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(child, atype.dims, mask=mask)


MAX_MULTIVECTOR_VECTORS = 1024
"""Most vectors one ``[][N]f32`` value may hold."""


def coerce_multivector(value: Any, atype: AttrType, *, where: str) -> list[list[float]]:
    """A ``[][N]f32`` value (an array of 1..``MAX_MULTIVECTOR_VECTORS`` vectors, each a number
    array or base64 string of N dimensions) -> its canonical form: lists of float32 values."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{where}: expected a non-empty array of {atype.dims}-dimension vectors")
    if len(value) > MAX_MULTIVECTOR_VECTORS:
        raise InvalidRequest(
            f"{where}: at most {MAX_MULTIVECTOR_VECTORS} vectors per value, got {len(value)}"
        )
    rows = [coerce_vector(v, atype, where=f"{where}[{i}]") for i, v in enumerate(value)]
    out: list[list[float]] = np.stack(rows).tolist()
    return out


U32_MAX = 2**32 - 1
F16_MAX = 65504.0


def coerce_sparse(value: Any, *, where: str, query: bool = False) -> list[tuple[int, float]]:
    """A sparse vector ``{"dim": weight, ...}`` -> ``[(dim, weight), ...]`` sorted by dim.

    Dimensions are decimal integers 0..2^32-1 (JSON object keys are strings); weights are finite
    numbers, within f16's range for a stored vector (``query`` vectors may hold any finite
    number). A stored vector holds at most ``MAX_SPARSE_DIMS`` dimensions."""
    if not isinstance(value, dict):
        raise InvalidRequest(
            f'{where}: expected a sparse vector object {{"dimension": weight, ...}}, got {value!r:.60}'
        )
    if not query and len(value) > MAX_SPARSE_DIMS:
        raise InvalidRequest(
            f"{where}: a sparse vector holds at most {MAX_SPARSE_DIMS} dimensions, got {len(value)}"
        )
    out: dict[int, float] = {}
    for key, w in value.items():
        if isinstance(key, int) and not isinstance(key, bool):
            dim = key
        elif isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 10:
            dim = int(key)
        else:
            raise InvalidRequest(
                f"{where}: sparse dimension {key!r:.40} is not an integer from 0 to {U32_MAX}"
            )
        if not 0 <= dim <= U32_MAX:
            raise InvalidRequest(f"{where}: sparse dimension {dim} is not an integer from 0 to {U32_MAX}")
        if dim in out:
            raise InvalidRequest(f"{where}: sparse dimension {dim} appears more than once")
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(float(w)):
            raise InvalidRequest(
                f"{where}[{key!r:.20}]: a sparse weight must be a finite number, got {w!r:.40}"
            )
        if not query and abs(float(w)) > F16_MAX:
            raise InvalidRequest(f"{where}[{key!r:.20}]: weight {w} is beyond the f16 range (±{F16_MAX:g})")
        out[dim] = float(w)
    return sorted(out.items())


def _int8_values(arr: np.ndarray) -> bool:
    return bool(np.all((arr == np.round(arr)) & (arr >= I8_MIN) & (arr <= I8_MAX)))


def parse_datetime(value: Any, *, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected an ISO 8601 datetime string, got {value!r:.60}")
    text = value.strip()
    try:
        d = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{where}: {value!r:.60} is not an ISO 8601 datetime") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    delta = d - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def format_datetime(ms: int) -> str:
    d = _EPOCH + dt.timedelta(milliseconds=ms)
    if ms % 1000:
        return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_uuid(value: Any, *, where: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 16:
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a UUID string, got {value!r:.60}")
    try:
        return uuidlib.UUID(value).bytes
    except ValueError:
        raise InvalidRequest(f"{where}: {value!r:.60} is not a UUID") from None


def coerce_scalar(value: Any, kind: str, *, where: str) -> Any:
    """Check one non-null scalar against ``kind`` and return its canonical form."""
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            if I64_MIN <= value <= I64_MAX:
                return value
            raise InvalidRequest(f"{where}: {value} is out of range for int (64-bit signed)")
    elif kind == "uint":
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= U64_MAX:
                return value
            raise InvalidRequest(f"{where}: {value} is out of range for uint (64-bit unsigned)")
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            f = float(value)
            if math.isfinite(f):
                return f
            raise InvalidRequest(f"{where}: NaN and infinity are not allowed")
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "datetime":
        return parse_datetime(value, where=where)
    elif kind == "uuid":
        return parse_uuid(value, where=where)
    raise InvalidRequest(f"{where}: expected {kind}, got {json_kind(value)} {value!r:.60}")


_PLAIN_KINDS: dict[str, type] = {"string": str, "int": int, "uint": int, "float": float, "bool": bool}


def coerce_column(values: list[Any], atype: AttrType, *, where: Callable[[int], str]) -> list[Any]:
    """``coerce_value`` of every value of a column (None stays None; ``where(i)`` names value
    i). A column of plain scalars that are already canonical (strings; ints in range; finite
    floats; bools) is returned as it is, checked by type in one pass instead of value by value."""
    plain = _PLAIN_KINDS.get(atype.kind) if not (atype.array or atype.is_vector) else None
    if plain is not None and _already_canonical(values, plain, atype.kind):
        return values
    return [coerce_value(v, atype, where=where(i)) for i, v in enumerate(values)]


def _already_canonical(values: list[Any], plain: type, kind: str) -> bool:
    if not set(map(type, values)) <= {plain, type(None)}:
        return False
    present = [v for v in values if v is not None] if values.count(None) else values
    if kind == "int":
        return not present or (min(present) >= I64_MIN and max(present) <= I64_MAX)
    if kind == "uint":
        return not present or (min(present) >= 0 and max(present) <= U64_MAX)
    if kind == "float":
        return all(math.isfinite(v) for v in present)
    return True


def coerce_value(value: Any, atype: AttrType, *, where: str) -> Any:
    """Canonical form of a JSON value for an attribute of type ``atype`` (None stays None)."""
    if value is None:
        return None
    if atype.is_vector:
        return coerce_vector(value, atype, where=where)
    if atype.is_sparse:
        return coerce_sparse(value, where=where)
    if atype.is_multivector:
        return coerce_multivector(value, atype, where=where)
    if atype.array:
        if not isinstance(value, list):
            raise InvalidRequest(f"{where}: expected an array of {atype.kind}, got {value!r:.60}")
        return [coerce_scalar(v, atype.kind, where=f"{where}[{i}]") for i, v in enumerate(value)]
    return coerce_scalar(value, atype.kind, where=where)


def coerce_id(value: Any, id_type: str | None, *, where: str = "id") -> tuple[Id, str]:
    """Canonical id and the id type it implies (``id_type`` None = not fixed yet)."""
    if isinstance(value, bool) or value is None:
        raise InvalidRequest(f"{where}: ids must be unsigned integers, UUIDs or strings, got {value!r}")
    if id_type == "uuid":
        return parse_uuid(value, where=where), "uuid"
    if isinstance(value, int):
        if not 0 <= value <= U64_MAX:
            raise InvalidRequest(f"{where}: integer ids must be in 0..2^64-1, got {value}")
        if id_type not in (None, "uint"):
            raise InvalidRequest(f"{where}: this namespace has {id_type} ids, got the integer {value}")
        return value, "uint"
    if isinstance(value, str):
        if not value:
            raise InvalidRequest(f"{where}: string ids may not be empty")
        if len(value.encode()) > MAX_STRING_ID_BYTES:
            raise InvalidRequest(f"{where}: string ids are limited to {MAX_STRING_ID_BYTES} bytes")
        if id_type not in (None, "string"):
            raise InvalidRequest(f"{where}: this namespace has {id_type} ids, got the string {value!r}")
        return value, "string"
    raise InvalidRequest(f"{where}: ids must be unsigned integers, UUIDs or strings, got {value!r:.60}")


def id_to_json(value: Id) -> Any:
    if isinstance(value, bytes):
        return str(uuidlib.UUID(bytes=value))
    return value


def ids_to_arrow(ids: Sequence[Id], id_type: str) -> pa.Array:
    return pa.array(list(ids), type=id_arrow_type(id_type))


def column_to_arrow(values: Sequence[Any], atype: AttrType) -> pa.Array:
    """Canonical values (None = null) -> an Arrow array of the attribute's type."""
    if atype.is_vector:
        n = len(values)
        flat = np.zeros((n, atype.dims), dtype=np.float32)
        valid = np.ones(n, dtype=bool)
        for i, v in enumerate(values):
            if v is None:
                valid[i] = False
            else:
                flat[i] = v
        return vectors_to_arrow(flat, valid, atype)
    return pa.array(list(values), type=atype.arrow_type())


def arrow_value_to_json(value: Any, atype: AttrType, vector_encoding: str = "float") -> Any:
    """A Python value taken from an Arrow column (``.as_py()``) -> its JSON wire form."""
    if value is None:
        return None
    if atype.is_sparse:
        return {str(int(d)): float(w) for d, w in value}
    if atype.is_vector:
        arr = np.asarray(value, dtype=np.float32)
        if vector_encoding == "base64":
            return base64.b64encode(arr.astype("<f4").tobytes()).decode()
        if atype.dtype == "i8":
            return [int(x) for x in arr.tolist()]
        return arr.tolist()
    if atype.kind == "datetime":
        conv = _datetime_py_to_json
    elif atype.kind == "uuid":
        conv = _uuid_py_to_json
    else:
        return value
    if atype.array:
        return [conv(v) for v in value]
    return conv(value)


def _datetime_py_to_json(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        delta = v - _EPOCH
        return format_datetime(delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)
    return format_datetime(int(v))


def _uuid_py_to_json(v: Any) -> Any:
    return None if v is None else str(uuidlib.UUID(bytes=bytes(v)))


def json_kind(value: Any) -> str:
    """The JSON kind of a value for error messages: null, bool, int, float, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def canonical_from_arrow(value: Any, atype: AttrType) -> Any:
    """A Python value taken from an Arrow column (``.as_py()``) -> the canonical form."""
    if value is None:
        return None
    if atype.is_vector:
        return np.asarray(value, dtype=np.float32)
    if atype.is_sparse:
        return [(int(d), float(w)) for d, w in value]
    if atype.kind == "datetime":
        if atype.array:
            return [None if v is None else _datetime_to_ms(v) for v in value]
        return _datetime_to_ms(value)
    return value


def _datetime_to_ms(v: Any) -> int:
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        delta = v - _EPOCH
        return int(delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)
    return int(v)


def infer_type(name: str, value: Any) -> AttrType | None:
    """The type a first value implies, or None for null / empty arrays (decided later)."""
    if value is None:
        return None
    if name == "vector":
        dims = None
        if isinstance(value, list | DecodedVector):
            dims = len(value)
        elif isinstance(value, str):
            dims = len(decode_base64_vector(value, where=name))
        if dims is not None:
            if not 1 <= dims <= MAX_DIMS:
                raise InvalidRequest(
                    f"attribute {name!r}: a vector of {dims} dimensions; vectors have 1..{MAX_DIMS}"
                )
            return AttrType("vector", dims=dims, dtype="f32")
    if isinstance(value, bool):
        return AttrType("bool")
    if isinstance(value, int):
        return AttrType("int")
    if isinstance(value, float):
        return AttrType("float")
    if isinstance(value, str):
        return AttrType("string")
    if isinstance(value, list):
        for item in value:
            t = infer_type("", item)
            if t is None:
                continue
            if t.array or t.is_vector:
                break
            return AttrType(t.kind, array=True)
        if not value:
            return None
        raise InvalidRequest(
            f"attribute {name!r}: cannot infer a type from {value!r:.80}; declare it in schema"
        )
    raise InvalidRequest(f"attribute {name!r}: unsupported value {value!r:.80}")

"""lagoon.logs: JSON and text lines, structured fields, secret masking, idempotent setup."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from lagoon.config import REDACTED, ObservabilitySettings
from lagoon.logs import JsonFormatter, TextFormatter, _LagoonHandler, configure_logging, log_event

KEY = "lgn_0123456789abcdef_" + "S" * 43


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield out
    for handler in list(root.handlers):
        if isinstance(handler, _LagoonHandler):
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_shape(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(), stream=stream)
    log_event(logging.getLogger("lagoon.test"), "query done", request_id="r1", status=200, latency_ms=1.5)
    (line,) = lines(stream)
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert line["level"] == "info" and line["logger"] == "lagoon.test" and line["msg"] == "query done"
    assert (line["request_id"], line["status"], line["latency_ms"]) == ("r1", 200, 1.5)


def test_plain_logging_calls_and_extra(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(), stream=stream)
    logging.getLogger("lagoon.x").warning("%d docs in %s", 3, "ns", extra={"namespace": "ns"})
    (line,) = lines(stream)
    assert line["msg"] == "3 docs in ns" and line["level"] == "warning" and line["namespace"] == "ns"


def test_fields_may_reuse_core_and_parameter_names(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(), stream=stream)
    log_event(logging.getLogger("lagoon.x"), "hi", msg="m", logger="l", ts=1, name="n", args="a")
    (line,) = lines(stream)
    assert line["msg"] == "hi" and line["field_msg"] == "m" and line["field_logger"] == "l"
    assert line["field_ts"] == 1 and line["name"] == "n" and line["args"] == "a"


def test_level_parameter_and_filtering(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(log_level="warning"), stream=stream)
    logger = logging.getLogger("lagoon.x")
    log_event(logger, "dropped")
    log_event(logger, "kept", level=logging.ERROR)
    assert [line["msg"] for line in lines(stream)] == ["kept"]


def test_secrets_are_masked(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(), stream=stream)
    log_event(
        logging.getLogger("lagoon.x"),
        f"auth with {KEY}",
        authorization=f"Bearer {KEY}",
        api_key=KEY,
        token="t0k",
        endpoint="http://user:hunter2@minio:9000",
        nested={"password": "pw", "keys": [KEY]},
        key_id="0123456789abcdef",
    )
    raw = stream.getvalue()
    for secret in ("S" * 43, "t0k", "hunter2", '"pw"'):
        assert secret not in raw
    (line,) = lines(stream)
    assert line["msg"] == f"auth with lgn_0123456789abcdef_{REDACTED}"  # the key id stays visible
    assert line["token"] == REDACTED and line["authorization"] == REDACTED
    assert line["nested"]["password"] == REDACTED
    assert line["key_id"] == "0123456789abcdef"


def test_exceptions_and_odd_values(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(), stream=stream)
    logger = logging.getLogger("lagoon.x")
    try:
        raise RuntimeError(f"failed for {KEY}")
    except RuntimeError:
        logger.exception("boom", extra={"obj": object(), "data": b"\x00"})
    (line,) = lines(stream)
    assert "RuntimeError" in line["exc"] and "S" * 43 not in line["exc"]
    assert line["obj"].startswith("<object")


def test_a_bad_format_string_does_not_lose_the_event() -> None:
    record = logging.makeLogRecord({"msg": "bad format %d", "args": ("not a number",), "levelname": "INFO"})
    for formatter in (JsonFormatter(), TextFormatter()):
        assert "bad format" in formatter.format(record)


def test_text_format(stream: io.StringIO) -> None:
    configure_logging(ObservabilitySettings(log_format="text", log_level="debug"), stream=stream)
    log_event(logging.getLogger("lagoon.t"), "hello", level=logging.DEBUG, ns="a b", status=200, empty="")
    line = stream.getvalue().strip()
    assert re.fullmatch(r'\S+Z debug   lagoon\.t: hello ns="a b" status=200 empty=""', line), line


def test_configure_is_idempotent_and_leaves_other_handlers(stream: io.StringIO) -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        configure_logging(ObservabilitySettings(), stream=io.StringIO())
        configure_logging(ObservabilitySettings(log_format="text"), stream=stream)
        ours = [h for h in root.handlers if isinstance(h, _LagoonHandler)]
        assert len(ours) == 1 and other in root.handlers
        logging.getLogger("lagoon.x").warning("once")
        assert stream.getvalue().count("once") == 1
    finally:
        root.removeHandler(other)


def test_python_and_numpy_warnings_are_json_lines(stream: io.StringIO) -> None:
    import warnings

    import numpy as np

    configure_logging(ObservabilitySettings(), stream=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert warnings.showwarning.__module__ == "lagoon.logs"
        warnings.warn("something odd", RuntimeWarning, stacklevel=1)
        np.float32(3e38) * np.float32(10)  # numpy: overflow encountered in scalar multiply
    first, second = lines(stream)
    assert first["logger"] == "py.warnings" and first["level"] == "warning"
    assert first["msg"] == "RuntimeWarning: something odd" and first["category"] == "RuntimeWarning"
    assert first["lineno"] > 0 and first["filename"].endswith("test_logs.py")
    assert second["category"] == "RuntimeWarning" and "overflow" in second["msg"]


def test_a_server_process_writes_warnings_as_json_not_to_stderr(tmp_path: Any) -> None:
    """The process-level hook: stderr stays empty, stdout is JSON only."""
    import subprocess
    import sys

    code = (
        "import numpy as np, warnings\n"
        "from lagoon.config import ObservabilitySettings\n"
        "from lagoon.logs import configure_logging\n"
        "configure_logging(ObservabilitySettings())\n"
        "np.array([1e308]) * 10\n"
        "np.log(np.array([-1.0]))\n"
        "warnings.warn('plain', UserWarning)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["category"] for r in records] == ["RuntimeWarning", "RuntimeWarning", "UserWarning"]
    assert all(r["logger"] == "py.warnings" for r in records)

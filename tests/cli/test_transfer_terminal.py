"""``lagoon import`` / ``export`` as a person runs them: a progress bar on a terminal (a pseudo-tty
here), none when stderr is a pipe; Ctrl-C (SIGINT) exits 130 with how to go on, and ``--resume``
completes the import."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
LAGOON = REPO / ".venv" / "bin" / "lagoon"
N = 60_000  # ~4 s of import on an idle machine: still running when Ctrl-C comes


def export_file(path: Path, n: int = N) -> None:
    header = {
        "lagoon_export": 1,
        "namespace": "src",
        "schema": {"title": {"type": "string"}},
        "distance_metric": None,
    }
    with path.open("wb") as f:
        f.write(orjson.dumps(header) + b"\n")
        for i in range(n):
            f.write(orjson.dumps({"id": i, "title": f"document number {i}"}) + b"\n")
        f.write(orjson.dumps({"lagoon_export_end": 1, "documents": n}) + b"\n")


def args(root: Path, *rest: str) -> list[str]:
    return [str(LAGOON), *rest, "--set", "storage.backend=fs", "--set", f"storage.root={root}"]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAGOON_")}
    out.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    out.pop("NO_COLOR", None)
    return out


class OnTty:
    """A command whose stderr is a pseudo-terminal; ``read_until`` collects what it shows."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        # Ctrl-C is live on a terminal: a runner started in the background (`cmd &` in a
        # non-interactive shell) ignores SIGINT, and the command would inherit that
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=env(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(slave)
        self.shown = b""

    def read_until(self, needle: bytes, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.shown and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.shown += os.read(self.master, 65536)
                except OSError:  # the command exited and closed its side
                    break
            elif self.proc.poll() is not None:
                break
        return needle in self.shown

    def finish(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout)
        self.read_until(b"\0", timeout=0.5)
        os.close(self.master)
        return code


@pytest.mark.timeout(300)
def test_progress_on_a_terminal_ctrl_c_exits_130_and_resume_completes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    src = tmp_path / "in.jsonl"
    export_file(src)
    run = OnTty(args(root, "import", "--namespace", "docs", "--in", str(src), "--batch-size", "30"))
    assert run.read_until(b"docs/s"), run.shown.decode(errors="replace")
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    shown = run.shown.decode(errors="replace")
    assert code == 130, shown
    assert "Interrupted" in shown and "--resume" in shown and "Traceback" not in shown
    assert "MB/s" in shown and "import docs" in shown
    resumed = subprocess.run(
        args(root, "import", "--namespace", "docs", "--in", str(src), "--batch-size", "30", "--resume"),
        capture_output=True, text=True, env=env(), timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed:" in resumed.stderr and f"imported {N} documents" in resumed.stderr
    assert "docs/s" not in resumed.stderr  # stderr is a pipe: no progress bar
    out = tmp_path / "out.jsonl"
    export = OnTty(args(root, "export", "--namespace", "docs", "--out", str(out)))
    assert export.finish() == 0, export.shown.decode(errors="replace")
    assert b"export docs" in export.shown and b"docs/s" in export.shown
    lines = out.read_bytes().splitlines()
    assert len(lines) == N + 2 and orjson.loads(lines[-1]) == {"lagoon_export_end": 1, "documents": N}

"""Progress bars of the long operator commands (``export``, ``import``) on stderr.

Shown only when stderr is a terminal (``rich`` decides; ``TERM=dumb`` and pipes get nothing), so
scripts and logs see just the one-line summary the command prints at the end. One bar per
command: documents, bytes, rate (documents/s and MB/s) and the time remaining, estimated from
what is known up front: the namespace's document count for an export, the file's size for an
import (nothing for stdin: then no ETA).
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class TransferProgress:
    """``update(documents, bytes)`` as a transfer goes; a context manager around the transfer."""

    def __init__(
        self, what: str, *, total_documents: int | None = None, total_bytes: int | None = None
    ) -> None:
        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal
        self.by_bytes = total_documents is None and total_bytes is not None
        self.total = total_bytes if self.by_bytes else total_documents
        self.what = what
        self.started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[docs]} docs  {task.fields[size]}  {task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total, docs=0, size="0 B", rate="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, documents: int, nbytes: int) -> None:
        if self._bar is None or self._task is None:
            return
        secs = max(time.monotonic() - self.started, 1e-6)
        rate = f"{documents / secs:,.0f} docs/s  {nbytes / secs / 1e6:.1f} MB/s"
        self._bar.update(
            self._task,
            completed=nbytes if self.by_bytes else documents,
            docs=f"{documents:,}",
            size=_size(nbytes),
            rate=rate,
        )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


__all__ = ["TransferProgress"]

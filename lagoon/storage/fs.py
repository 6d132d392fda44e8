"""Local-folder object store: key ``a/b/c`` is the file ``<root>/a/b/c``.

The zero-config backend. It gives the same guarantees as S3 on one machine, for any number of
threads and processes sharing the folder (on a local filesystem: flock and link must work).

Write algorithm (``put``), chosen so that a crash at any point never leaves a torn object under
its final name:

1. write the bytes to ``<dir>/.tmp-<random>`` (O_EXCL), set its mtime to ``time.time_ns()``
   explicitly (full nanoseconds, not the kernel's coarse tick), ``fsync`` it;
2. publish it: OVERWRITE = ``os.replace(tmp, final)``; CREATE = ``os.link(tmp, final)``, which
   fails with EEXIST if the name is taken (create-if-absent is atomic across processes; a plain
   rename would silently replace); IfMatch = under the key's lock, compare the current etag, then
   ``os.replace``;
3. unlink the temp name (after a link it is a second name of the same inode), ``fsync`` the
   directory so the new name is durable. New directories are fsynced into their parents too.

A crash before step 2 leaves only a ``.tmp-*`` file; the constructor sweeps those older than
``sweep_grace_secs`` (default 5 minutes, so a live writer in another process is never hurt).

Etag = ``<inode>-<mtime_ns>-<size>`` in hex: free to compute for ``head`` and ``list`` (no reading
of the bytes, unlike a content hash), and different for every write because each write is a new
inode with an explicit nanosecond mtime (an inode number is only reused after the old file is
gone, and then at another nanosecond). It needs a filesystem with nanosecond timestamps (ext4,
xfs, btrfs, tmpfs, APFS). Unlike S3's MD5 etag, rewriting the same bytes changes the etag.

Locking: IfMatch, OVERWRITE and delete of a key serialise on one of 64 lock stripes (a
``threading.Lock`` plus ``fcntl.flock`` on ``<root>/.lagoon-locks/NN.lock``), so an IfMatch's
compare-then-replace cannot interleave with another mutation of the same key. CREATE needs no lock.

Layout limits: segments starting with ``.tmp-`` or ``.lagoon`` are reserved (``validate_key``
refuses them). A key cannot be both an object and a "directory" (``a`` and ``a/b``): such a put
raises ``StorageError``. Empty directories are removed after a delete; ``list_prefixes`` only
reports directories that hold at least one object, like S3's common prefixes.

Blocking I/O: puts, deletes, listings and reads above ``inline_read_bytes`` run in
``asyncio.to_thread``; ``head`` and small reads run inline, because a thread hop costs about
160 µs here against a few µs for a stat or a small page-cache read (see docs/storage.md).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import errno
import fcntl
import os
import secrets
import stat
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from lagoon.storage.base import (
    RESERVED_SEGMENT_PREFIXES,
    AccessDenied,
    AlreadyExists,
    CorruptRead,
    IfMatch,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    PutMode,
    PutModeT,
    StorageError,
    StoreUnavailable,
    check_range,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")

TMP_PREFIX = ".tmp-"
LOCK_DIR = ".lagoon-locks"
LOCK_STRIPES = 64
DEFAULT_SWEEP_GRACE_SECS = 300.0

_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _meta(key: str, st: os.stat_result) -> ObjectMeta:
    modified = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, dt.UTC)
    return ObjectMeta(key=key, size=st.st_size, etag=_etag(st), last_modified=modified)


def _reserved(name: str) -> bool:
    return name.startswith(RESERVED_SEGMENT_PREFIXES)


def _os_error(key: str, exc: OSError) -> StorageError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessDenied(f"{key}: {exc}")
    return StoreUnavailable(f"{key}: {exc}")


def _pread_exact(fd: int, start: int, length: int) -> bytes:
    """Read ``length`` bytes at ``start``; fewer only if the file is shorter than that."""
    chunks: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, length, start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
        length -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FsStore:
    """``ObjectStore`` on a local folder. Construct it after any fork; safe across processes.

    The constructor creates ``root`` if needed and sweeps stale temp files (a blocking walk of
    the tree; call ``sweep_temp_files`` again at any time).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sweep_grace_secs: float = DEFAULT_SWEEP_GRACE_SECS,
        fsync: bool = True,
        inline_read_bytes: int = 256 * 1024,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self._fsync = fsync
        self._inline_read_bytes = inline_read_bytes
        self._stripe_locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._stripe_fds: dict[int, int] = {}
        self._fds_lock = threading.Lock()
        self.swept = self.sweep_temp_files(older_than_secs=sweep_grace_secs)

    # -- paths, locks, durability -------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    def _dir_path(self, dir_key: str) -> str:
        """Folder of a listing base ("" or "a/b/")."""
        return os.path.join(self.root, *dir_key.split("/")[:-1])

    def _lock_fd(self, stripe: int) -> int:
        with self._fds_lock:
            fd = self._stripe_fds.get(stripe)
            if fd is None:
                lock_dir = os.path.join(self.root, LOCK_DIR)
                os.makedirs(lock_dir, exist_ok=True)
                path = os.path.join(lock_dir, f"{stripe:02d}.lock")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._stripe_fds[stripe] = fd
            return fd

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock (striped) across threads of this process and other processes."""
        stripe = zlib.crc32(key.encode()) % LOCK_STRIPES
        with self._stripe_locks[stripe]:
            fd = self._lock_fd(stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _sync_dir(self, path: str) -> None:
        if not self._fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, key: str, directory: str) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry into its parent."""
        missing: list[str] = []
        d = directory
        while d != self.root and not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise StorageError(
                        f"key {key!r} conflicts with the object {os.path.relpath(d, self.root)!r}: the fs "
                        "backend cannot hold both 'a' and 'a/b'"
                    ) from None
                continue
            self._sync_dir(os.path.dirname(d))

    def sweep_temp_files(self, older_than_secs: float = DEFAULT_SWEEP_GRACE_SECS) -> int:
        """Delete ``.tmp-*`` files (left by crashed writers) older than the grace; return the count."""
        cutoff = time.time() - older_than_secs
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != LOCK_DIR]
            for name in filenames:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    @staticmethod
    async def _io(key: str, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """Run blocking ``fn`` (in a worker thread unless ``inline``); OSErrors become StorageErrors."""
        try:
            return fn(*args) if inline else await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise _os_error(key, exc) from exc

    # -- reads --------------------------------------------------------------------------------

    def _stat(self, key: str, path: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise _os_error(key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return st

    def _read_sync(
        self, key: str, path: str, ranges: Sequence[tuple[int, int]] | None
    ) -> builtins.list[bytes]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise _os_error(key, exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFound(key)
            out: list[bytes] = []
            for start, end in ranges if ranges is not None else [(0, st.st_size)]:
                want = max(0, min(end, st.st_size) - start)
                data = _pread_exact(fd, start, want) if want else b""
                if len(data) != want:
                    raise CorruptRead(f"{key}: read {len(data)} of {want} bytes at {start}")
                out.append(data)
            return out
        finally:
            os.close(fd)

    async def _read(self, key: str, ranges: Sequence[tuple[int, int]] | None) -> builtins.list[bytes]:
        path = self._path(key)
        # Size decides inline vs thread: a stat costs ~3 µs, a thread hop ~160 µs.
        size = self._stat(key, path).st_size if ranges is None else sum(e - s for s, e in ranges)
        if size <= self._inline_read_bytes:
            return await self._io(key, self._read_sync, key, path, ranges, inline=True)
        return await self._io(key, self._read_sync, key, path, ranges)

    async def get(self, key: str) -> bytes:
        return (await self._read(key, None))[0]

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        check_range(start, end)
        return (await self._read(key, [(start, end)]))[0]

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        for start, end in ranges:
            check_range(start, end)
        return await self._read(key, list(ranges))

    async def head(self, key: str) -> ObjectMeta:
        return _meta(key, self._stat(key, self._path(key)))

    # -- writes -------------------------------------------------------------------------------

    def _write_temp(self, key: str, directory: str, data: bytes) -> tuple[str, os.stat_result]:
        for _ in range(10):
            try:
                self._makedirs(key, directory)
                tmp = os.path.join(directory, TMP_PREFIX + secrets.token_hex(8))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                break
            except FileNotFoundError:  # a concurrent delete pruned the (empty) folder: again
                continue
            except NotADirectoryError:
                raise StorageError(
                    f"key {key!r} conflicts with an existing object: the fs backend cannot hold both "
                    "'a' and 'a/b'"
                ) from None
        else:
            raise StoreUnavailable(f"{key}: folder kept disappearing while writing")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            now_ns = time.time_ns()
            os.utime(fd, ns=(now_ns, now_ns))
            if self._fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp, st

    def _put_sync(self, key: str, path: str, data: bytes, mode: PutModeT) -> ObjectMeta:
        directory = os.path.dirname(path)
        tmp, st = self._write_temp(key, directory, data)
        try:
            if mode == PutMode.CREATE:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if os.path.isdir(path):
                        raise StorageError(
                            f"key {key!r} is a folder of other keys in the fs backend"
                        ) from None
                    raise AlreadyExists(key) from None
            elif isinstance(mode, IfMatch):
                with self._key_lock(key):
                    try:
                        current = os.stat(path)
                    except _MISSING:
                        raise PreconditionFailed(key) from None
                    if not stat.S_ISREG(current.st_mode) or _etag(current) != mode.etag:
                        raise PreconditionFailed(key)
                    os.replace(tmp, path)
            else:
                with self._key_lock(key):
                    os.replace(tmp, path)
        except IsADirectoryError:
            raise StorageError(f"key {key!r} is a folder of other keys in the fs backend") from None
        except StorageError:
            raise
        except OSError as exc:
            raise _os_error(key, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._sync_dir(directory)
        return _meta(key, st)

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        path = self._path(key)
        if mode not in (PutMode.OVERWRITE, PutMode.CREATE) and not isinstance(mode, IfMatch):
            raise ValueError(f"unknown put mode {mode!r}")
        return await self._io(key, self._put_sync, key, path, bytes(data), mode)

    def _delete_sync(self, key: str, path: str) -> None:
        directory = os.path.dirname(path)
        with self._key_lock(key):
            try:
                os.unlink(path)
            except _MISSING:
                return
            except OSError as exc:
                raise _os_error(key, exc) from exc
        self._sync_dir(directory)
        # Remove folders left empty, so listings match S3 (where "folders" are only key prefixes).
        while directory != self.root:
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)

    async def delete(self, key: str) -> None:
        await self._io(key, self._delete_sync, key, self._path(key))

    # -- listings -----------------------------------------------------------------------------

    def _scan(self, dir_key: str) -> builtins.list[tuple[str, os.stat_result | None]]:
        """Entries of one folder, in key order: (name, stat) for objects, (name + "/", None) for folders."""
        out: list[tuple[str, os.stat_result | None]] = []
        try:
            with os.scandir(self._dir_path(dir_key)) as it:
                for entry in it:
                    if _reserved(entry.name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            out.append((entry.name + "/", None))
                        elif entry.is_file(follow_symlinks=False):
                            out.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return []
        # A folder sorts as name + "/": since names hold no "/", this is the global key order.
        out.sort(key=lambda e: e[0])
        return out

    async def _walk(self, dir_key: str, prefix: str, start_after: str | None) -> AsyncIterator[ObjectMeta]:
        for name, st in await self._io(dir_key, self._scan, dir_key):
            key = dir_key + name
            if not (key.startswith(prefix) or prefix.startswith(key)):
                if key > prefix:
                    return  # sorted: nothing later can match
                continue
            if st is None:  # a folder: key ends with "/"
                if start_after is not None and key < start_after and not start_after.startswith(key):
                    continue  # everything below sorts before start_after
                async for meta in self._walk(key, prefix, start_after):
                    yield meta
            elif key.startswith(prefix) and (start_after is None or key > start_after):
                yield _meta(key, st)

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        async for meta in self._walk(prefix[: prefix.rfind("/") + 1], prefix, start_after):
            yield meta

    def _has_object(self, path: str) -> bool:
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if _reserved(entry.name):
                        continue
                    if entry.is_file(follow_symlinks=False):
                        return True
                    if entry.is_dir(follow_symlinks=False) and self._has_object(entry.path):
                        return True
        except (FileNotFoundError, NotADirectoryError):
            pass
        return False

    def _list_prefixes_sync(
        self, prefix: str, start_after: str | None, limit: int | None
    ) -> builtins.list[str]:
        base = prefix[: prefix.rfind("/") + 1]
        candidates = [
            base + name
            for name, st in self._scan(base)
            if st is None
            and (base + name).startswith(prefix)
            and (start_after is None or base + name > start_after)
        ]
        out: list[str] = []
        for candidate in candidates:
            if limit is not None and len(out) >= limit:
                break
            if self._has_object(self._dir_path(candidate)):
                out.append(candidate)
        return out

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        validate_prefix(prefix)
        return await self._io(prefix, self._list_prefixes_sync, prefix, start_after, limit)

    # -- misc ---------------------------------------------------------------------------------

    async def now(self) -> dt.datetime:
        """The local clock: the same clock that stamps every mtime (one machine)."""
        return dt.datetime.now(dt.UTC)

    async def close(self) -> None:
        with self._fds_lock:
            fds, self._stripe_fds = self._stripe_fds, {}
        for fd in fds.values():
            os.close(fd)

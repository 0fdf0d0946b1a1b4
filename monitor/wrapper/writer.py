"""Appending usage records to the log, shared safely by threads and processes.

Each record is one ``os.write`` of one complete line on a descriptor opened with ``O_APPEND``:
the kernel places every write at the end of the file as a unit, so concurrent writers never tear
or interleave lines. Nothing here may raise into the instrumented application: a record that
cannot be written is counted, and the first failure is reported once through ``logging``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("monitor.wrapper")

ROTATE_ENV = "BEDROCK_TOP_LOG_MAX_BYTES"
# How often a writer checks that its path still names the file it appends to. The tailer keeps a
# rotated file open for longer than this (``monitor.sources.logtail.ROTATE_WAIT_S``).
IDENTITY_CHECK_S = 0.25

# Non-blocking: a log that is a FIFO nobody reads fails to open (ENXIO) and one whose reader
# stopped reading fails to take a write (EAGAIN), instead of stopping the application; either
# is a dropped record. (A hard-mounted network filesystem can still block in the kernel.)
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

# Re-entrant: a record finished by the garbage collector can arrive while this thread is here.
_drop_lock = threading.RLock()
_dropped = 0
_warned = False


def dropped_records() -> int:
    """How many records this process could not write (or could not build) so far."""
    return _dropped


def record_dropped(reason: str) -> None:
    """Count one lost record; the first loss in a process is reported as a warning."""
    global _dropped, _warned
    with _drop_lock:
        _dropped += 1
        first = not _warned
        _warned = True
    if first:
        logger.warning(
            "bedrock-top: a usage record was dropped (%s); the application is unaffected, "
            "further drops are counted silently",
            reason,
        )
    else:
        logger.debug("bedrock-top: usage record dropped (%s)", reason)


def rotated_path(path: Path) -> Path:
    """Where a full log is moved on rotation: ``usage.jsonl`` -> ``usage.jsonl.1``."""
    return path.with_name(path.name + ".1")


def parse_max_bytes(text: str | None) -> int | None:
    """``BEDROCK_TOP_LOG_MAX_BYTES``: a byte count, optionally with a K, M or G suffix."""
    if not text or not text.strip():
        return None
    text = text.strip().upper().removesuffix("B")
    scale = 1
    for suffix, factor in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        if text.endswith(suffix):
            text, scale = text[:-1], factor
            break
    value = int(float(text) * scale)
    if value <= 0:
        raise ValueError("must be positive")
    return value


class LineWriter:
    """Writes complete lines one at a time, whatever the threads and finalizers calling it.

    Re-entrant because a stream collected by the garbage collector finishes its record wherever
    collection happens, possibly inside a write of this same thread: that record is written
    right after the one in progress, never in between. Subclasses say how one line is written
    (``_put``) and add what they need to ``_after_fork``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._busy = False
        self._deferred: list[bytes] = []

    def write(self, line: bytes) -> bool:
        """Write one complete line. Returns False (and counts a drop) if it was not written."""
        failures: list[str] = []
        with self._lock:
            if self._busy:
                # Re-entered from a finalizer mid-write: the outer call writes it next.
                self._deferred.append(line)
                return True
            self._busy = True
            try:
                ok = self._put(line, failures)
                while self._deferred:
                    self._put(self._deferred.pop(0), failures)
            finally:
                self._busy = False
        for reason in failures:
            record_dropped(reason)
        return ok

    def _put(self, line: bytes, failures: list[str]) -> bool:
        raise NotImplementedError

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.RLock()
        self._busy = False
        self._deferred = []


class UsageLogWriter(LineWriter):
    """One log file, appended to by any number of threads of this process.

    The descriptor is reopened when the path no longer names the file it refers to (the log was
    rotated, deleted, or its directory removed and recreated). That is checked with a ``stat`` of
    the path at most every ``identity_check_s`` rather than before every record, which would
    cost a system call per Bedrock call: a record written in that window still reaches the
    monitor, whose tailer keeps reading a rotated or deleted file for ``ROTATE_WAIT_S``
    (longer than this window) before letting it go. The lock only covers one line's write.
    """

    identity_check_s: float = IDENTITY_CHECK_S

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._check_due = 0.0

    def _put(self, line: bytes, failures: list[str]) -> bool:
        try:
            fd = self._fd
            if fd is None or time.monotonic() >= self._check_due:
                fd = self._descriptor()
            written = os.write(fd, line)
            if written != len(line):
                # Disk filled mid-line: end the fragment so the next record starts clean.
                with contextlib.suppress(OSError):
                    os.write(fd, b"\n")
                raise OSError(errno.ENOSPC, "short write")
            if self.max_bytes is not None and os.fstat(fd).st_size >= self.max_bytes:
                self._rotate(fd)
            return True
        except OSError as err:
            self._close()
            failures.append(f"cannot write {self.path}: {err.strerror or err}")
            return False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _descriptor(self) -> int:
        if self._fd is not None:
            self._check_due = time.monotonic() + self.identity_check_s
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    return self._fd
            except FileNotFoundError:
                pass
            self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        st = os.fstat(fd)
        self._fd, self._identity = fd, (st.st_dev, st.st_ino)
        self._check_due = time.monotonic() + self.identity_check_s
        return fd

    def _rotate(self, fd: int) -> None:
        # The flock on the full file makes exactly one process rename it; the others find that
        # the path names a new file and leave it alone.
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity and st.st_size >= (self.max_bytes or 0):
                os.replace(self.path, rotated_path(self.path))
        except FileNotFoundError:
            pass
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._identity = None, None


_writers: dict[Path, UsageLogWriter] = {}
_writers_lock = threading.Lock()


def writer_for(path: Path, max_bytes: int | None = None) -> UsageLogWriter:
    """The process-wide writer of ``path`` (one descriptor per log, however many clients)."""
    key = Path(os.path.abspath(path))
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = UsageLogWriter(key, max_bytes)
        elif max_bytes is not None:
            writer.max_bytes = max_bytes
        return writer


def _reset_after_fork() -> None:
    global _writers_lock, _drop_lock
    _writers_lock = threading.Lock()
    _drop_lock = threading.RLock()
    for writer in _writers.values():
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)

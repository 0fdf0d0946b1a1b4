"""Follow usage logs with ``tail -F`` semantics.

Files are followed by identity (device, inode), not by name: a rotated file is read to its end
through the handle already open (and for ``ROTATE_WAIT_S`` more, for late writers), while the
new file at the path is read from its start; a file that shrinks was truncated and is read again
from the start; a path that does not exist yet is waited for. Only complete lines are parsed; a
partial last line waits for its newline.

On start-up each file is entered at the first line whose timestamp could be inside the oldest
window the views need, found by binary search on the (time-ordered) file, so start-up time does
not grow with the age of the log. The search then checks samples before that point: a file whose
records are out of order is read from its start instead of losing the recent ones.

Only regular files are read: a FIFO, a device or a terminal named as a log would block the reader
(or never end), so it is reported as an error and left alone. Files are opened non-blocking.

Idle files are closed when more are followed than ``open_file_budget()`` allows (a glob can match
more files than the process may open), and opened again when their size or time changes.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from monitor.records import MAX_LINE_BYTES, UsageRecord, parse_block
from monitor.sources.changes import DirectoryWatch

# A read of this size holds about 2,000 records: their objects stay near the processor's caches
# while every consumer reads them, and a catch-up's memory stays small (4 MB reads took as
# long and 30 MB more).
READ_BYTES = 1024 * 1024
POLL_INTERVAL_S = 0.05
# With change notifications, a pass at least this often anyway: a file on a network filesystem
# changed by another host, or anything else a notification can miss.
IDLE_PASS_S = 1.0
GLOB_REFRESH_S = 1.0
# How long a rotated or deleted file is still read after its path stops naming it: longer than
# the wrapper's identity check (``monitor.wrapper.writer.IDENTITY_CHECK_S``), like fluent-bit's
# ``Rotate_Wait``.
ROTATE_WAIT_S = 2.0
# Concurrent writers append in request-end order only approximately; enter a file this much
# earlier than asked so that a slightly late line is not skipped.
SEEK_SLACK_S = 300.0
_TS_FIELD = re.compile(rb'"ts"\s*:\s*"([^"]{10,40})"')
# How many places before the search's answer are checked for records it should not have skipped.
ORDER_SAMPLES = 32
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_file_budget() -> int:
    """How many logs may be open at once: a quarter of the descriptor limit (the screen, the
    AWS clients and the application need the rest), between 8 and 256."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 64
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, soft // 4))


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a directory"
        if stat.S_ISDIR(mode)
        else "not a regular file"
    )
    return f"{kind}, not a regular file: only regular files are read (they cannot block)"


RecordsCallback = Callable[[list[UsageRecord]], None]


@dataclass(frozen=True, slots=True)
class RejectedLine:
    where: str  # path:line
    reason: str
    detail: str


@dataclass
class LogSourceState:
    """What the log source has done, for the header and the report."""

    patterns: list[str]
    files: dict[str, int] = field(default_factory=dict)  # path -> byte offset read up to
    lines_read: int = 0
    records: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_examples: deque[RejectedLine] = field(default_factory=lambda: deque(maxlen=20))
    errors: dict[str, str] = field(default_factory=dict)  # path -> what went wrong reading it
    waiting_for: list[str] = field(default_factory=list)  # named paths that do not exist yet

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "log",
            "patterns": list(self.patterns),
            "files": dict(self.files),
            "lines_read": self.lines_read,
            "records": self.records,
            "rejected": self.rejected_total,
            "rejected_by_reason": dict(self.rejected.most_common()),
            "rejected_examples": [
                {"where": line.where, "reason": line.reason, "detail": line.detail}
                for line in self.rejected_examples
            ],
            "errors": dict(self.errors),
            "waiting_for": list(self.waiting_for),
        }


def record_ts(line: bytes) -> float | None:
    """The ``ts`` of a line as POSIX seconds, without validating the rest of the record."""
    match = _TS_FIELD.search(line)
    if not match:
        return None
    try:
        return datetime.fromisoformat(match.group(1).decode()).timestamp()
    except ValueError:
        return None


def find_start_offset(fd: int, size: int, start_epoch: float) -> int:
    """Byte offset of a line start at or before the first record with ``ts >= start_epoch -
    SEEK_SLACK_S``, by binary search over line starts. Lines without a readable ``ts`` are
    stepped over. Returns 0 when the whole file may be needed."""
    target = start_epoch - SEEK_SLACK_S
    lo, hi = 0, size  # invariant: the answer is a line start in [lo, hi]
    probe = 64 * 1024
    while hi - lo > probe:
        mid = (lo + hi) // 2
        block = os.pread(fd, probe, mid)
        newline = block.find(b"\n")
        if newline < 0:
            hi = mid
            continue
        line_start = mid + newline + 1
        ts = None
        cursor = newline + 1
        while ts is None:
            end = block.find(b"\n", cursor)
            if end < 0:
                break
            ts = record_ts(block[cursor:end])
            cursor = end + 1
        if ts is None or line_start >= hi:
            hi = mid
        elif ts < target:
            lo = line_start
        else:
            hi = mid
    # lo is 0 or just after a newline: a line start.
    if lo > 0 and _needed_before(fd, lo, target):
        return 0
    return lo


def _needed_before(fd: int, end: int, target: float) -> bool:
    """Whether a sample of the lines before ``end`` holds one at or after ``target``: the search
    assumed time order, and a file whose recent records come before older ones would otherwise
    be entered after them. Costs ``ORDER_SAMPLES`` small reads."""
    probe = 4096
    for index in range(ORDER_SAMPLES):
        at = end * index // ORDER_SAMPLES
        block = os.pread(fd, probe, at)
        if at > 0:  # skip to the first line start after the probe point
            newline = block.find(b"\n")
            if newline < 0:
                continue
            block = block[newline + 1 :]
        line_end = block.find(b"\n")
        ts = record_ts(block if line_end < 0 else block[:line_end])
        if ts is not None and ts >= target:
            return True
    return False


@dataclass(frozen=True, slots=True)
class CatchUpRange:
    """What a catch-up reads of one file: ``[start, end)``, the newest part from ``recent``."""

    path: str
    identity: tuple[int, int]
    start: int
    recent: int
    end: int


def line_start_after(path: str, offset: int) -> int:
    """The first line start at or after ``offset`` (the end of the file if none)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(offset - 1)
        while True:
            block = handle.read(64 * 1024)
            if not block:
                return handle.tell()
            newline = block.find(b"\n")
            if newline >= 0:
                return handle.tell() - len(block) + newline + 1


class _FollowedFile:
    """One open file, identified by (device, inode)."""

    def __init__(self, path: str, fd: int, identity: tuple[int, int], offset: int) -> None:
        self.path = path
        self.fd: int | None = fd  # None while closed for being idle
        self.active_at = time.monotonic()  # when it last grew (or was opened)
        self.mtime_ns = 0  # as of the last read: a closed file is reopened when it changes
        self.identity = identity
        self.offset = offset
        self.start_offset = offset
        self.partial = b""
        self.discarding = False  # inside an over-long line, dropping bytes until its newline
        self.lines_since_start = 0
        self.line_base: int | None = 0 if offset == 0 else None
        # When the file stopped being reachable by its path (rotated away or deleted).
        self.gone_since: float | None = None

    def line_number(self, lines_since_start: int) -> str:
        """``path:line`` for a 1-based line number counted from the file's start. Counting the
        lines skipped by the start-up seek is paid only when a bad line has to be located."""
        if self.line_base is None and self.fd is not None:
            count = 0
            position = 0
            while position < self.start_offset:
                block = os.pread(self.fd, min(READ_BYTES, self.start_offset - position), position)
                if not block:
                    break
                count += block.count(b"\n")
                position += len(block)
            self.line_base = count
        return f"{self.path}:{(self.line_base or 0) + lines_since_start}"


class LogTailer:
    """Follows every file matching ``patterns`` and hands parsed records to ``on_records``.

    ``poll()`` does one pass and may be called from any single thread; ``start()`` runs it in a
    daemon thread: when a watched directory changes (inotify) and at least every
    ``IDLE_PASS_S``, or every ``POLL_INTERVAL_S`` where change notifications are unavailable.
    Either way at most one pass per ``POLL_INTERVAL_S``.
    """

    def __init__(
        self,
        patterns: Iterable[str],
        on_records: RecordsCallback,
        *,
        start_epoch: float | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        on_change: Callable[[], None] | None = None,
        notifications: bool = True,
    ) -> None:
        self.patterns = [str(Path(pattern).expanduser()) for pattern in patterns]
        self.state = LogSourceState(patterns=list(self.patterns))
        self._on_records = on_records
        self._on_change = on_change
        self._start_epoch = start_epoch
        self._poll_interval = poll_interval
        self._notifications = notifications
        # The directory of each pattern, where notifications can cover it (no glob characters
        # in the directory part).
        self._watchable = [
            directory
            for directory in (os.path.dirname(pattern) or "." for pattern in self.patterns)
            if not glob.has_magic(directory)
        ]
        self._watch: DirectoryWatch | None = None
        self._followed: dict[tuple[int, int], _FollowedFile] = {}
        self._open_budget = open_file_budget()
        self._first_pass = True
        self._paths: list[str] = []
        self._paths_checked_at = -GLOB_REFRESH_S
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards state for readers on other threads

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Follow in a daemon thread; ``on_change`` is called from it after each batch."""
        if on_change is not None:
            self._on_change = on_change
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="bedrock-top-logtail", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for followed in self._followed.values():
            self._close_file(followed)
        self._followed.clear()

    def _run(self) -> None:
        watch = DirectoryWatch.create() if self._notifications else None
        self._watch = watch
        try:
            while not self._stop.is_set():
                passed_at = time.monotonic()
                try:
                    self.poll()
                except Exception as err:  # a tail must never die: report and keep polling
                    with self._lock:
                        self.state.errors["tailer"] = f"{type(err).__name__}: {err}"
                if watch is None:
                    # A plain sleep, not Event.wait: a timed wait on a condition costs more
                    # than twice the CPU per wake-up. stop() waits for it.
                    time.sleep(self._poll_interval)
                    continue
                if watch.wait(self._wait_s(watch)):
                    self._paths_checked_at = -GLOB_REFRESH_S  # names changed: expand again
                # Under a stream of writes, at most one pass per poll interval.
                rest = passed_at + self._poll_interval - time.monotonic()
                if rest > 0 and not self._stop.is_set():
                    time.sleep(rest)
        finally:
            self._watch = None
            if watch is not None:
                watch.close()

    def _wait_s(self, watch: DirectoryWatch) -> float:
        """How long to sleep if nothing changes: long while every directory is watched, short
        while one is missing (or its name has glob characters) or a rotated file is still read
        (writes to a deleted file make no event)."""
        complete = watch.watch(self._watchable) and len(self._watchable) == len(self.patterns)
        if complete and all(f.gone_since is None for f in self._followed.values()):
            return IDLE_PASS_S
        return self._poll_interval

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return self.state.as_dict()

    # -- catch-up in parts ------------------------------------------------------------------
    def open_for_catch_up(self, recent_epoch: float | None = None) -> list[CatchUpRange]:
        """Open every file present now, as the first pass would, without reading: the range
        of each that the catch-up must read, and (with ``recent_epoch``) where its newest
        part starts. The next ``poll()`` reads from each file's offset, which
        ``skip_to`` moves when another reader takes a range."""
        self._paths = self._expand()
        self._paths_checked_at = time.monotonic()
        ranges: list[CatchUpRange] = []
        for path in self._paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                self._error(path, err)
                continue
            identity = (info.st_dev, info.st_ino)
            followed = self._followed.get(identity) or self._open(path, identity)
            if followed is None or followed.fd is None:
                continue
            fd = followed.fd
            size = os.fstat(fd).st_size
            recent = followed.offset
            if recent_epoch is not None and size > followed.offset:
                recent = max(followed.offset, find_start_offset(fd, size, recent_epoch))
            ranges.append(CatchUpRange(path, identity, followed.offset, recent, size))
        self._first_pass = False
        return ranges

    def skip_to(self, identity: tuple[int, int], offset: int) -> None:
        """Continue a file at ``offset`` (a line start): what comes before it is read
        elsewhere. Line numbers stay counted from the file's start."""
        followed = self._followed.get(identity)
        if followed is None:
            return
        followed.offset = followed.start_offset = offset
        followed.partial = b""
        followed.discarding = False
        followed.lines_since_start = 0
        followed.line_base = 0 if offset == 0 else None
        with self._lock:
            self.state.files[followed.path] = offset

    def read_range(
        self,
        part: CatchUpRange,
        start: int,
        end: int,
        on_block: Callable[[int], None] | None = None,
    ) -> int:
        """Read ``[start, end)`` of one file (line starts) through this tailer's parsing and
        accounting, for a reader of one part of a catch-up; ``on_block(bytes)`` after each
        block. Returns the records read."""
        try:
            fd = os.open(part.path, os.O_RDONLY)
        except OSError as err:
            self._error(part.path, err)
            return 0
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != part.identity:
                return 0  # replaced since the range was planned: the main tailer reads it
            followed = _FollowedFile(part.path, fd, part.identity, start)
            return self._drain(followed, end, on_block)
        finally:
            os.close(fd)

    def absorb_earlier_state(self, earlier: LogSourceState) -> None:
        """Counts of a part of the logs read elsewhere, just before what this tailer read:
        the totals add up, and rejections keep the order they had in the files."""
        with self._lock:
            state = self.state
            state.lines_read += earlier.lines_read
            state.records += earlier.records
            rejected = Counter(earlier.rejected)
            rejected.update(state.rejected)
            state.rejected = rejected
            examples = deque(earlier.rejected_examples, maxlen=state.rejected_examples.maxlen)
            examples.extend(state.rejected_examples)
            state.rejected_examples = examples
            for path, error in earlier.errors.items():
                state.errors.setdefault(path, error)

    # -- one pass -------------------------------------------------------------------------------
    def poll(self, now_monotonic: float | None = None) -> int:
        """Read whatever is new in every followed file. Returns the number of records read."""
        clock = now_monotonic if now_monotonic is not None else time.monotonic()
        if clock - self._paths_checked_at >= GLOB_REFRESH_S or self._first_pass:
            self._paths = self._expand()
            self._paths_checked_at = clock
        current: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
        for path in self._paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                self._error(path, err)
                continue
            reason = not_regular_reason(info.st_mode)
            if reason is not None:
                self._problem(path, reason)
                continue
            current[(info.st_dev, info.st_ino)] = (path, info)
        total = 0
        # Files no longer reachable by any matching path were rotated away or deleted: read them
        # first, and keep reading them for ROTATE_WAIT_S, since writers notice a rotation only
        # at their next identity check and may append a few more lines to the old file.
        for identity in [key for key in self._followed if key not in current]:
            followed = self._followed[identity]
            total += self._drain(followed)
            if followed.gone_since is None:
                followed.gone_since = clock
                with self._lock:
                    self.state.files.pop(followed.path, None)
            elif clock - followed.gone_since >= ROTATE_WAIT_S or followed.fd is None:
                del self._followed[identity]
                self._close_file(followed)
        for identity, (path, info) in current.items():
            known = self._followed.get(identity)
            if known is not None and known.fd is None:
                if info.st_size == known.offset and info.st_mtime_ns == known.mtime_ns:
                    continue  # closed for being idle, and still unchanged
                if not self._reopen(known, path):
                    continue
            if known is None:
                known = self._open(path, identity)
            if known is None:
                continue
            known.path = path
            known.gone_since = None
            total += self._drain(known)
        self._first_pass = False
        return total

    def _open_fd(self, path: str) -> int:
        """A non-blocking read descriptor, closing an idle log first when the budget is spent
        (or the process ran out of descriptors)."""
        if sum(f.fd is not None for f in self._followed.values()) >= self._open_budget:
            self._close_idlest()
        try:
            return os.open(path, _OPEN_FLAGS)
        except OSError as err:
            if err.errno not in (errno.EMFILE, errno.ENFILE) or not self._close_idlest():
                raise
            return os.open(path, _OPEN_FLAGS)

    def _close_idlest(self) -> bool:
        """Close the open log that has been quiet longest (rotated files being drained last).
        Returns whether one was closed."""
        candidates = [f for f in self._followed.values() if f.fd is not None]
        if not candidates:
            return False
        idlest = min(candidates, key=lambda f: (f.gone_since is not None, f.active_at))
        self._close_file(idlest)
        return True

    @staticmethod
    def _close_file(followed: _FollowedFile) -> None:
        if followed.fd is not None:
            os.close(followed.fd)
            followed.fd = None

    def _reopen(self, followed: _FollowedFile, path: str) -> bool:
        """Open a log closed for being idle again, if ``path`` still names the same file."""
        try:
            fd = self._open_fd(path)
        except OSError as err:
            self._error(path, err)
            return False
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != followed.identity:  # replaced meanwhile: next pass
            os.close(fd)
            return False
        followed.fd = fd
        return True

    def _expand(self) -> list[str]:
        paths: list[str] = []
        waiting: list[str] = []
        for pattern in self.patterns:
            if glob.has_magic(pattern):
                paths.extend(sorted(glob.glob(pattern)))
            else:
                paths.append(pattern)
                if not os.path.exists(pattern):
                    waiting.append(pattern)
        with self._lock:
            self.state.waiting_for = waiting
        return list(dict.fromkeys(paths))

    def _open(self, path: str, identity: tuple[int, int]) -> _FollowedFile | None:
        try:
            fd = self._open_fd(path)
        except OSError as err:
            self._error(path, err)
            return None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != identity:  # replaced between stat and open: next pass
            os.close(fd)
            return None
        reason = not_regular_reason(info.st_mode)
        if reason is not None:
            os.close(fd)
            self._problem(path, reason)
            return None
        offset = 0
        # Files present at start-up are entered at the window the views need; files that appear
        # later are new and read whole.
        if self._first_pass and self._start_epoch is not None and info.st_size > 0:
            offset = find_start_offset(fd, info.st_size, self._start_epoch)
        followed = _FollowedFile(path, fd, identity, offset)
        self._followed[identity] = followed
        with self._lock:
            self.state.errors.pop(path, None)
            self.state.files[path] = offset
        return followed

    def _error(self, path: str, err: OSError) -> None:
        self._problem(path, f"{err.strerror or type(err).__name__} ({path})")

    def _problem(self, path: str, message: str) -> None:
        with self._lock:
            self.state.errors[path] = message

    def _drain(
        self,
        followed: _FollowedFile,
        end: int | None = None,
        on_block: Callable[[int], None] | None = None,
    ) -> int:
        """Read a file from its offset to its current end (or to ``end``, a line start)."""
        fd = followed.fd
        if fd is None:
            return 0
        try:
            info = os.fstat(fd)
        except OSError as err:
            self._error(followed.path, err)
            return 0
        size = info.st_size
        followed.mtime_ns = info.st_mtime_ns
        if end is not None:
            size = min(size, end)
        if size == followed.offset:
            return 0  # the common case while idle: nothing new, nothing to record
        followed.active_at = time.monotonic()
        if size < followed.offset:  # truncated in place: the file starts again
            followed.offset = followed.start_offset = 0
            followed.partial = b""
            followed.discarding = False
            followed.lines_since_start = 0
            followed.line_base = 0
        total = 0
        while followed.offset < size:
            try:
                block = os.pread(fd, min(READ_BYTES, size - followed.offset), followed.offset)
            except OSError as err:
                self._error(followed.path, err)
                break
            if not block:
                break
            followed.offset += len(block)
            total += self._consume(followed, block)
            if on_block is not None:
                on_block(len(block))
        if followed.gone_since is None:
            with self._lock:
                self.state.files[followed.path] = followed.offset
        return total

    def _consume(self, followed: _FollowedFile, block: bytes) -> int:
        if followed.discarding:
            newline = block.find(b"\n")
            if newline < 0:
                return 0
            followed.discarding = False
            followed.lines_since_start += 1
            block = block[newline + 1 :]
        data = followed.partial + block if followed.partial else block
        cut = data.rfind(b"\n") + 1
        followed.partial = data[cut:]
        if len(followed.partial) > MAX_LINE_BYTES:
            # A line this long is not a record: note it once and drop it as it streams past, so
            # a 10 MB line never sits in memory.
            line = followed.lines_since_start + data.count(b"\n", 0, cut) + 1
            self._reject(followed, line, "line too long", f"over {MAX_LINE_BYTES} bytes")
            followed.partial = b""
            followed.discarding = True
        if cut == 0:
            return 0
        records, rejections, line_count = parse_block(data, cut)
        first_line = followed.lines_since_start
        followed.lines_since_start += line_count
        for rejection in rejections:
            self._reject(
                followed, first_line + rejection.line_index + 1, rejection.reason, rejection.detail
            )
        with self._lock:
            self.state.lines_read += line_count
            self.state.records += len(records)
        if records:
            self._on_records(records)
            if self._on_change is not None:
                self._on_change()
        return len(records)

    def _reject(self, followed: _FollowedFile, line: int, reason: str, detail: str) -> None:
        self.count_rejected(reason, followed.line_number(line), detail)

    def count_rejected(self, reason: str, where: str, detail: str) -> None:
        """Count a line that was read but not kept (also for checks made after parsing, such as
        a timestamp in the future)."""
        with self._lock:
            self.state.rejected[reason] += 1
            self.state.rejected_examples.append(RejectedLine(where, reason, detail))

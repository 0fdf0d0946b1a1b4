"""Reading part of the usage logs in another process: the older half of a large catch-up (so
that a second core decodes while the first does the newer half), or the live screen's history
behind its first frame.

The other process reads its byte ranges through a tailer of its own into a store of its own
and hands both back; the caller merges them in front of what it read itself
(``Store.absorb_earlier``, ``LogTailer.absorb_earlier_state``), which gives the numbers one
reader of the whole would have. Nothing here touches the caller's store: merging is the
caller's, on its own thread.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from monitor.groups import GroupIndex, ingest_usage
from monitor.records import UsageRecord
from monitor.sources.logtail import CatchUpRange, LogSourceState, LogTailer, line_start_after
from monitor.store import Store

# Below this much to read, a second process costs more than it saves (starting it and moving
# its store back take tens of milliseconds).
SPLIT_MIN_BYTES = 48 * 1024 * 1024
# The history behind the live screen runs this much nicer than the screen: on an idle core it
# reads as fast as ever; on a busy machine the screen (and everything else) comes first.
BACKGROUND_NICENESS = 5


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a catch-up ingests. Each block brings
    thousands of young objects that the collector would scan again and again (about a fifth of
    a catch-up's time), and ingest makes no reference cycles: memory is still freed at once,
    by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Part:
    """``[start, end)`` of one file."""

    range: CatchUpRange
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def split_older_half(ranges: Sequence[CatchUpRange]) -> tuple[list[Part], dict[int, int]]:
    """The first half, by bytes, of what the ranges hold (in reading order), cut at a line
    start; and for each range index where the rest begins."""
    total = sum(part.end - part.start for part in ranges)
    wanted = total // 2
    older: list[Part] = []
    resume: dict[int, int] = {}
    for index, part in enumerate(ranges):
        size = part.end - part.start
        if wanted <= 0:
            break
        if size <= wanted:
            older.append(Part(part, part.start, part.end))
            resume[index] = part.end
            wanted -= size
            continue
        cut = min(part.end, line_start_after(part.path, part.start + wanted))
        if cut > part.start:
            older.append(Part(part, part.start, cut))
            resume[index] = cut
        wanted = 0
    return older, resume


class SideReader:
    """Reads parts of the logs into a store in a child process. ``bytes_done`` and
    ``records_done`` can be read from any thread while it runs."""

    def __init__(
        self,
        parts: Sequence[Part],
        *,
        since: float | None,
        group_by: str,
        now: float,
        method: str | None = None,
        group_dimensions: Sequence[str] = ("app", "caller"),
        background: bool = False,
        minute_sketches: bool = True,
    ) -> None:
        """``background``: the reader yields the CPU to everything else (the live screen's
        history, which must not slow the screen in front of it on a busy machine)."""
        self.parts = list(parts)
        self.bytes_total = sum(part.size for part in self.parts)
        # fork is the cheapest start, but only safe while this process has a single thread.
        chosen = method or ("fork" if threading.active_count() == 1 else "spawn")
        context: Any = multiprocessing.get_context(chosen)
        self._bytes = context.Value("q", 0, lock=False)
        self._records = context.Value("q", 0, lock=False)
        receiver, sender = context.Pipe(duplex=False)
        self._receiver: Connection = receiver
        self._process = context.Process(
            target=_read_parts,
            args=(
                self.parts,
                since,
                group_by,
                tuple(group_dimensions),
                now,
                sender,
                self._bytes,
                self._records,
                background,
                minute_sketches,
            ),
            name="bedrock-top-history",
            daemon=True,
        )
        self._process.start()
        sender.close()
        self._result: tuple[Store, LogSourceState, GroupIndex] | None = None
        self._error: str | None = None

    @property
    def bytes_done(self) -> int:
        return int(self._bytes.value)

    @property
    def records_done(self) -> int:
        return int(self._records.value)

    def ready(self) -> bool:
        """True once the result (or a failure) has arrived; never blocks."""
        if self._result is not None or self._error is not None:
            return True
        try:
            if not self._receiver.poll():
                if not self._process.is_alive() and not self._receiver.poll():
                    self._error = f"the reader process ended with status {self._process.exitcode}"
                    return True
                return False
        except (EOFError, OSError) as err:
            self._error = f"the reader process went away ({err})"
            return True
        self._receive()
        return True

    def result(self) -> tuple[Store, LogSourceState, GroupIndex]:
        """Wait for the store, the counts and the groups. Raises RuntimeError if the reader
        failed."""
        if self._result is None and self._error is None:
            self._receive()
        if self._result is None:
            raise RuntimeError(self._error or "the reader process failed")
        return self._result

    def _receive(self) -> None:
        try:
            kind, payload = pickle.loads(self._receiver.recv_bytes())
        except (EOFError, OSError) as err:
            self._error = f"the reader process went away ({err})"
        else:
            if kind == "ok":
                self._result = payload
            else:
                self._error = str(payload)
        finally:
            self._process.join(timeout=5)
            self._receiver.close()

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=2)


def _read_parts(
    parts: list[Part],
    since: float | None,
    group_by: str,
    group_dimensions: tuple[str, ...],
    now: float,
    sender: Connection,
    bytes_done: Any,
    records_done: Any,
    background: bool = False,
    minute_sketches: bool = True,
) -> None:
    try:
        if background:
            os.nice(BACKGROUND_NICENESS)
        store = Store(since=since, group_by=group_by, minute_sketches=minute_sketches)
        groups = GroupIndex(group_dimensions, since=since)

        def ingest(batch: list[UsageRecord]) -> None:
            ingest_usage(store, groups, batch, now)

        tailer = LogTailer([], ingest)

        def progress(size: int) -> None:
            bytes_done.value += size
            records_done.value = tailer.state.records

        with collector_paused():
            for part in parts:
                tailer.read_range(part.range, part.start, part.end, progress)
        payload: tuple[str, object] = ("ok", (store, tailer.state, groups))
    except Exception as err:  # reported to the parent, which reads the range itself
        payload = ("error", f"{type(err).__name__}: {err}")
    try:
        sender.send_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers or flushes inherited from the parent

"""The local source end to end: usage logs -> tailer -> store.

The tailer parses in its own thread and queues batches; the consumer (the screen's event loop,
or the headless report) drains the queue into the store on its own thread, so the store is only
ever touched by one thread and needs no locks.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from monitor.columns import Columns
from monitor.groups import GroupIndex, ingest_usage
from monitor.records import UsageRecord
from monitor.sources.catchup import (
    SPLIT_MIN_BYTES,
    Part,
    SideReader,
    collector_paused,
    split_older_half,
)
from monitor.sources.logtail import LogTailer
from monitor.store import Store

DAY_S = 24 * 3600
# A record this far ahead of the clock is a clock or unit bug (or a forgery), not a request: it
# would sit in every window and budget until the clock caught up. Writers' clocks may be a
# little ahead of this host's.
FUTURE_TOLERANCE_S = 300.0
FUTURE_REASON = "ts in the future"
# The live screen reads this much of the newest history before its first frame; the rest is
# read behind it unless it is smaller than HISTORY_MIN_BYTES.
RECENT_FIRST_S = 5 * 60
HISTORY_MIN_BYTES = 8 * 1024 * 1024


class LocalFeed:
    """Usage logs followed into a :class:`Store`."""

    def __init__(
        self,
        patterns: Iterable[str],
        *,
        since: float | None,
        start_epoch: float | None = None,
        clock: Callable[[], float] = time.time,
        minute_sketches: bool = True,
    ) -> None:
        """``since`` starts the report window; ``start_epoch`` is the oldest time any view needs
        (budget periods, the 24-hour charts) and decides where the tailer enters each file.
        ``minute_sketches``: keep per-minute latency sketches (the screen's charts; the headless
        report prints none)."""
        self.clock = clock
        # The head of the store's records is kept until the history before them is merged.
        self.store = Store(since=since, keeps_head=True, minute_sketches=minute_sketches)
        # Per app and per caller, beside the per-model store (the report's apps and callers,
        # the grouped overview).
        self.groups = GroupIndex(since=since)
        self.history: SideReader | None = None
        self._queue: queue.SimpleQueue[list[UsageRecord]] = queue.SimpleQueue()
        entry = start_epoch if start_epoch is not None else since
        if since is not None and entry is not None:
            entry = min(entry, since)
        self._direct = False
        self.tailer = LogTailer(patterns, self._on_records, start_epoch=entry)
        # Model ids seen so far, and whether the last batch brought one: kept by the tailer's
        # thread (or the catch-up's), never read by the consumer.
        self._models_seen: set[str] = set()
        self._new_model = False
        self._wake: Callable[[bool], None] | None = None

    def _on_records(self, batch: list[UsageRecord]) -> None:
        columns = Columns(batch)
        # The common case at C speed: nothing near the cut-off (datetimes and POSIX seconds
        # may differ by a microsecond in rounding; the exact check decides near it).
        if columns.epochs and max(columns.epochs) > self.clock() + FUTURE_TOLERANCE_S - 1.0:
            batch = self._without_future(batch)
            if not batch:
                return
            columns = Columns(batch)
        if self._direct:  # the catch-up: models are noted once it is over, not per record
            ingest_usage(self.store, self.groups, batch, self.clock(), columns)
            return
        seen = self._models_seen
        for record in batch:
            if record.model_id not in seen:
                seen.add(record.model_id)
                self._new_model = True
        self._queue.put(batch)

    def _without_future(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        """``batch`` without records stamped more than ``FUTURE_TOLERANCE_S`` after now; those
        are counted as rejected lines with their reason."""
        cutoff = datetime.fromtimestamp(self.clock() + FUTURE_TOLERANCE_S, tz=UTC)
        kept = []
        for record in batch:
            if record.ts > cutoff:
                self.tailer.count_rejected(
                    FUTURE_REASON,
                    f"request {record.request_id or '(no id)'}",
                    f"ts {record.ts.isoformat()} is more than {FUTURE_TOLERANCE_S:.0f} s ahead "
                    "of this host's clock",
                )
            else:
                kept.append(record)
        return kept

    def _batch_queued(self) -> None:
        new_model, self._new_model = self._new_model, False
        if self._wake is not None:
            self._wake(new_model)

    def catch_up(self, split_min_bytes: int = SPLIT_MIN_BYTES) -> int:
        """Read every file to its current end, ingesting batch by batch so that memory holds
        one read block of records at a time, not the whole backlog. With more than
        ``split_min_bytes`` to read and a second core, the older half is read by another
        process at the same time and merged in front."""
        before = self.store.stats.accepted
        ranges = self.tailer.open_for_catch_up()
        side = None
        if sum(part.end - part.start for part in ranges) >= split_min_bytes and _cores() > 1:
            older, resume = split_older_half(ranges)
            side = self._side_reader(older)
            if side is not None:
                for index, offset in resume.items():
                    self.tailer.skip_to(ranges[index].identity, offset)
        self._read_here()
        if side is not None:
            self._absorb(side)
        self.store.stop_keeping_head()
        return self.store.stats.accepted - before + self.drain()

    def catch_up_recent(self, recent_s: float, history_min_bytes: int = HISTORY_MIN_BYTES) -> int:
        """The live screen's start: read only the last ``recent_s`` seconds of each file now,
        and the history before them in another process (``history``), merged by
        ``finish_history`` when it is done. A short history is read now, whole."""
        before = self.store.stats.accepted
        ranges = self.tailer.open_for_catch_up(recent_epoch=self.clock() - recent_s)
        older = [Part(part, part.start, part.recent) for part in ranges if part.recent > part.start]
        if sum(part.size for part in older) >= history_min_bytes:
            self.history = self._side_reader(older, background=True)
            if self.history is not None:
                for part in older:
                    self.tailer.skip_to(part.range.identity, part.end)
        self._read_here()
        if self.history is None:
            self.store.stop_keeping_head()
        return self.store.stats.accepted - before + self.drain()

    def history_progress(self) -> tuple[int, int, int] | None:
        """While the history is read: (records read, bytes read, bytes in all)."""
        history = self.history
        if history is None:
            return None
        return history.records_done, history.bytes_done, history.bytes_total

    def finish_history(self) -> bool:
        """Merge the history once it has been read; True when that happened now. Call from the
        consumer's thread only (it changes the store)."""
        history = self.history
        if history is None or not history.ready():
            return False
        self.drain()
        self._absorb(history)
        self.history = None
        self.store.stop_keeping_head()
        return True

    def _side_reader(self, parts: list[Part], background: bool = False) -> SideReader | None:
        try:
            return SideReader(
                parts,
                since=self.store.since,
                group_by=self.store.group_by,
                now=self.clock(),
                group_dimensions=self.groups.dimensions,
                background=background,
                minute_sketches=self.store.minute_sketches,
            )
        except (OSError, ValueError, RuntimeError):
            return None  # no second process here: this one reads everything

    def _read_here(self) -> None:
        self._direct = True
        try:
            with collector_paused():
                self.tailer.poll()
        finally:
            self._direct = False
            # The models of the catch-up are on screen from the start.
            self._models_seen.update(self.store.model_ids())

    def _absorb(self, side: SideReader) -> None:
        now = self.clock()
        try:
            earlier, state, earlier_groups = side.result()
        except RuntimeError as err:
            # Read the parts here instead: the same numbers, only later.
            with self.tailer._lock:
                self.tailer.state.errors["history"] = f"{err}; read in the main process"
            earlier = Store(
                since=self.store.since,
                group_by=self.store.group_by,
                minute_sketches=self.store.minute_sketches,
            )
            earlier_groups = GroupIndex(self.groups.dimensions, since=self.groups.since)

            def ingest(batch: list[UsageRecord]) -> None:
                ingest_usage(earlier, earlier_groups, batch, now)

            reader = LogTailer([], ingest)
            for part in side.parts:
                reader.read_range(part.range, part.start, part.end)
            state = reader.state
        replaced = self.store.absorb_earlier(earlier, now)
        self.groups.absorb_earlier(earlier_groups, now, replaced)
        self.tailer.absorb_earlier_state(state)
        self._models_seen.update(self.store.model_ids())

    def start(self, wake: Callable[[bool], None] | None = None) -> None:
        """Follow the logs in a background thread; ``wake(new_model)`` is called (from that
        thread) after each batch is queued, ``new_model`` telling whether the batch brought a
        model id not seen before."""
        self._wake = wake
        self.tailer.start(on_change=self._batch_queued)

    def drain(self) -> int:
        """Ingest queued batches. Call from the consumer's thread only."""
        now = self.clock()
        ingested = 0
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            ingested += ingest_usage(self.store, self.groups, batch, now)
        self.store.prune(now)
        return ingested

    def stop(self) -> None:
        if self.history is not None:
            self.history.stop()
            self.history = None
        self.tailer.stop()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

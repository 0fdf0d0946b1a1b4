"""The local source end to end: usage logs -> tailer -> store.

The tailer parses in its own thread and queues batches; the consumer (the screen's event loop,
or the headless report) drains the queue into the store on its own thread, so the store is only
ever touched by one thread and needs no locks.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from monitor.groups import GroupIndex
from monitor.records import UsageRecord
from monitor.sources.logtail import LogTailer
from monitor.store import Store

DAY_S = 24 * 3600
# A record this far ahead of the clock is a clock or unit bug (or a forgery), not a request: it
# would sit in every window and budget until the clock caught up. Writers' clocks may be a
# little ahead of this host's.
FUTURE_TOLERANCE_S = 300.0
FUTURE_REASON = "ts in the future"


class LocalFeed:
    """Usage logs followed into a :class:`Store`."""

    def __init__(
        self,
        patterns: Iterable[str],
        *,
        since: float | None,
        start_epoch: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``since`` starts the report window; ``start_epoch`` is the oldest time any view needs
        (budget periods, the 24-hour charts) and decides where the tailer enters each file."""
        self.clock = clock
        self.store = Store(since=since)
        # Per app and per caller, beside the per-model store (the report's apps and callers,
        # the grouped overview).
        self.groups = GroupIndex(since=since)
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
        batch = self._without_future(batch)
        if not batch:
            return
        if self._direct:  # the catch-up: models are noted once it is over, not per record
            now = self.clock()
            self.store.ingest(batch, now)
            self.groups.ingest(batch, now)
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
        if not any(record.ts > cutoff for record in batch):  # the common case, at C speed
            return batch
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

    def catch_up(self) -> int:
        """Read every file to its current end on this thread, ingesting batch by batch so that
        memory holds one read block of records at a time, not the whole backlog."""
        before = self.store.stats.accepted
        self._direct = True
        try:
            self.tailer.poll()
        finally:
            self._direct = False
            # The models of the catch-up are on screen from the start.
            self._models_seen.update(self.store.model_ids())
        return self.store.stats.accepted - before + self.drain()

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
            ingested += self.store.ingest(batch, now)
            self.groups.ingest(batch, now)
        self.store.prune(now)
        return ingested

    def stop(self) -> None:
        self.tailer.stop()

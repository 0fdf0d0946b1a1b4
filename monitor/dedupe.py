"""Repeated request ids: the last record of a request id wins. Pure, no I/O.

A writer that repeats a line, or a log read twice, brings a request id again within seconds. The
ids of at least the last ``DEDUP_WINDOW`` records (at most that plus ``GENERATION_SIZE`` plus one
batch) are remembered, so memory does not grow with the log; a record repeated further apart
than that is counted twice. The per-model store and the app and caller groups each keep one
:class:`RecentIds`, so both replace the same records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import compress
from operator import is_not
from typing import Final

import msgspec

from monitor.records import UsageRecord

DEDUP_WINDOW: Final = 20_000
# Batches of request ids are remembered together until a dict holds this many.
GENERATION_SIZE: Final = DEDUP_WINDOW // 2

_RECORDS_ENCODER: Final = msgspec.msgpack.Encoder()
_RECORDS_DECODER: Final = msgspec.msgpack.Decoder(list[UsageRecord])


class RecentIds:
    """The records of the most recent request ids, in batches ("generations").

    With ``keeps_head``, the first ``DEDUP_WINDOW`` ids are kept too, so that what was read of a
    later part of the log can be merged after an earlier part (:meth:`absorb_earlier`) with the
    repeats across the seam replaced, as one reader of both parts in order would have.
    """

    __slots__ = ("_count", "_generations", "head", "keeps_head")

    def __init__(self, keeps_head: bool = False) -> None:
        self._generations: deque[dict[str, UsageRecord]] = deque()
        self._count = 0
        self.keeps_head = keeps_head
        self.head: set[str] = set()

    def __len__(self) -> int:
        """How many ids are remembered."""
        return self._count

    def generation_sizes(self) -> list[int]:
        """How many ids each remembered batch holds, oldest first."""
        return [len(generation) for generation in self._generations]

    def is_fresh(self, by_id: dict[str, UsageRecord], size: int) -> bool:
        """Whether a batch of ``size`` records, ``by_id`` its records by request id, repeats no
        id (in itself or before) and has none missing: checked at C speed (dict views walk the
        smaller side)."""
        return (
            len(by_id) == size
            and "" not in by_id
            and all(seen.keys().isdisjoint(by_id.keys()) for seen in self._generations)
        )

    def replaced(
        self,
        request_ids: Sequence[str],
        records: Sequence[UsageRecord],
        by_id: dict[str, UsageRecord],
    ) -> list[UsageRecord]:
        """The earlier records that this batch's records replace, in the batch's order: one for
        every record whose id was seen before, earlier in the batch or within the window. Call
        before :meth:`remember` of the batch. ``by_id``: the batch's records by request id (the
        last of each), as :meth:`is_fresh` and :meth:`remember` take them."""
        suspects: set[str] = set()
        if len(by_id) < len(request_ids):
            # A record that is not its id's last in the batch is repeated later in it (found
            # with C loops: most of a catch-up's blocks hold a repeated line or two).
            suspects.update(
                compress(request_ids, map(is_not, map(by_id.__getitem__, request_ids), records))
            )
        for seen in self._generations:
            suspects.update(seen.keys() & by_id.keys())
        suspects.discard("")
        if not suspects:
            return []
        # Only the suspects' records are looked at, found at C speed.
        at = list(compress(range(len(request_ids)), map(suspects.__contains__, request_ids)))
        this_batch: dict[str, UsageRecord] = {}
        taken_back: list[UsageRecord] = []
        for index in at:
            request_id = request_ids[index]
            previous = this_batch.get(request_id) or self.previous(request_id)
            if previous is not None:
                taken_back.append(previous)
            this_batch[request_id] = records[index]
        return taken_back

    def previous(self, request_id: str) -> UsageRecord | None:
        for seen in reversed(self._generations):
            found = seen.get(request_id)
            if found is not None:
                return found
        return None

    def remember(self, by_id: dict[str, UsageRecord]) -> None:
        """Remember a batch's records by request id (the empty id left out)."""
        by_id.pop("", None)
        if self.keeps_head and len(self.head) < DEDUP_WINDOW:
            self.head.update(by_id)
        # Generations of whole batches, newest last, dropped oldest first once the rest still
        # holds DEDUP_WINDOW: no per-record bookkeeping. Batches are merged into the newest
        # generation until it holds GENERATION_SIZE (half the window), so that the check of a
        # batch looks up each id in three dicts or four: each lookup in a cold dict is a cache
        # miss, and the catch-up's batches of about 2,000 records, kept one dict each, made it
        # ten. The live feed's batches of a few records merge the same way.
        generations = self._generations
        newest = generations[-1] if generations else None
        if newest is not None and len(newest) < GENERATION_SIZE:
            before = len(newest)
            newest.update(by_id)
            self._count += len(newest) - before
        else:
            generations.append(by_id)
            self._count += len(by_id)
        while self._count - len(generations[0]) >= DEDUP_WINDOW:
            self._count -= len(generations.popleft())

    def absorb_earlier(self, earlier: RecentIds) -> list[UsageRecord]:
        """Take in the ids of the part read just before this one's; returns the earlier
        records that this part's first records replace (see the class)."""
        replaced = [
            previous
            for request_id in self.head
            if (previous := earlier.previous(request_id)) is not None
        ]
        generations = self._generations
        for generation in reversed(earlier._generations):
            if self._count >= DEDUP_WINDOW:
                break
            generations.appendleft(generation)
            self._count += len(generation)
        if self.keeps_head:
            self.head = (
                earlier.head | self.head if len(earlier.head) < DEDUP_WINDOW else set(earlier.head)
            )
        return replaced

    def stop_keeping_head(self) -> None:
        """Once nothing more will be merged before these records."""
        self.keeps_head = False
        self.head = set()

    def __getstate__(self) -> tuple[object, ...]:
        """Records are packed with msgpack: pickling tens of thousands of structs one by one
        costs more than reading them did (the ids cross a process boundary with a partial
        store)."""
        packed = [
            (list(generation), _RECORDS_ENCODER.encode(list(generation.values())))
            for generation in self._generations
        ]
        return packed, self._count, self.keeps_head, self.head

    def __setstate__(self, state: tuple[object, ...]) -> None:
        packed, count, keeps_head, head = state
        assert isinstance(packed, list)
        self._generations = deque(
            dict(zip(ids, _RECORDS_DECODER.decode(records), strict=True)) for ids, records in packed
        )
        self._count = count  # type: ignore[assignment]
        self.keeps_head = keeps_head  # type: ignore[assignment]
        self.head = head  # type: ignore[assignment]

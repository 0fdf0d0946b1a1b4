"""Usage grouped by a key of the record (app, caller, and later region or account): pure, no I/O.

The per-model :class:`~monitor.store.Store` stays as it is; a :class:`GroupIndex` beside it keeps,
for each grouping dimension, what the grouped overview and the report's ``apps`` / ``callers``
lists show: totals since the report window's start with their split by model, per-second counts
for the rate window, per-minute latency sketches and per-minute per-model counts for the last
hour (spend). The dimension is a value (a name in :data:`DIMENSIONS`), so a new grouping is one
more entry there, not a copy of this code.

Cardinality is bounded: at most ``max_groups`` groups per dimension (and as many models per
group) are kept; records of any further name are folded into :data:`OTHER`, and the folded names
are counted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from monitor.records import UsageRecord
from monitor.store import (
    ABORTED,
    CACHE_READ,
    CACHE_WRITE,
    CLIENT_ERRORS,
    ESTIMATED,
    INPUT,
    OUTPUT,
    REQUESTS,
    SERVER_ERRORS,
    THROTTLES,
    LatencySketch,
    Percentiles,
    Rates,
    Tally,
    sketch_key,
)

MAX_GROUPS: Final = 200
OTHER: Final = "(other)"
NO_VALUE: Final = "(none)"
SECOND_WINDOW_S: Final = 300  # rates over 1 minute, errors and throttles over 5
MINUTE_WINDOW_S: Final = 3600  # spend over the last hour, the 12-minute latency trend
# Request ids looked at for duplicates (the last record of a request id wins, as in the store).
DEDUP_WINDOW: Final = 20_000
# Folded names are counted exactly up to this many, then reported as "at least".
MAX_COUNTED_FOLDED: Final = 100_000

_WIDTH: Final = 10  # the Tally fields, in order
_STATUS_SLOT: Final[Mapping[str, int]] = {
    "client_error": CLIENT_ERRORS,
    "server_error": SERVER_ERRORS,
    "throttled": THROTTLES,
    "aborted": ABORTED,
}


def _model_key(record: UsageRecord) -> str:
    return record.model_id


def _app_key(record: UsageRecord) -> str:
    return record.app or NO_VALUE


def _caller_key(record: UsageRecord) -> str:
    return record.caller or NO_VALUE


# The grouping dimensions: name -> the key of a record. "model" is the store's own grouping.
DIMENSIONS: Final[Mapping[str, Callable[[UsageRecord], str]]] = {
    "model": _model_key,
    "app": _app_key,
    "caller": _caller_key,
}


def _vector() -> list[int]:
    return [0] * _WIDTH


def _add(vector: list[int], record: UsageRecord, sign: int) -> None:
    vector[REQUESTS] += sign
    vector[INPUT] += sign * record.input_tokens
    vector[OUTPUT] += sign * record.output_tokens
    vector[CACHE_READ] += sign * record.cache_read_input_tokens
    vector[CACHE_WRITE] += sign * record.cache_write_input_tokens
    slot = _STATUS_SLOT.get(record.status)
    if slot is not None:
        vector[slot] += sign
    if record.token_source == "estimate":
        vector[ESTIMATED] += sign


class _Group:
    """Everything kept for one group of one dimension."""

    __slots__ = ("latency", "minutes", "models", "seconds", "total")

    def __init__(self) -> None:
        self.total = _vector()  # since the report window's start
        self.models: dict[str, list[int]] = {}  # the same, split by model
        self.seconds: dict[int, list[int]] = {}
        self.minutes: dict[int, dict[str, list[int]]] = {}  # minute -> model -> counts
        self.latency: dict[int, LatencySketch] = {}  # minute -> successful calls' latency


class _Dimension:
    __slots__ = ("folded_names", "folded_records", "groups", "key")

    def __init__(self, key: Callable[[UsageRecord], str]) -> None:
        self.key = key
        self.groups: dict[str, _Group] = {}
        self.folded_names: set[str] = set()
        self.folded_records = 0


class GroupIndex:
    """Per-group usage for several dimensions, fed the same records as a :class:`Store`.
    Feed it from one thread only."""

    def __init__(
        self,
        dimensions: Sequence[str] = ("app", "caller"),
        *,
        since: float | None = None,
        max_groups: int = MAX_GROUPS,
    ) -> None:
        unknown = [name for name in dimensions if name not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown grouping dimension(s): {', '.join(unknown)}")
        self.since = since
        self.max_groups = max(1, max_groups)
        self.version = 0
        self._dimensions = {name: _Dimension(DIMENSIONS[name]) for name in dimensions}
        self._seen: dict[str, UsageRecord] = {}
        self._seen_order: deque[str] = deque()

    @property
    def dimensions(self) -> list[str]:
        return list(self._dimensions)

    # -- ingest ---------------------------------------------------------------------------------
    def ingest(self, records: Iterable[UsageRecord], now: float) -> None:
        """Add records (any order). A request id seen again replaces the earlier record."""
        seen = self._seen
        changed = False
        for record in records:
            request_id = record.request_id
            if request_id:
                previous = seen.get(request_id)
                if previous is not None:
                    self._apply(previous, -1, now)
                else:
                    self._seen_order.append(request_id)
                seen[request_id] = record
            self._apply(record, 1, now)
            changed = True
        while len(self._seen_order) > DEDUP_WINDOW:
            seen.pop(self._seen_order.popleft(), None)
        if changed:
            self.version += 1
            self.prune(now)

    def _apply(self, record: UsageRecord, sign: int, now: float) -> None:
        epoch = record.ts.timestamp()
        second = int(epoch)
        minute = second // 60
        in_seconds = epoch >= now - SECOND_WINDOW_S
        in_minutes = epoch >= now - MINUTE_WINDOW_S
        in_since = self.since is None or epoch >= self.since
        if not (in_seconds or in_minutes or in_since):
            return
        model_id = record.model_id
        latency_bin = sketch_key(record.latency_ms) if record.status not in _STATUS_SLOT else None
        for dimension in self._dimensions.values():
            group = self._group(dimension, dimension.key(record), sign)
            if in_since:
                _add(group.total, record, sign)
                models = group.models
                model_key = (
                    model_id if model_id in models or len(models) < self.max_groups else OTHER
                )
                _add(models.setdefault(model_key, _vector()), record, sign)
            if in_seconds:
                _add(group.seconds.setdefault(second, _vector()), record, sign)
            if in_minutes:
                per_model = group.minutes.setdefault(minute, {})
                _add(per_model.setdefault(model_id, _vector()), record, sign)
                if latency_bin is not None:
                    sketch = group.latency.get(minute)
                    if sketch is None:
                        sketch = group.latency[minute] = LatencySketch()
                    bins = sketch.bins
                    bins[latency_bin] = bins.get(latency_bin, 0) + sign
                    if bins[latency_bin] <= 0:
                        del bins[latency_bin]
                    if sign > 0 and record.latency_ms > sketch.max:
                        sketch.max = record.latency_ms

    def _group(self, dimension: _Dimension, name: str, sign: int) -> _Group:
        groups = dimension.groups
        group = groups.get(name)
        if group is not None:
            return group
        if len(groups) - (OTHER in groups) >= self.max_groups and name != OTHER:
            if sign > 0:
                dimension.folded_records += 1
                if len(dimension.folded_names) < MAX_COUNTED_FOLDED:
                    dimension.folded_names.add(name)
            name = OTHER
            group = groups.get(name)
            if group is not None:
                return group
        group = groups[name] = _Group()
        return group

    def prune(self, now: float) -> None:
        """Drop per-second and per-minute counts that have left their windows."""
        second_floor = int(now) - SECOND_WINDOW_S
        minute_floor = (int(now) - MINUTE_WINDOW_S) // 60
        for dimension in self._dimensions.values():
            for group in dimension.groups.values():
                for buckets in (group.seconds,):
                    if buckets and min(buckets) < second_floor:
                        for key in [k for k in buckets if k < second_floor]:
                            del buckets[key]
                if group.minutes and min(group.minutes) < minute_floor:
                    for key in [k for k in group.minutes if k < minute_floor]:
                        del group.minutes[key]
                    for key in [k for k in group.latency if k < minute_floor]:
                        del group.latency[key]

    # -- queries --------------------------------------------------------------------------------
    def _dimension(self, dimension: str) -> _Dimension:
        found = self._dimensions.get(dimension)
        if found is None:
            raise KeyError(f"{dimension!r} is not grouped here (grouped: {self.dimensions})")
        return found

    def group_names(self, dimension: str) -> list[str]:
        return sorted(self._dimension(dimension).groups)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        dimension, name = item
        found = self._dimensions.get(str(dimension))
        return found is not None and name in found.groups

    def folded(self, dimension: str) -> tuple[int, int]:
        """(names folded into ``(other)``, records of theirs) for a dimension."""
        found = self._dimension(dimension)
        return len(found.folded_names), found.folded_records

    def since_tally(self, dimension: str, name: str) -> Tally:
        group = self._dimension(dimension).groups.get(name)
        return Tally() if group is None else Tally(*group.total)

    def model_tallies(self, dimension: str, name: str) -> dict[str, Tally]:
        """Each model's share of a group since the report window's start (zero rows left out)."""
        group = self._dimension(dimension).groups.get(name)
        if group is None:
            return {}
        return {model: Tally(*vector) for model, vector in group.models.items() if any(vector)}

    def rates(self, dimension: str, name: str, now: float, window_s: int = 60) -> Rates:
        """Requests per minute and tokens per second over the whole seconds [now - w, now)."""
        sums = self._second_sums(dimension, name, now, window_s)
        return Rates(
            requests_per_min=sums[REQUESTS] * 60.0 / window_s,
            input_tokens_per_s=sums[INPUT] / window_s,
            output_tokens_per_s=sums[OUTPUT] / window_s,
        )

    def failures(self, dimension: str, name: str, now: float, window_s: int = 300) -> Tally:
        """Counts over the last ``window_s`` seconds (errors, throttles)."""
        return Tally(*self._second_sums(dimension, name, now, window_s))

    def _second_sums(self, dimension: str, name: str, now: float, window_s: int) -> list[int]:
        group = self._dimension(dimension).groups.get(name)
        total = _vector()
        if group is None:
            return total
        end = math.ceil(now)
        start = end - min(window_s, SECOND_WINDOW_S)
        for second, vector in group.seconds.items():
            if start <= second < end:
                for index in range(_WIDTH):
                    total[index] += vector[index]
        return total

    def latency(self, dimension: str, name: str, now: float, window_s: int = 300) -> Percentiles:
        """Latency of successful calls over the whole minutes that overlap the window."""
        group = self._dimension(dimension).groups.get(name)
        if group is None:
            return Percentiles()
        last = int(now) // 60
        first = (int(now) - window_s) // 60 + 1
        merged = LatencySketch()
        for minute, sketch in group.latency.items():
            if first <= minute <= last:
                merged.merge(sketch)
        return merged.percentiles()

    def minute_quantiles(
        self, dimension: str, name: str, now: float, q: float, points: int
    ) -> list[float | None]:
        """One latency quantile per minute, oldest first, None where the minute had no call."""
        group = self._dimension(dimension).groups.get(name)
        last = int(now) // 60
        values: list[float | None] = []
        for minute in range(last - points + 1, last + 1):
            sketch = None if group is None else group.latency.get(minute)
            values.append(None if sketch is None else sketch.quantile(q))
        return values

    def model_tallies_between(
        self, dimension: str, name: str, start: float, end: float
    ) -> dict[str, Tally]:
        """Each model's counts over the whole minutes in [start, end) (within the last hour)."""
        group = self._dimension(dimension).groups.get(name)
        if group is None:
            return {}
        first, last = int(start) // 60, math.ceil(end) // 60
        totals: dict[str, list[int]] = {}
        for minute, per_model in group.minutes.items():
            if first <= minute <= last:
                for model, vector in per_model.items():
                    total = totals.setdefault(model, _vector())
                    for index in range(_WIDTH):
                        total[index] += vector[index]
        return {model: Tally(*vector) for model, vector in totals.items() if any(vector)}

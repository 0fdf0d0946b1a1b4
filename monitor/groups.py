"""Usage grouped by a key of the record (app, caller, and later region or account): pure, no I/O.

The per-model :class:`~monitor.store.Store` stays as it is; a :class:`GroupIndex` beside it keeps
what the grouped overview and the report's ``apps`` / ``callers`` lists show: counts since the
report window's start, per second for the rate window, per minute for the last hour (spend, the
latency trend). Each count is kept once, under the record's names in every dimension together
(``(app, caller)``) and its model, so that the ingest cost per record does not grow with the
number of dimensions; a dimension's groups are summed from those cells when a view asks, once per
second at most. The dimension is a value (a name in :data:`DIMENSIONS`), so a new grouping is one
more entry there, not a copy of this code.

Cardinality is bounded: at most ``max_groups`` groups per dimension (and as many models per
group) are kept; records of any further name are folded into :data:`OTHER`, and the folded names
are counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import add, eq, floordiv
from typing import Final

from monitor.columns import Columns
from monitor.dedupe import RecentIds
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
    RunTallies,
    Store,
    Tally,
    add_bins,
    latency_bins,
)

MAX_GROUPS: Final = 200
OTHER: Final = "(other)"
NO_VALUE: Final = "(none)"
SECOND_WINDOW_S: Final = 300  # rates over 1 minute, errors and throttles over 5
MINUTE_WINDOW_S: Final = 3600  # spend over the last hour, the 12-minute latency trend
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
# The record field each dimension's key is read from (the key: the field's value, or NO_VALUE
# where it has none).
DIMENSION_FIELDS: Final[Mapping[str, str]] = {
    "model": "model_id",
    "app": "app",
    "caller": "caller",
}
# Larger than any minute number, and small enough that cell number * stride + minute stays an
# exact float for a million cells.
_CELL_STRIDE: Final = 2.0**33


def _vector() -> list[int]:
    return [0] * _WIDTH


def _merge(total: list[int], vector: list[int]) -> None:
    # Written out: a loop over the ten slots costs three times as much.
    total[0] += vector[0]
    total[1] += vector[1]
    total[2] += vector[2]
    total[3] += vector[3]
    total[4] += vector[4]
    total[5] += vector[5]
    total[6] += vector[6]
    total[7] += vector[7]
    total[8] += vector[8]
    total[9] += vector[9]


def _cell_counts(tier: dict[int, dict[Cell, list[int]]], bucket: int, cell: Cell) -> list[int]:
    """The counts of a cell in one bucket (second or minute) of a tier, made when missing."""
    cells = tier.get(bucket)
    if cells is None:
        cells = tier[bucket] = {}
    vector = cells.get(cell)
    if vector is None:
        vector = cells[cell] = _vector()
    return vector


def _latency_sketch(
    latency: dict[int, dict[Names, LatencySketch]], minute: int, names: Names
) -> LatencySketch:
    """The latency sketch of a group's names in one minute, made when missing."""
    sketches = latency.get(minute)
    if sketches is None:
        sketches = latency[minute] = {}
    sketch = sketches.get(names)
    if sketch is None:
        sketch = sketches[names] = LatencySketch()
    return sketch


def _add(vector: list[int], record: UsageRecord, sign: int) -> None:
    vector[REQUESTS] += sign
    vector[INPUT] += sign * record.input_tokens
    vector[OUTPUT] += sign * record.output_tokens
    if record.cache_read_input_tokens:
        vector[CACHE_READ] += sign * record.cache_read_input_tokens
    if record.cache_write_input_tokens:
        vector[CACHE_WRITE] += sign * record.cache_write_input_tokens
    slot = _STATUS_SLOT.get(record.status)
    if slot is not None:
        vector[slot] += sign
    if record.token_source == "estimate":
        vector[ESTIMATED] += sign


Names = tuple[str, ...]  # a record's group in each dimension, in the index's order
Cell = tuple[Names, str]  # (names, model id)


class _View:
    """One dimension's groups, summed from the cells at one moment."""

    __slots__ = ("hour", "latency", "recent", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, dict[int, list[int]]] = {}  # name -> second -> counts
        self.hour: dict[str, dict[int, dict[str, list[int]]]] = {}  # name -> minute -> model
        self.latency: dict[str, dict[int, LatencySketch]] = {}  # name -> minute -> sketch
        self.recent: set[str] = set()


class GroupIndex:
    """Per-group usage for several dimensions, fed the same records as a :class:`Store`.
    Feed it from one thread only."""

    def __init__(
        self,
        dimensions: Sequence[str] = ("app", "caller"),
        *,
        since: float | None = None,
        max_groups: int = MAX_GROUPS,
        keeps_head: bool = False,
    ) -> None:
        """``keeps_head``: an index of a later part of the log, to be merged after an earlier
        one (see ``RecentIds``)."""
        unknown = [name for name in dimensions if name not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown grouping dimension(s): {', '.join(unknown)}")
        self.since = since
        self.max_groups = max(1, max_groups)
        self.version = 0
        self._names = list(dimensions)
        self._keys = [DIMENSIONS[name] for name in dimensions]
        self._pair = len(self._keys) == 2
        self._kept: list[set[str]] = [set() for _ in dimensions]
        self._folded_names: list[set[str]] = [set() for _ in dimensions]
        self._folded_records = [0] * len(dimensions)
        self._since: dict[Cell, list[int]] = {}
        self._seconds: dict[int, dict[Cell, list[int]]] = {}
        self._minutes: dict[int, dict[Cell, list[int]]] = {}
        self._latency: dict[int, dict[Names, LatencySketch]] = {}
        self._recent_ids = RecentIds(keeps_head)
        # Block ingest: each dimension's raw field value -> its group name (the name, or
        # OTHER once folded; a name's fate never changes once decided), and the cells by
        # number.
        self._fields = [DIMENSION_FIELDS[name] for name in dimensions]
        self._name_of: list[dict[object, str]] = [{} for _ in dimensions]
        self._cell_numbers: dict[Cell, int] = {}
        self._cells: list[Cell] = []
        self._pruned_at = -1
        self._views: dict[str, tuple[int, int, _View]] = {}
        self._since_views: dict[str, tuple[int, dict[str, dict[str, list[int]]]]] = {}

    @property
    def dimensions(self) -> list[str]:
        return list(self._names)

    # -- ingest ---------------------------------------------------------------------------------
    def ingest(
        self,
        records: Iterable[UsageRecord],
        now: float,
        columns: Columns | None = None,
        replaced: list[UsageRecord] | None = None,
        model_totals: dict[str, list[float]] | None = None,
    ) -> None:
        """Add records (any order). A request id seen again replaces the earlier record, as in
        the store (see ``RecentIds``). ``columns``: the records' columns when the caller has
        them; ``replaced``: the earlier records this batch replaces, when a store fed the same
        batches has found them (``Store.last_replaced``): one duplicate check for both.
        ``model_totals``: each model's summed counts of the whole batch, all of it after
        ``since``, when a store has summed them (``Store.last_totals``)."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        block = Columns.of(batch, columns)
        if replaced is None:
            request_ids = block.texts("request_id")
            by_id = dict(zip(request_ids, batch, strict=True))
            recent_ids = self._recent_ids
            fresh = recent_ids.is_fresh(by_id, len(batch))
            replaced = [] if fresh else recent_ids.replaced(request_ids, batch, by_id)
            recent_ids.remember(by_id)
        self._add_block(block, now, model_totals)
        for previous in replaced:  # rare: a repeated line, a log read twice
            self._apply(previous, -1, now)
        self.version += 1
        self.prune(now)

    def stop_keeping_head(self) -> None:
        """Once nothing more will be merged before this index's records."""
        self._recent_ids.stop_keeping_head()

    def _add_block(
        self, block: Columns, now: float, model_totals: dict[str, list[float]] | None = None
    ) -> None:
        """Add a block of records with C loops (see ``Store._apply_block``): split by the side
        of ``since`` and of the hour, and each run of one cell (and minute, within the hour)
        summed once. Records of the last ``SECOND_WINDOW_S`` take the record-by-record path."""
        epochs = block.epochs
        since = -math.inf if self.since is None else self.since
        hour_floor = now - MINUTE_WINDOW_S
        second_floor = now - SECOND_WINDOW_S
        low, high = min(epochs), max(epochs)
        if (
            high < second_floor
            and (low >= since) == (high >= since)
            and (low >= hour_floor) == (high >= hour_floor)
        ):
            in_since, in_hour = low >= since, low >= hour_floor
            if (
                model_totals is None
                or not in_since
                or in_hour
                or not self._add_since_totals(block, model_totals)
            ):
                self._add_part(block, in_since, in_hour)
            return
        latest: list[int] = []
        parts: dict[tuple[bool, bool], list[int]] = {}
        for index, epoch in enumerate(epochs):
            if epoch >= second_floor:
                latest.append(index)
            else:
                parts.setdefault((epoch >= since, epoch >= hour_floor), []).append(index)
        for (in_since, in_hour), indices in parts.items():
            self._add_part(block.subset(indices), in_since, in_hour)
        for index in latest:
            self._apply(block.records[index], 1, now)

    def _add_since_totals(self, block: Columns, model_totals: dict[str, list[float]]) -> bool:
        """The common case of a catch-up, at no cost per record: a batch of one name in every
        dimension (a host's log is one app's), all of it after ``since`` and before the hour,
        whose per-model sums a store has made. False (nothing added) when the names vary."""
        columns = [block.column(field) for field in self._fields]
        if any(column.count(column[0]) != len(column) for column in columns):
            return False
        names = tuple(self._group_names(index, column)[0] for index, column in enumerate(columns))
        since = self._since
        for model_id, totals in model_totals.items():
            cell = (names, model_id)
            vector = since.get(cell)
            if vector is None:
                vector = since[cell] = _vector()
            for slot in range(_WIDTH):
                vector[slot] += int(totals[slot])
        return True

    def _group_names(self, index: int, values: Sequence[object]) -> list[str]:
        """Each record's group in dimension ``index``: its name while there is room for it,
        else ``(other)`` (the name and its records counted as folded), decided in the order
        the names first come, as record by record."""
        name_of = self._name_of[index]
        try:
            names = list(map(name_of.__getitem__, values))
        except KeyError:
            kept = self._kept[index]
            folded = self._folded_names[index]
            for value in dict.fromkeys(values):
                if value in name_of:
                    continue
                name = str(value or NO_VALUE)
                if name in kept or len(kept) < self.max_groups:
                    kept.add(name)
                    name_of[value] = name
                elif len(folded) < MAX_COUNTED_FOLDED:
                    folded.add(name)
                    name_of[value] = OTHER
            # Names past every bound are not remembered (memory stays bounded): theirs is
            # OTHER, found again each time.
            names = [name_of.get(value, OTHER) for value in values]
        if self._folded_names[index]:
            self._folded_records[index] += names.count(OTHER) - values.count(OTHER)
        return names

    def _add_part(self, block: Columns, in_since: bool, in_hour: bool) -> None:
        """Add records all on one side of ``since`` and of the hour."""
        if not (in_since or in_hour):
            return
        dimension_names = [
            self._group_names(index, block.column(field))
            for index, field in enumerate(self._fields)
        ]
        names: Iterable[Names] = (
            zip(*dimension_names, strict=True) if dimension_names else repeat(())
        )
        cells = list(zip(names, block.texts("model_id"), strict=False))
        cell_numbers = self._cell_numbers
        try:
            numbers = list(map(cell_numbers.__getitem__, cells))
        except KeyError:
            for cell in dict.fromkeys(cells):
                if cell not in cell_numbers:
                    cell_numbers[cell] = len(self._cells)
                    self._cells.append(cell)
            numbers = list(map(cell_numbers.__getitem__, cells))
        if in_hour:
            codes: list[float] = list(
                map(
                    add,
                    map(float.__mul__, map(float, numbers), repeat(_CELL_STRIDE)),
                    map(floordiv, block.epochs, repeat(60.0)),
                )
            )
        else:
            codes = list(map(float, numbers))
        runs = RunTallies(block, codes)
        latencies = runs.ordered("latency_ms") if in_hour else []
        for code, start, end in runs.runs(codes):
            run = slice(start, end)
            number = int(code // _CELL_STRIDE) if in_hour else int(code)
            cell = self._cells[number]
            vector = _vector()
            run_statuses = runs.tally(start, end, vector)  # type: ignore[arg-type]
            if in_since:
                total = self._since.get(cell)
                if total is None:
                    total = self._since[cell] = _vector()
                _merge(total, vector)
            if not in_hour:
                continue
            minute = int(code - number * _CELL_STRIDE)
            _merge(_cell_counts(self._minutes, minute, cell), vector)
            # Latency is a property of successful calls.
            run_latencies = latencies[run]
            if len(run_statuses) != run_statuses.count("ok"):
                run_latencies = list(compress(run_latencies, map(eq, run_statuses, repeat("ok"))))
            if run_latencies:
                sketch = _latency_sketch(self._latency, minute, cell[0])
                add_bins(sketch, latency_bins(run_latencies), max(run_latencies))

    def _names_of(self, record: UsageRecord, sign: int) -> Names:
        """The record's group in each dimension: its own name while there is room for it, else
        ``(other)`` (and the name is counted as folded)."""
        names = []
        for index, key in enumerate(self._keys):
            name = key(record)
            kept = self._kept[index]
            if name not in kept:
                if len(kept) < self.max_groups:
                    kept.add(name)
                else:
                    if sign > 0:
                        self._folded_records[index] += 1
                        folded = self._folded_names[index]
                        if len(folded) < MAX_COUNTED_FOLDED:
                            folded.add(name)
                    name = OTHER
            names.append(name)
        return tuple(names)

    def _apply(self, record: UsageRecord, sign: int, now: float) -> None:
        epoch = record.ts.timestamp()
        in_since = self.since is None or epoch >= self.since
        in_minutes = epoch >= now - MINUTE_WINDOW_S
        if not (in_since or in_minutes):
            return
        if self._pair:  # the usual two dimensions, without the general loop
            first, second_name = self._keys[0](record), self._keys[1](record)
            if first in self._kept[0] and second_name in self._kept[1]:
                names: Names = (first, second_name)
            else:
                names = self._names_of(record, sign)
        else:
            names = self._names_of(record, sign)
        cell = (names, record.model_id)
        if in_since:
            vector = self._since.get(cell)
            if vector is None:
                vector = self._since[cell] = _vector()
            _add(vector, record, sign)
        if not in_minutes:
            return
        second = int(epoch)
        minute = second // 60
        _add(_cell_counts(self._minutes, minute, cell), record, sign)
        if epoch >= now - SECOND_WINDOW_S:
            _add(_cell_counts(self._seconds, second, cell), record, sign)
        if record.status not in _STATUS_SLOT:  # latency is a property of successful calls
            _latency_sketch(self._latency, minute, cell[0]).add(record.latency_ms, sign)

    def absorb_earlier(
        self, earlier: GroupIndex, now: float, replaced: list[UsageRecord] | None = None
    ) -> None:
        """Merge the groups of the records that come before this index's (the older part of a
        catch-up, read by another process). A request id in both keeps this index's record, the
        later one, as :meth:`ingest` would have. Names past ``max_groups`` fold into
        ``(other)`` as they would have."""
        if earlier._names != self._names:
            raise ValueError("cannot merge groups of other dimensions")
        renames: list[dict[str, str]] = []
        for index in range(len(self._names)):
            kept = self._kept[index]
            mapping: dict[str, str] = {}
            for name in sorted(earlier._kept[index]):
                if name not in kept and len(kept) < self.max_groups:
                    kept.add(name)
                mapping[name] = name if name in kept else OTHER
            renames.append(mapping)
            self._folded_records[index] += earlier._folded_records[index]
            folded = self._folded_names[index]
            for name in earlier._folded_names[index]:
                if len(folded) < MAX_COUNTED_FOLDED:
                    folded.add(name)

        def renamed(names: Names) -> Names:
            return tuple(renames[i].get(name, name) for i, name in enumerate(names))

        def add_cells(into: dict[Cell, list[int]], cells: dict[Cell, list[int]]) -> None:
            for (names, model_id), vector in cells.items():
                cell = (renamed(names), model_id)
                total = into.get(cell)
                if total is None:
                    total = into[cell] = _vector()
                _merge(total, vector)

        add_cells(self._since, earlier._since)
        for tier, other in ((self._seconds, earlier._seconds), (self._minutes, earlier._minutes)):
            for bucket, cells in other.items():
                add_cells(tier.setdefault(bucket, {}), cells)
        for minute, sketches in earlier._latency.items():
            mine = self._latency.setdefault(minute, {})
            for names, sketch in sketches.items():
                kept_sketch = mine.setdefault(renamed(names), LatencySketch())
                kept_sketch.merge(sketch)
        # Duplicates across the seam: the later record (already here) wins. ``replaced``: the
        # earlier records the store fed the same batches found (see ``ingest``).
        if replaced is None:
            replaced = self._recent_ids.absorb_earlier(earlier._recent_ids)
        for previous in replaced:
            self._apply(previous, -1, now)
        self.version += 1
        self._pruned_at = -1
        self.prune(now)

    def prune(self, now: float) -> None:
        """Drop per-second and per-minute counts that have left their windows (at most once a
        second)."""
        if int(now) <= self._pruned_at:
            return
        self._pruned_at = int(now)
        second_floor = int(now) - SECOND_WINDOW_S
        minute_floor = (int(now) - MINUTE_WINDOW_S) // 60
        for key in [k for k in self._seconds if k < second_floor]:
            del self._seconds[key]
        for tier in (self._minutes, self._latency):
            for key in [k for k in tier if k < minute_floor]:
                del tier[key]

    # -- views ----------------------------------------------------------------------------------
    def _index(self, dimension: str) -> int:
        if dimension not in self._names:
            raise KeyError(f"{dimension!r} is not grouped here (grouped: {self.dimensions})")
        return self._names.index(dimension)

    def _since_view(self, dimension: str) -> dict[str, dict[str, list[int]]]:
        """name -> model -> counts since the report window's start."""
        index = self._index(dimension)
        cached = self._since_views.get(dimension)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        view: dict[str, dict[str, list[int]]] = {}
        for (names, model_id), vector in self._since.items():
            models = view.setdefault(names[index], {})
            total = models.get(model_id)
            if total is None:
                key = model_id if len(models) < self.max_groups else OTHER
                total = models.setdefault(key, _vector())
            _merge(total, vector)
        self._since_views[dimension] = (self.version, view)
        return view

    def _view(self, dimension: str, now: float) -> _View:
        """The per-second and per-minute groups of a dimension, summed once per second."""
        index = self._index(dimension)
        cached = self._views.get(dimension)
        if cached is not None and cached[0] == self.version and cached[1] == int(now):
            return cached[2]
        view = _View()
        for second, cells in self._seconds.items():
            for (names, _model), vector in cells.items():
                per_second = view.seconds.setdefault(names[index], {})
                total = per_second.get(second)
                if total is None:
                    total = per_second[second] = _vector()
                _merge(total, vector)
        for minute, cells in self._minutes.items():
            for (names, model_id), vector in cells.items():
                per_model = view.hour.setdefault(names[index], {}).setdefault(minute, {})
                total = per_model.get(model_id)
                if total is None:
                    total = per_model[model_id] = _vector()
                _merge(total, vector)
        for minute, sketches in self._latency.items():
            for names, sketch in sketches.items():
                per_minute = view.latency.setdefault(names[index], {})
                kept = per_minute.get(minute)
                if kept is None:
                    kept = per_minute[minute] = LatencySketch()
                kept.merge(sketch)
        self._views[dimension] = (self.version, int(now), view)
        return view

    # -- queries --------------------------------------------------------------------------------
    def group_names(self, dimension: str) -> list[str]:
        """Groups with calls since the report window's start or within the last hour."""
        names = set(self._since_view(dimension))
        index = self._index(dimension)
        for cells in self._minutes.values():
            names.update(names_[index] for names_, _model in cells)
        return sorted(names)

    def folded(self, dimension: str) -> tuple[int, int]:
        """(names folded into ``(other)``, records of theirs) for a dimension."""
        index = self._index(dimension)
        return len(self._folded_names[index]), self._folded_records[index]

    def since_tally(self, dimension: str, name: str) -> Tally:
        total = _vector()
        for vector in self._since_view(dimension).get(name, {}).values():
            _merge(total, vector)
        return Tally(*total)

    def model_tallies(self, dimension: str, name: str) -> dict[str, Tally]:
        """Each model's share of a group since the report window's start (zero rows left out)."""
        models = self._since_view(dimension).get(name, {})
        return {model: Tally(*vector) for model, vector in models.items() if any(vector)}

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
        total = _vector()
        end = math.ceil(now)
        start = end - min(window_s, SECOND_WINDOW_S)
        for second, vector in self._view(dimension, now).seconds.get(name, {}).items():
            if start <= second < end:
                _merge(total, vector)
        return total

    def latency(self, dimension: str, name: str, now: float, window_s: int = 300) -> Percentiles:
        """Latency of successful calls over the whole minutes that overlap the window."""
        last = int(now) // 60
        first = (int(now) - window_s) // 60 + 1
        merged = LatencySketch()
        for minute, sketch in self._view(dimension, now).latency.get(name, {}).items():
            if first <= minute <= last:
                merged.merge(sketch)
        return merged.percentiles()

    def minute_quantiles(
        self, dimension: str, name: str, now: float, q: float, points: int
    ) -> list[float | None]:
        """One latency quantile per minute, oldest first, None where the minute had no call."""
        sketches = self._view(dimension, now).latency.get(name, {})
        last = int(now) // 60
        values: list[float | None] = []
        for minute in range(last - points + 1, last + 1):
            sketch = sketches.get(minute)
            values.append(None if sketch is None else sketch.quantile(q))
        return values

    def model_tallies_between(
        self, dimension: str, name: str, start: float, end: float
    ) -> dict[str, Tally]:
        """Each model's counts over the whole minutes in [start, end) (within the last hour);
        for a window that ends now."""
        first, last = int(start) // 60, math.ceil(end) // 60
        totals: dict[str, list[int]] = {}
        for minute, per_model in self._view(dimension, end).hour.get(name, {}).items():
            if first <= minute <= last:
                for model, vector in per_model.items():
                    _merge(totals.setdefault(model, _vector()), vector)
        return {model: Tally(*vector) for model, vector in totals.items() if any(vector)}


def ingest_usage(
    store: Store,
    groups: GroupIndex,
    records: list[UsageRecord],
    now: float,
    columns: Columns | None = None,
) -> int:
    """Add a batch to the per-model store and the groups beside it, its fields read once for
    both. Returns how many records the store kept."""
    columns = Columns.of(records, columns)
    kept = store.ingest(records, now, columns)
    model_totals = None
    if (
        store.last_totals is not None
        and store.group_by == "model_id"
        and store.since == groups.since
    ):
        after_since, _in_minutes, totals = store.last_totals
        model_totals = totals if after_since else None
    groups.ingest(records, now, columns, store.last_replaced, model_totals)
    return kept

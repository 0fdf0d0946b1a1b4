"""The rolling per-model store: pure, no I/O, no Textual.

Records go in (:meth:`Store.ingest`); rates, tallies over windows, latency percentiles and series
for charts come out. Time is always passed in (``now``), so tests can freeze it.

Tiers, per model and for the total (memory is bounded by the windows, not by the record count):

* per second for the last 15 minutes (rates, the live sparklines);
* per minute for the last 24 hours, each minute with latency and TTFT sketches (percentiles over
  any window up to a day, charts);
* per quarter hour for the last 40 days, or back to ``since`` if that is older (budget periods:
  every real timezone offset is a multiple of 15 minutes, so a day, week or month start in any
  timezone falls on a bucket edge);
* latency and TTFT sketches over everything since ``since`` (the report window), whose counts are
  the quarter buckets after ``since`` plus an exact tally of the part of its own quarter;
* the most recent requests (the drill-down's request list).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from math import ceil, log
from typing import Final, TypeVar

from monitor.records import UsageRecord

SECOND_WINDOW_S: Final = 15 * 60
MINUTE_WINDOW_S: Final = 24 * 3600
QUARTER_S: Final = 15 * 60
QUARTER_WINDOW_S: Final = 40 * 24 * 3600
RECENT_REQUESTS: Final = 200
# Duplicate request ids are looked for among at least this many most recent records (at most
# that plus one batch); a record repeated further apart than that is counted twice. Bounded so
# memory does not grow with the log, and small enough to stay in cache: duplicates come from a
# writer repeating a line or a log read twice, which happens within seconds, not thousands of
# calls.
DEDUP_WINDOW: Final = 20_000
# Small batches of request ids are remembered together, up to this many per dict.
GENERATION_SIZE: Final = 4096

# Log-spaced histogram: bucket i holds values in (GAMMA**(i-1), GAMMA**i], so any percentile is
# reported within RELATIVE_ERROR of a real sample value.
RELATIVE_ERROR: Final = 0.02
_GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA: Final = math.log(_GAMMA)

# Indices into a tally vector. A plain list of ints keeps ingest fast (no attribute lookups).
REQUESTS: Final = 0
INPUT: Final = 1
OUTPUT: Final = 2
CACHE_READ: Final = 3
CACHE_WRITE: Final = 4
CLIENT_ERRORS: Final = 5
SERVER_ERRORS: Final = 6
THROTTLES: Final = 7
ABORTED: Final = 8
ESTIMATED: Final = 9
_WIDTH: Final = 10
_STATUS_SLOT: Final[dict[str, int]] = {
    "client_error": CLIENT_ERRORS,
    "server_error": SERVER_ERRORS,
    "throttled": THROTTLES,
    "aborted": ABORTED,
}


@dataclass(frozen=True, slots=True)
class Tally:
    """Additive counts over some span of time."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    client_errors: int = 0
    server_errors: int = 0
    throttles: int = 0
    aborted: int = 0
    estimated: int = 0  # records whose token counts are estimates

    @property
    def errors(self) -> int:
        return self.client_errors + self.server_errors

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_write_input_tokens
        )

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self.as_vector(), other.as_vector(), strict=True)))

    def as_vector(self) -> list[int]:
        return [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_write_input_tokens,
            self.client_errors,
            self.server_errors,
            self.throttles,
            self.aborted,
            self.estimated,
        ]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency quantiles in milliseconds; all None when there were no samples."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    avg: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max}


@dataclass(frozen=True, slots=True)
class Rates:
    requests_per_min: float = 0.0
    input_tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "requests_per_min": round(self.requests_per_min, 3),
            "input_tokens_per_s": round(self.input_tokens_per_s, 3),
            "output_tokens_per_s": round(self.output_tokens_per_s, 3),
        }


# Tally vector layout: the Tally fields in order, then sums used for averages.
LATENCY_SUM: Final = 10
TTFT_SUM: Final = 11
TTFT_COUNT: Final = 12
LATENCY_COUNT: Final = 13
_VECTOR_WIDTH: Final = 14
_MIN_SKETCH_MS: Final = 0.01
_MIN_KEY: Final = math.ceil(math.log(_MIN_SKETCH_MS) / _LOG_GAMMA)


def _new_vector() -> list[float]:
    return [0] * _VECTOR_WIDTH


class LatencySketch:
    """Mergeable log-spaced histogram of millisecond values (relative error ``RELATIVE_ERROR``).

    Memory grows with the spread of values, not their number: latencies from 10 us to 1 h need at
    most ~480 bins. Only the bins and the maximum are kept; the ingest path updates ``bins``
    directly through :func:`sketch_key`.
    """

    __slots__ = ("bins", "max")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.max = 0.0

    def add(self, value: float, weight: int = 1) -> None:
        key = sketch_key(value)
        remaining = self.bins.get(key, 0) + weight
        if remaining > 0:
            self.bins[key] = remaining
        else:
            self.bins.pop(key, None)
        if weight > 0 and value > self.max:
            self.max = value

    @property
    def count(self) -> int:
        return sum(self.bins.values())

    def merge(self, other: LatencySketch) -> None:
        bins = self.bins
        for key, count in other.bins.items():
            bins[key] = bins.get(key, 0) + count
        if other.max > self.max:
            self.max = other.max

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile, within ``RELATIVE_ERROR`` of a real sample."""
        count = self.count
        if count <= 0:
            return None
        rank = max(1, math.ceil(q * count))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return min(_representative(key), self.max)
        return self.max

    def count_at_most(self, value_ms: float) -> int:
        """How many values are at most ``value_ms`` (a histogram bucket's cumulative count),
        within ``RELATIVE_ERROR`` of the bound: a bin counts when its representative value,
        the one :meth:`quantile` reports, is at most the bound."""
        if value_ms < 0:
            return 0
        limit = sketch_key(value_ms)
        counted = 0
        for key, count in self.bins.items():
            if key < limit or (key == limit and _representative(key) <= value_ms):
                counted += count
        return counted

    def percentiles(self, total_ms: float | None = None) -> Percentiles:
        """Quantiles, the maximum, and the mean when the exact sum is given."""
        count = self.count
        if count <= 0:
            return Percentiles()
        return Percentiles(
            count=count,
            p50=self.quantile(0.50),
            p90=self.quantile(0.90),
            p99=self.quantile(0.99),
            max=self.max,
            avg=None if total_ms is None else total_ms / count,
        )


def _representative(key: int) -> float:
    """The value a bin stands for: within ``RELATIVE_ERROR`` of every value in it."""
    return 2 * _GAMMA**key / (_GAMMA + 1) if key > _MIN_KEY else 0.0


def sketch_key(value: float) -> int:
    """The histogram bin of a millisecond value."""
    return math.ceil(math.log(value) / _LOG_GAMMA) if value > _MIN_SKETCH_MS else _MIN_KEY


class _Minute:
    __slots__ = ("latency", "ttft", "vector")

    def __init__(self) -> None:
        self.vector = _new_vector()
        self.latency = LatencySketch()
        self.ttft = LatencySketch()


class _ModelSeries:
    """Everything the store keeps for one model."""

    __slots__ = (
        "minutes",
        "quarters",
        "recent",
        "seconds",
        "since_edge",
        "since_latency",
        "since_ttft",
    )

    def __init__(self) -> None:
        self.seconds: dict[int, list[float]] = {}
        self.minutes: dict[int, _Minute] = {}
        self.quarters: dict[int, list[float]] = {}
        self.since_edge = _new_vector()  # requests at or after ``since`` in since's own quarter
        self.since_latency = LatencySketch()
        self.since_ttft = LatencySketch()
        self.recent: deque[UsageRecord] = deque(maxlen=RECENT_REQUESTS)


def _add(vector: list[float], record: UsageRecord, sign: int) -> None:
    vector[REQUESTS] += sign
    vector[INPUT] += sign * record.input_tokens
    vector[OUTPUT] += sign * record.output_tokens
    vector[CACHE_READ] += sign * record.cache_read_input_tokens
    vector[CACHE_WRITE] += sign * record.cache_write_input_tokens
    slot = _STATUS_SLOT.get(record.status)
    if slot is not None:
        vector[slot] += sign
    else:  # latency is a property of successful calls; errors and throttles return early
        vector[LATENCY_SUM] += sign * record.latency_ms
        vector[LATENCY_COUNT] += sign
    if record.token_source == "estimate":
        vector[ESTIMATED] += sign
    if record.ttft_ms is not None:
        vector[TTFT_SUM] += sign * record.ttft_ms
        vector[TTFT_COUNT] += sign


def _tally(vector: list[float]) -> Tally:
    return Tally(*(int(value) for value in vector[:_WIDTH]))


@dataclass(slots=True)
class IngestStats:
    """What the store did with the records it was given."""

    accepted: int = 0
    replaced: int = 0  # duplicates of a request id seen before: the last one wins
    too_old: int = 0  # older than every retained window


@dataclass(slots=True)
class Store:
    """Rolling per-model usage from the log. Feed it from one thread only."""

    since: float | None = None
    stats: IngestStats = field(default_factory=IngestStats)
    version: int = 0  # bumped on every change, so views can skip redraws when nothing moved
    last_epoch: float | None = None  # newest request end seen
    _series: dict[str, _ModelSeries] = field(default_factory=dict)
    _remembered: deque[dict[str, UsageRecord]] = field(default_factory=deque)
    _remembered_count: int = 0
    _now: int = 0  # the latest clock reading given to ingest() or prune()
    _since_epoch: float = field(init=False, default=-math.inf)
    _since_quarter: int = field(init=False, default=-1)

    # -- ingest -------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._since_epoch = -math.inf if self.since is None else self.since
        self._since_quarter = -1 if self.since is None else int(self.since) // QUARTER_S

    def _horizon(self, now: float) -> float:
        """Nothing older than this is kept: 40 days, or back to ``since`` if that is older."""
        if self.since is None:
            return now - QUARTER_WINDOW_S
        return min(now - QUARTER_WINDOW_S, self.since)

    def ingest(self, records: Iterable[UsageRecord], now: float) -> int:
        """Add records (any order). Returns how many were kept.

        A request id seen again replaces the earlier record (the last one wins), as long as the
        earlier one is among the last ``DEDUP_WINDOW`` request ids.
        """
        batch = records if isinstance(records, list) else list(records)
        horizon = self._horizon(now)
        by_id = {record.request_id: record for record in batch}
        # Duplicates are rare: check the whole batch at C speed (dict views walk the smaller
        # side) and only walk it record by record when one is there.
        if (
            len(by_id) == len(batch)
            and "" not in by_id
            and all(seen.keys().isdisjoint(by_id.keys()) for seen in self._remembered)
        ):
            kept = self._ingest_unique(batch, by_id, horizon, now)
        else:
            kept = self._ingest_each(batch, horizon, now)
        if kept:
            self.stats.accepted += kept
            self.version += 1
        self.prune(now)
        return kept

    def _ingest_unique(
        self, batch: list[UsageRecord], by_id: dict[str, UsageRecord], horizon: float, now: float
    ) -> int:
        too_old = self._apply_many(batch, 1, now, horizon)
        kept = batch
        if too_old:
            kept = [record for record in batch if record.ts.timestamp() >= horizon]
            by_id = {record.request_id: record for record in kept}
        # Only the newest DEDUP_WINDOW matter; a long catch-up batch must not pin all its records.
        if len(by_id) > DEDUP_WINDOW:
            by_id = {record.request_id: record for record in kept[-DEDUP_WINDOW:]}
        self._remember(by_id)
        return len(kept)

    def _ingest_each(self, batch: list[UsageRecord], horizon: float, now: float) -> int:
        kept = 0
        this_batch: dict[str, UsageRecord] = {}
        for record in batch:
            if record.ts.timestamp() < horizon:
                self.stats.too_old += 1
                continue
            request_id = record.request_id
            if request_id:
                previous = this_batch.get(request_id) or self._previous(request_id)
                if previous is not None:
                    self._apply_many([previous], -1, now, horizon)
                    self.stats.replaced += 1
                this_batch[request_id] = record
            self._apply_many([record], 1, now, horizon)
            kept += 1
        self._remember(this_batch)
        return kept

    def _previous(self, request_id: str) -> UsageRecord | None:
        for seen in reversed(self._remembered):
            found = seen.get(request_id)
            if found is not None:
                return found
        return None

    def _remember(self, records_by_id: dict[str, UsageRecord]) -> None:
        # The request ids of whole batches, newest last, dropped oldest first once the rest
        # still holds DEDUP_WINDOW: no per-record bookkeeping, and a batch's dict is kept as it
        # was built for the duplicate check. A duplicate within the batch is handled above.
        # The live feed brings batches of a few records several times a second: those are
        # merged into the newest generation until it holds GENERATION_SIZE, so that the
        # duplicate check of each batch looks at a handful of dicts, not thousands.
        generations = self._remembered
        newest = generations[-1] if generations else None
        if newest is not None and len(newest) + len(records_by_id) <= GENERATION_SIZE:
            before = len(newest)
            newest.update(records_by_id)
            self._remembered_count += len(newest) - before
        else:
            generations.append(records_by_id)
            self._remembered_count += len(records_by_id)
        while self._remembered_count - len(generations[0]) >= DEDUP_WINDOW:
            self._remembered_count -= len(generations.popleft())

    def _apply_many(self, records: list[UsageRecord], sign: int, now: float, horizon: float) -> int:
        """Add (sign 1) or take back (sign -1) records; returns how many were older than the
        horizon (and left out).

        The hot path of a catch-up over a month of log: written out flat, with everything the
        loop touches bound to locals, because each lookup and call here is paid per record.
        """
        all_series = self._series
        since_epoch = self._since_epoch
        since_quarter = self._since_quarter
        minute_floor = now - MINUTE_WINDOW_S
        second_floor = now - SECOND_WINDOW_S
        status_slots = _STATUS_SLOT
        newest = self.last_epoch if self.last_epoch is not None else -math.inf
        too_old = 0
        for record in records:
            epoch = record.ts.timestamp()
            if epoch < horizon:
                too_old += 1
                continue
            series = all_series.get(record.model_id)
            if series is None:
                series = all_series[record.model_id] = _ModelSeries()
            second = int(epoch)
            quarter = second // QUARTER_S
            vector = series.quarters.get(quarter)
            if vector is None:
                vector = series.quarters[quarter] = _new_vector()
            ttft = record.ttft_ms
            latency = record.latency_ms
            status_slot = status_slots.get(record.status)
            vector[REQUESTS] += sign
            vector[INPUT] += sign * record.input_tokens
            vector[OUTPUT] += sign * record.output_tokens
            if record.cache_read_input_tokens:
                vector[CACHE_READ] += sign * record.cache_read_input_tokens
            if record.cache_write_input_tokens:
                vector[CACHE_WRITE] += sign * record.cache_write_input_tokens
            if status_slot is None:
                vector[LATENCY_SUM] += sign * latency
                vector[LATENCY_COUNT] += sign
            else:
                vector[status_slot] += sign
            if ttft is not None:
                vector[TTFT_SUM] += sign * ttft
                vector[TTFT_COUNT] += sign
            if record.token_source == "estimate":
                vector[ESTIMATED] += sign
            if epoch >= since_epoch:
                if quarter == since_quarter:
                    _add(series.since_edge, record, sign)
                if status_slot is None:
                    sketch = series.since_latency
                    bins = sketch.bins
                    key = ceil(log(latency) / _LOG_GAMMA) if latency > _MIN_SKETCH_MS else _MIN_KEY
                    bins[key] = bins.get(key, 0) + sign
                    if latency > sketch.max:
                        sketch.max = latency
                if ttft is not None:
                    sketch = series.since_ttft
                    bins = sketch.bins
                    key = ceil(log(ttft) / _LOG_GAMMA) if ttft > _MIN_SKETCH_MS else _MIN_KEY
                    bins[key] = bins.get(key, 0) + sign
                    if ttft > sketch.max:
                        sketch.max = ttft
            if epoch >= minute_floor:
                minute = second // 60
                cell = series.minutes.get(minute)
                if cell is None:
                    cell = series.minutes[minute] = _Minute()
                _add(cell.vector, record, sign)
                if status_slot is None:
                    cell.latency.add(latency, sign)
                if ttft is not None:
                    cell.ttft.add(ttft, sign)
                if epoch >= second_floor:
                    vector = series.seconds.get(second)
                    if vector is None:
                        vector = series.seconds[second] = _new_vector()
                    _add(vector, record, sign)
                if sign > 0:  # "recent requests" are the last day's
                    series.recent.append(record)
            if sign > 0 and epoch > newest:
                newest = epoch
        if sign > 0:
            self.stats.too_old += too_old
            if newest > -math.inf:
                self.last_epoch = newest
        return too_old

    def prune(self, now: float) -> None:
        """Drop buckets that have left their windows. Cheap when called often."""
        second = int(now)
        if second <= self._now:
            return
        self._now = second
        for series in self._series.values():
            _drop_before(series.seconds, second - SECOND_WINDOW_S)
            _drop_before(series.minutes, (second - MINUTE_WINDOW_S) // 60)
            _drop_before(series.quarters, int(self._horizon(now)) // QUARTER_S)

    # -- queries ------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        return sorted(self._series)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._series

    def _selected(self, model_id: str | None) -> Iterator[_ModelSeries]:
        if model_id is None:
            yield from self._series.values()
        elif model_id in self._series:
            yield self._series[model_id]

    def since_tally(self, model_id: str | None = None) -> Tally:
        """Everything since ``since`` for one model, or for all (``None``)."""
        return _tally(self._since_vector(model_id))

    def _since_vector(self, model_id: str | None) -> list[float]:
        total = _new_vector()
        for series in self._selected(model_id):
            _merge(total, series.since_edge)
            for quarter, vector in series.quarters.items():
                if quarter > self._since_quarter:
                    _merge(total, vector)
        return total

    def since_latency(self, model_id: str | None = None) -> Percentiles:
        """Latency of successful calls since ``since``."""
        return self._since_percentiles(model_id, ttft=False)

    def since_ttft(self, model_id: str | None = None) -> Percentiles:
        return self._since_percentiles(model_id, ttft=True)

    def _since_percentiles(self, model_id: str | None, ttft: bool) -> Percentiles:
        sketch = LatencySketch()
        for series in self._selected(model_id):
            sketch.merge(series.since_ttft if ttft else series.since_latency)
        return sketch.percentiles(self._since_vector(model_id)[TTFT_SUM if ttft else LATENCY_SUM])

    def since_sketch(self, model_id: str | None = None, ttft: bool = False) -> LatencySketch:
        """The merged latency (or TTFT) sketch of everything since ``since``, for histograms."""
        sketch = LatencySketch()
        for series in self._selected(model_id):
            sketch.merge(series.since_ttft if ttft else series.since_latency)
        return sketch

    def since_sum_ms(self, model_id: str | None = None, ttft: bool = False) -> tuple[int, float]:
        """(count, exact sum in ms) of the latencies (or TTFTs) since ``since``."""
        vector = self._since_vector(model_id)
        if ttft:
            return int(vector[TTFT_COUNT]), vector[TTFT_SUM]
        return int(vector[LATENCY_COUNT]), vector[LATENCY_SUM]

    def tally_between(self, model_id: str | None, start: float, end: float) -> Tally:
        """Requests that ended in ``[start, end)``, from the finest tier that still covers
        ``start``: exact to the second within 15 minutes, to the minute within a day, to the
        quarter hour within 40 days (bucket starts are compared with the bounds)."""
        return _tally(self._vector_between(model_id, start, end))

    def _vector_between(self, model_id: str | None, start: float, end: float) -> list[float]:
        now = max(self._now, int(end))
        total = _new_vector()
        for series in self._selected(model_id):
            if start > now - SECOND_WINDOW_S:
                _sum_buckets(total, series.seconds, math.ceil(start), math.ceil(end))
            elif start > now - MINUTE_WINDOW_S:
                lo, hi = math.ceil(start / 60), math.ceil(end / 60)
                minutes = series.minutes
                for minute in range(lo, hi):
                    cell = minutes.get(minute)
                    if cell is not None:
                        _merge(total, cell.vector)
            else:
                lo, hi = math.ceil(start / QUARTER_S), math.ceil(end / QUARTER_S)
                _sum_buckets(total, series.quarters, lo, hi)
        return total

    def rates(self, model_id: str | None, now: float, window_s: int = 60) -> Rates:
        """Per-second tier rates over the last ``window_s`` seconds ending at ``now``."""
        vector = self._vector_between(model_id, now - window_s, now)
        return Rates(
            requests_per_min=vector[REQUESTS] * 60.0 / window_s,
            input_tokens_per_s=vector[INPUT] / window_s,
            output_tokens_per_s=vector[OUTPUT] / window_s,
        )

    def latency(self, model_id: str | None, now: float, window_s: int = 300) -> Percentiles:
        """Latency of successful calls over the minutes that overlap the window (minute tier)."""
        return self._window_percentiles(model_id, now, window_s, ttft=False)

    def ttft(self, model_id: str | None, now: float, window_s: int = 300) -> Percentiles:
        return self._window_percentiles(model_id, now, window_s, ttft=True)

    def _window_percentiles(
        self, model_id: str | None, now: float, window_s: int, ttft: bool
    ) -> Percentiles:
        sketch = LatencySketch()
        total_ms = 0.0
        for series in self._selected(model_id):
            for minute in range(math.ceil((now - window_s) / 60), math.floor(now / 60) + 1):
                cell = series.minutes.get(minute)
                if cell is not None:
                    sketch.merge(cell.ttft if ttft else cell.latency)
                    total_ms += cell.vector[TTFT_SUM if ttft else LATENCY_SUM]
        return sketch.percentiles(total_ms)

    def second_series(
        self, model_id: str | None, now: float, field_index: int, points: int = 60
    ) -> list[float]:
        """One value per second for the last ``points`` seconds (oldest first)."""
        end = int(now)
        values = [0.0] * points
        for series in self._selected(model_id):
            seconds = series.seconds
            for offset in range(points):
                vector = seconds.get(end - points + 1 + offset)
                if vector is not None:
                    values[offset] += vector[field_index]
        return values

    def second_sums(
        self, model_id: str | None, now: float, field_indices: Sequence[int], points: int
    ) -> list[float]:
        """Sums over the last ``points`` seconds, one per field: several fields in one pass over
        the seconds (the overview asks for three, for every model, every tick)."""
        end = int(now)
        sums = [0.0] * len(field_indices)
        slots = list(enumerate(field_indices))
        for series in self._selected(model_id):
            seconds = series.seconds
            for second in range(end - points + 1, end + 1):
                vector = seconds.get(second)
                if vector is not None:
                    for slot, index in slots:
                        sums[slot] += vector[index]
        return sums

    def minute_sums(
        self, model_id: str | None, now: float, field_indices: Sequence[int], points: int
    ) -> list[float]:
        """Sums over the last ``points`` minutes (the current one included), one per field."""
        end = int(now) // 60
        sums = [0.0] * len(field_indices)
        slots = list(enumerate(field_indices))
        for series in self._selected(model_id):
            minutes = series.minutes
            for minute in range(end - points + 1, end + 1):
                cell = minutes.get(minute)
                if cell is not None:
                    vector = cell.vector
                    for slot, index in slots:
                        sums[slot] += vector[index]
        return sums

    def minute_series(
        self, model_id: str | None, now: float, field_index: int, points: int = 60
    ) -> list[float]:
        """One summed value per minute for the last ``points`` minutes (oldest first)."""
        end = int(now) // 60
        values = [0.0] * points
        for series in self._selected(model_id):
            for offset in range(points):
                cell = series.minutes.get(end - points + 1 + offset)
                if cell is not None:
                    values[offset] += cell.vector[field_index]
        return values

    def minute_quantiles(
        self, model_id: str | None, now: float, q: float, points: int = 60, ttft: bool = False
    ) -> list[float | None]:
        """A latency quantile per minute for the last ``points`` minutes (None: no calls)."""
        end = int(now) // 60
        values: list[float | None] = []
        for offset in range(points):
            minute = end - points + 1 + offset
            sketch = LatencySketch()
            for series in self._selected(model_id):
                cell = series.minutes.get(minute)
                if cell is not None:
                    sketch.merge(cell.ttft if ttft else cell.latency)
            values.append(sketch.quantile(q))
        return values

    def recent_requests(self, model_id: str | None = None, limit: int = 50) -> list[UsageRecord]:
        """The newest requests first."""
        merged: list[UsageRecord] = []
        for series in self._selected(model_id):
            merged.extend(series.recent)
        merged.sort(key=lambda record: record.ts, reverse=True)
        return merged[:limit]


def _merge(total: list[float], vector: list[float]) -> None:
    for index in range(_VECTOR_WIDTH):
        total[index] += vector[index]


def _sum_buckets(total: list[float], buckets: dict[int, list[float]], lo: int, hi: int) -> None:
    if hi - lo > len(buckets):
        for key, vector in buckets.items():
            if lo <= key < hi:
                _merge(total, vector)
        return
    for key in range(lo, hi):
        found = buckets.get(key)
        if found is not None:
            _merge(total, found)


_Bucket = TypeVar("_Bucket")


def _drop_before(buckets: dict[int, _Bucket], first_kept: int) -> None:
    """Buckets are created in (nearly) time order, so expired ones sit at the front of the
    dict: scan only until the first live one. A late, out-of-order bucket is dropped once the
    scan reaches it, at most one window later, so memory stays bounded."""
    expired: list[int] = []
    for key in buckets:
        if key >= first_kept:
            break
        expired.append(key)
    for key in expired:
        del buckets[key]

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
import struct
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, repeat
from math import ceil, log
from operator import add, attrgetter, eq, floordiv, is_not, itemgetter
from typing import Final, TypeVar

import msgspec

from monitor.columns import Columns
from monitor.dedupe import DEDUP_WINDOW as DEDUP_WINDOW
from monitor.dedupe import GENERATION_SIZE as GENERATION_SIZE
from monitor.dedupe import RecentIds
from monitor.records import MAX_LATENCY_MS, UsageRecord

SECOND_WINDOW_S: Final = 15 * 60
MINUTE_WINDOW_S: Final = 24 * 3600
QUARTER_S: Final = 15 * 60
QUARTER_WINDOW_S: Final = 40 * 24 * 3600
RECENT_REQUESTS: Final = 200

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
_FAILED_SLOTS: Final = tuple(_STATUS_SLOT.values())


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
        # C loops: the screen merges a few minute sketches per model and figure every refresh.
        bins, theirs = self.bins, other.bins
        if bins:
            bins.update(
                zip(
                    theirs, map(add, map(bins.get, theirs, repeat(0)), theirs.values()), strict=True
                )
            )
        else:
            bins.update(theirs)
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
        p50, p90, p99 = self.quantiles((0.50, 0.90, 0.99), count)
        return Percentiles(
            count=count,
            p50=p50,
            p90=p90,
            p99=p99,
            max=self.max,
            avg=None if total_ms is None else total_ms / count,
        )

    def quantiles(self, qs: Sequence[float], count: int) -> list[float]:
        """``quantile`` of each of ``qs`` (ascending), in one pass over the sorted bins."""
        ranks = [max(1, math.ceil(q * count)) for q in qs]
        values: list[float] = []
        seen = 0
        bins = self.bins
        for key in sorted(bins):
            seen += bins[key]
            while len(values) < len(ranks) and seen >= ranks[len(values)]:
                value = 2 * _GAMMA**key / (_GAMMA + 1) if key > _MIN_KEY else 0.0
                values.append(min(value, self.max))
            if len(values) == len(ranks):
                break
        values.extend([self.max] * (len(ranks) - len(values)))
        return values


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
        "newest_second",
        "quarters",
        "recent",
        "seconds",
        "settled",
        "since_edge",
        "since_latency",
        "since_ttft",
        "version",
    )

    def __init__(self) -> None:
        # Bumped whenever a record of this model is added or taken back: a view can keep what
        # it computed for the model until this or the clock moves.
        self.version = 0
        # The newest request end among the records of the per-second tier (-inf: none).
        self.newest_second = -math.inf
        # Bumped when a record changes a minute before the newest one (a late record, or one
        # taken back): what was computed from completed minutes holds until this moves.
        self.settled = 0
        self.seconds: dict[int, list[float]] = {}
        self.minutes: dict[int, _Minute] = {}
        self.quarters: dict[int, list[float]] = {}
        self.since_edge = _new_vector()  # requests at or after ``since`` in since's own quarter
        self.since_latency = LatencySketch()
        self.since_ttft = LatencySketch()
        self.recent: deque[UsageRecord] = deque(maxlen=RECENT_REQUESTS)

    def absorb_earlier(self, earlier: _ModelSeries) -> None:
        """Add the series of an earlier part of the log (see ``Store.absorb_earlier``)."""
        self.version += earlier.version + 1
        self.settled += earlier.settled + 1
        self.newest_second = max(self.newest_second, earlier.newest_second)
        self.seconds = _merged_vectors(earlier.seconds, self.seconds)
        self.quarters = _merged_vectors(earlier.quarters, self.quarters)
        minutes = dict(earlier.minutes)
        for minute, cell in self.minutes.items():
            theirs = minutes.get(minute)
            if theirs is None:
                minutes[minute] = cell
            else:
                _merge(theirs.vector, cell.vector)
                theirs.latency.merge(cell.latency)
                theirs.ttft.merge(cell.ttft)
        self.minutes = dict(sorted(minutes.items()))
        _merge(self.since_edge, earlier.since_edge)
        self.since_latency.merge(earlier.since_latency)
        self.since_ttft.merge(earlier.since_ttft)
        recent = deque(earlier.recent, maxlen=RECENT_REQUESTS)
        recent.extend(self.recent)
        self.recent = recent

    def pack(self) -> tuple[object, ...]:
        return (
            self.version,
            self.newest_second,
            self.seconds,
            {
                minute: (cell.vector, cell.latency, cell.ttft)
                for minute, cell in self.minutes.items()
            },
            self.quarters,
            self.since_edge,
            self.since_latency,
            self.since_ttft,
            _RECORDS_ENCODER.encode(list(self.recent)),
        )

    @classmethod
    def unpack(cls, packed: tuple[object, ...]) -> _ModelSeries:
        series = cls()
        (
            version,
            newest,
            seconds,
            minutes,
            quarters,
            since_edge,
            since_latency,
            since_ttft,
            recent,
        ) = packed
        series.version = version  # type: ignore[assignment]
        series.settled = 0
        series.newest_second = newest  # type: ignore[assignment]
        series.seconds = seconds  # type: ignore[assignment]
        series.quarters = quarters  # type: ignore[assignment]
        for minute, (vector, latency, ttft) in minutes.items():  # type: ignore[attr-defined]
            cell = series.minutes[minute] = _Minute()
            cell.vector, cell.latency, cell.ttft = vector, latency, ttft
        series.since_edge = since_edge  # type: ignore[assignment]
        series.since_latency = since_latency  # type: ignore[assignment]
        series.since_ttft = since_ttft  # type: ignore[assignment]
        series.recent.extend(_RECORDS_DECODER.decode(recent))  # type: ignore[arg-type]
        return series


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


def _bin_edges() -> list[float]:
    """``edges[i]`` is the largest float whose ``sketch_key`` is at most ``_MIN_KEY + i``, up
    to the largest latency a record may hold: ``_MIN_KEY + bisect_left(edges, v)`` is then
    ``sketch_key(v)`` exactly (each edge is found by asking ``sketch_key`` itself, bisecting
    over the floats' bit patterns, which sort like the positive floats they encode)."""

    def as_float(bits: int) -> float:
        value: float = struct.unpack("<d", struct.pack("<q", bits))[0]
        return value

    def as_bits(value: float) -> int:
        bits: int = struct.unpack("<q", struct.pack("<d", value))[0]
        return bits

    edges: list[float] = []
    key = _MIN_KEY
    low = as_bits(_MIN_SKETCH_MS)  # sketch_key of it is _MIN_KEY
    top = as_bits(MAX_LATENCY_MS * 2)
    while not edges or edges[-1] < MAX_LATENCY_MS:
        # The edge is within rounding of GAMMA**key: bisect a narrow bracket around it when
        # that bracket holds, else everything above the last edge.
        near = _GAMMA**key
        high = top
        # The narrowest bracket that holds, so that the bisection takes few steps (this runs
        # at every start).
        for margin in (1e-14, 1e-12, 1e-9):
            narrow_low, narrow_high = as_bits(near * (1 - margin)), as_bits(near * (1 + margin))
            if (
                narrow_low > low
                and sketch_key(as_float(narrow_low)) <= key
                and sketch_key(as_float(narrow_high)) > key
            ):
                low, high = narrow_low, narrow_high
                break
        else:
            narrow_low, narrow_high = as_bits(near * (1 - 1e-9)), as_bits(near * (1 + 1e-9))
            if narrow_low > low and sketch_key(as_float(narrow_low)) <= key:
                low = narrow_low
            if sketch_key(as_float(narrow_high)) > key:
                high = narrow_high
        # invariant: sketch_key(as_float(low)) <= key < sketch_key(as_float(high))
        while high - low > 1:
            middle = (low + high) // 2
            if sketch_key(as_float(middle)) <= key:
                low = middle
            else:
                high = middle
        edges.append(as_float(low))
        key += 1
    return edges


_EDGES: Final = _bin_edges()


def latency_bins(values: list[float]) -> Counter[int]:
    """Histogram bins of millisecond values, each as ``sketch_key`` gives it, offset by
    ``_MIN_KEY`` (see ``_bin_edges``)."""
    return Counter(map(bisect_left, repeat(_EDGES), values))


def add_bins(sketch: LatencySketch, counts: Counter[int], maximum: float) -> None:
    """Add ``latency_bins`` of some values, and their maximum, to a sketch."""
    bins = sketch.bins
    for index, number in counts.items():
        key = _MIN_KEY + index
        bins[key] = bins.get(key, 0) + number
    if maximum > sketch.max:
        sketch.max = maximum


_RECORDS_ENCODER: Final = msgspec.msgpack.Encoder()
_RECORDS_DECODER: Final = msgspec.msgpack.Decoder(list[UsageRecord])
# Store fields that pickle as they are.
_PLAIN_STATE: Final = (
    "since",
    "group_by",
    "stats",
    "version",
    "last_epoch",
    "_recent_ids",
    "_now",
    "_since_epoch",
    "_since_quarter",
    "keeps_head",
    "minute_sketches",
)
# Larger than any minute number (about 3e7 today), and small enough that key number *
# stride + bucket stays an exact float for a million keys.
_KEY_STRIDE: Final = 2.0**33
_request_id: Final = attrgetter("request_id")
_is_value: Final = partial(is_not, None)
_OKS: Final = repeat("ok")


def _tally(vector: list[float]) -> Tally:
    return Tally(*(int(value) for value in vector[:_WIDTH]))


class RunTallies:
    """A part of a block put in the order of its runs (a stable sort by each record's run
    code), and each run's counts: what the store and the groups both sum per run. Every column
    is put in that order once and sliced per run."""

    __slots__ = (
        "_block",
        "cache_reads",
        "cache_writes",
        "inputs",
        "order",
        "outputs",
        "sources",
        "statuses",
    )

    def __init__(self, block: Columns, codes: list[float]) -> None:
        self._block = block
        self.order = sorted(range(len(codes)), key=codes.__getitem__)
        self.inputs = self.ordered("input_tokens")
        self.outputs = self.ordered("output_tokens")
        # A column that is the same on every record of the part (no cache writes, no
        # estimates: the common case) is not put in order; each run then counts 0 for it.
        self.cache_reads = self._ordered_unless("cache_read_input_tokens", 0)
        self.cache_writes = self._ordered_unless("cache_write_input_tokens", 0)
        self.statuses: list[str] = self.ordered("status")  # type: ignore[assignment]
        self.sources: list[str] | None = self._ordered_unless(  # type: ignore[assignment]
            "token_source", "estimate", absent=True
        )

    def ordered(self, name: str) -> list[float]:
        """One field's values in run order."""
        return list(map(self._block.numbers(name).__getitem__, self.order))

    def _ordered_unless(self, name: str, value: object, absent: bool = False) -> list[float] | None:
        """:meth:`ordered`, or None when every value of the column is ``value`` (with
        ``absent``: when none is)."""
        column = self._block.column(name)
        count = column.count(value)
        if count == (0 if absent else len(column)):
            return None
        return self.ordered(name)

    def runs(self, codes: list[float]) -> Iterator[tuple[float, int, int]]:
        """Each run's code and ``[start, end)`` in the order, in code order: found by bisecting
        the ordered codes, a few steps per run instead of hashing every record's code."""
        ordered = list(map(codes.__getitem__, self.order))
        start, size = 0, len(ordered)
        while start < size:
            code = ordered[start]
            end = bisect_right(ordered, code, start)
            yield code, start, end
            start = end

    def tally(self, start: int, end: int, vector: list[float]) -> list[str]:
        """Set the Tally slots of ``vector``, a new vector of zeros, (requests to estimated)
        to the counts of the run ``[start, end)`` of the order; returns the run's statuses."""
        statuses = self.statuses[start:end]
        vector[REQUESTS] = end - start
        vector[INPUT] = sum(self.inputs[start:end])
        vector[OUTPUT] = sum(self.outputs[start:end])
        if self.cache_reads is not None:
            vector[CACHE_READ] = sum(self.cache_reads[start:end])
        if self.cache_writes is not None:
            vector[CACHE_WRITE] = sum(self.cache_writes[start:end])
        if statuses.count("ok") != end - start:  # else every other status counts 0
            for status, slot in _STATUS_SLOT.items():
                vector[slot] = statuses.count(status)
        if self.sources is not None:
            vector[ESTIMATED] = self.sources[start:end].count("estimate")
        return statuses


@dataclass(slots=True)
class IngestStats:
    """What the store did with the records it was given."""

    accepted: int = 0
    replaced: int = 0  # duplicates of a request id seen before: the last one wins
    too_old: int = 0  # older than every retained window


@dataclass(slots=True)
class Store:
    """Rolling per-model usage from the log. Feed it from one thread only.

    ``group_by`` names the record field the series are kept per (the model id; another store
    can keep them per app or caller): the "model" of every query below is a value of it.
    """

    since: float | None = None
    group_by: str = "model_id"
    stats: IngestStats = field(default_factory=IngestStats)
    version: int = 0  # bumped on every change, so views can skip redraws when nothing moved
    last_epoch: float | None = None  # newest request end seen
    # With ``keeps_head``: the first request ids are kept, so that a store of a later part of
    # the log can be merged after an earlier one with the duplicates across the seam replaced,
    # as one store fed both parts in order would have (see ``RecentIds``).
    keeps_head: bool = False
    _series: dict[str, _ModelSeries] = field(default_factory=dict)
    _recent_ids: RecentIds = field(init=False, repr=False)
    _now: int = 0  # the latest clock reading given to ingest() or prune()
    _since_epoch: float = field(init=False, default=-math.inf)
    _since_quarter: int = field(init=False, default=-1)
    _group: Callable[[UsageRecord], str] = field(init=False, repr=False)
    # Block ingest numbers the keys: key -> number * _KEY_STRIDE, and number -> key.
    _key_offsets: dict[str, float] = field(init=False, repr=False, default_factory=dict)
    _keys: list[str] = field(init=False, repr=False, default_factory=list)
    # The earlier records the last ingest() replaced (taken back): what a consumer fed the same
    # batches (the groups) takes back too, so that one duplicate check serves both.
    last_replaced: list[UsageRecord] = field(init=False, repr=False, default_factory=list)
    # Per-minute latency and TTFT sketches (the screen's charts and windowed percentiles);
    # the headless report prints none of them, so it need not build them.
    minute_sketches: bool = True
    # When the last ingest() added its whole batch as one part (the common case of a
    # catch-up): (after ``since``, inside the minute tier, each key's summed counts). A
    # consumer fed the same batch (the groups) can take its sums from here instead of summing
    # the records again.
    last_totals: tuple[bool, bool, dict[str, list[float]]] | None = field(
        init=False, repr=False, default=None
    )
    # Block ingest's counts for the report window's latency and TTFT sketches, by (key number
    # * _KEY_STRIDE + bin), not yet added to the keys' sketches: counted into here by a C loop
    # per block, and put into the sketches by one Python loop over the distinct (key, bin)
    # pairs when a sketch is read, merged or packed. Putting them in per block cost a loop
    # over a few hundred pairs per block, more than counting the block's records.
    _since_pending: tuple[Counter[float], Counter[float]] = field(
        init=False, repr=False, default_factory=lambda: (Counter(), Counter())
    )

    # -- ingest -------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._since_epoch = -math.inf if self.since is None else self.since
        self._since_quarter = -1 if self.since is None else int(self.since) // QUARTER_S
        self._group = attrgetter(self.group_by)
        self._recent_ids = RecentIds(self.keeps_head)

    def _horizon(self, now: float) -> float:
        """Nothing older than this is kept: 40 days, or back to ``since`` if that is older."""
        if self.since is None:
            return now - QUARTER_WINDOW_S
        return min(now - QUARTER_WINDOW_S, self.since)

    def ingest(
        self, records: Iterable[UsageRecord], now: float, columns: Columns | None = None
    ) -> int:
        """Add records (any order). Returns how many were kept. ``columns``: the records'
        columns when the caller has them (they are read once for every consumer).

        A request id seen again replaces the earlier record (the last one wins), as long as the
        earlier one is among the last ``DEDUP_WINDOW`` request ids.
        """
        batch = records if isinstance(records, list) else list(records)
        block = Columns.of(batch, columns)
        horizon = self._horizon(now)
        request_ids = block.texts("request_id")
        by_id = dict(zip(request_ids, batch, strict=True))
        # Duplicates are rare: the whole batch is checked at C speed, and single records are
        # only looked at when one is there.
        fresh = self._recent_ids.is_fresh(by_id, len(batch))
        self.last_replaced = []
        self.last_totals = None
        too_old = self._apply_block(block, now, horizon)
        kept: Sequence[UsageRecord] = batch
        if too_old:
            epochs = block.epochs
            keep = [index for index, epoch in enumerate(epochs) if epoch >= horizon]
            kept = list(map(batch.__getitem__, keep))
            request_ids = list(map(request_ids.__getitem__, keep))
            by_id = dict(zip(request_ids, kept, strict=True))
        if fresh:
            # Only the newest DEDUP_WINDOW matter; a long catch-up batch must not pin all of
            # its records.
            if len(by_id) > DEDUP_WINDOW:
                newest = kept[-DEDUP_WINDOW:]
                by_id = dict(zip(map(_request_id, newest), newest, strict=True))
        else:
            # Every record was added as a block; each replaced earlier record is taken back.
            # The counts are those of adding and taking back record by record in order (sums
            # commute), and so are the sketches' maxima, which keep a replaced record's value
            # as they always did.
            taken_back = self.last_replaced = self._recent_ids.replaced(request_ids, kept, by_id)
            if taken_back:
                self._apply_many(taken_back, -1, now, horizon)
                self.stats.replaced += len(taken_back)
        self._recent_ids.remember(by_id)
        if kept:
            self.stats.accepted += len(kept)
            self.version += 1
        self.prune(now)
        return len(kept)

    def _apply_block(self, block: Columns, now: float, horizon: float) -> int:
        """Add a block of records; returns how many were older than the horizon (left out).

        The catch-up's hot path, with no Python-level work per record in the common case: the
        block is ordered by (key, bucket) once, and each run of records of one key in one
        bucket is summed, counted and binned by C loops (``map``, ``sum``, ``Counter``) and
        added to its tiers once. A bucket is a minute inside the minute tier, else a quarter
        hour. A block whose records fall on both sides of ``since`` or of the minute tier's
        edge is split there first. Records of the last ``SECOND_WINDOW_S`` (the per-second
        tier: few in a catch-up, all of a live batch) take the record-by-record path.
        """
        if not len(block):
            return 0
        epochs = block.epochs
        since_epoch = self._since_epoch
        minute_floor = now - MINUTE_WINDOW_S
        second_floor = now - SECOND_WINDOW_S
        low, high = min(epochs), max(epochs)
        if (
            low >= horizon
            and high < second_floor
            and (low >= since_epoch) == (high >= since_epoch)
            and (low >= minute_floor) == (high >= minute_floor)
        ):
            after_since, in_minutes = low >= since_epoch, low >= minute_floor
            totals = self._add_run(block, after_since, in_minutes)
            self.last_totals = (after_since, in_minutes, totals)
            self._note_newest(high)
            return 0
        too_old = 0
        latest: list[int] = []
        parts: dict[tuple[bool, bool], list[int]] = {}
        newest = -math.inf
        for index, epoch in enumerate(epochs):
            if epoch < horizon:
                too_old += 1
            elif epoch >= second_floor:
                latest.append(index)
            else:
                flags = (epoch >= since_epoch, epoch >= minute_floor)
                part = parts.get(flags)
                if part is None:
                    part = parts[flags] = []
                part.append(index)
                if epoch > newest:
                    newest = epoch
        for (after_since, in_minutes), indices in parts.items():
            self._add_run(block.subset(indices), after_since, in_minutes)
        self._note_newest(newest)
        self.stats.too_old += too_old
        if latest:
            self._apply_many(list(map(block.records.__getitem__, latest)), 1, now, horizon)
        return too_old

    def _note_newest(self, epoch: float) -> None:
        if epoch > -math.inf and (self.last_epoch is None or epoch > self.last_epoch):
            self.last_epoch = epoch

    def _key_offsets_of(self, keys: Sequence[str]) -> list[float]:
        """Each key's number * _KEY_STRIDE (numbers given in the order keys first come)."""
        try:
            return list(map(self._key_offsets.__getitem__, keys))
        except KeyError:
            for key in dict.fromkeys(keys):
                if key not in self._key_offsets:
                    self._key_offsets[key] = float(len(self._keys) * _KEY_STRIDE)
                    self._keys.append(key)
            return list(map(self._key_offsets.__getitem__, keys))

    def _add_run(
        self, block: Columns, after_since: bool, in_minutes: bool
    ) -> dict[str, list[float]]:
        """Add records that are all on one side of ``since`` and of the minute tier's edge.
        Returns each key's summed counts."""
        width = 60.0 if in_minutes else float(QUARTER_S)
        offsets = self._key_offsets_of(block.texts(self.group_by))
        # (key, bucket) of each record as one float, key number * _KEY_STRIDE + bucket:
        # sorting and counting floats is several times cheaper than tuples. A stable sort puts
        # each run together, in the block's order; every column is put in that order once and
        # sliced per run.
        codes = list(map(add, offsets, map(floordiv, block.epochs, repeat(width))))
        runs = RunTallies(block, codes)
        order = runs.order
        latencies, ttfts = runs.ordered("latency_ms"), runs.ordered("ttft_ms")
        all_series = self._series
        since_quarter = self._since_quarter
        keys = self._keys
        sketch_minutes = in_minutes and self.minute_sketches
        # The report window's sketches hold every bin of the part at once: (key, bin) counted
        # over the whole part, not per run (a run's values fall in almost as many bins as it
        # has values).
        if after_since:
            self._add_since_bins(offsets, block)
        key_ranges: dict[int, tuple[int, int]] = {}
        totals: dict[str, list[float]] = {}
        for code, run_start, end in runs.runs(codes):
            number = int(code // _KEY_STRIDE)
            key = keys[number]
            bucket = int(code - number * _KEY_STRIDE)
            series = all_series.get(key)
            if series is None:
                series = all_series[key] = _ModelSeries()
            series.version += 1
            series.settled += 1  # a block may hold any minute
            vector = _new_vector()
            run_statuses = runs.tally(run_start, end, vector)
            # Latency is a property of successful calls (status "ok").
            failed = sum(map(vector.__getitem__, _FAILED_SLOTS))
            run_latencies = latencies[run_start:end]
            if failed:
                run_latencies = list(compress(run_latencies, map(eq, run_statuses, _OKS)))
            run_ttfts = list(filter(_is_value, ttfts[run_start:end]))
            vector[LATENCY_SUM] = sum(run_latencies)
            vector[LATENCY_COUNT] = len(run_latencies)
            vector[TTFT_SUM] = sum(run_ttfts)
            vector[TTFT_COUNT] = len(run_ttfts)
            latency_max = max(run_latencies, default=0.0)
            ttft_max = max(run_ttfts, default=0.0)
            quarter = bucket // 15 if in_minutes else bucket
            tally = series.quarters.get(quarter)
            if tally is None:
                tally = series.quarters[quarter] = _new_vector()
            _merge(tally, vector)
            total = totals.get(key)
            if total is None:
                totals[key] = vector
            else:
                _merge(total, vector)
            if after_since:
                if quarter == since_quarter:
                    _merge(series.since_edge, vector)
                if latency_max > series.since_latency.max:
                    series.since_latency.max = latency_max
                if ttft_max > series.since_ttft.max:
                    series.since_ttft.max = ttft_max
            if in_minutes:
                cell = series.minutes.get(bucket)
                if cell is None:
                    cell = series.minutes[bucket] = _Minute()
                _merge(cell.vector, vector)
                if sketch_minutes:
                    add_bins(cell.latency, latency_bins(run_latencies), latency_max)
                    add_bins(cell.ttft, latency_bins(run_ttfts), ttft_max)
                first = key_ranges.get(number, (run_start, 0))[0]
                key_ranges[number] = (first, end)
        # "Recent requests" are the last day's: each key's newest of the part.
        records = block.records
        for number, (first, end) in key_ranges.items():
            recent = all_series[keys[number]].recent
            recent.extend(map(records.__getitem__, order[max(first, end - RECENT_REQUESTS) : end]))
        return totals

    def _add_since_bins(self, offsets: list[float], block: Columns) -> None:
        """Count the part's latencies (successful calls) and TTFTs into the report window's
        sketches of their keys (maxima are kept per run)."""
        latencies = block.numbers("latency_ms")
        oks = list(map(eq, block.texts("status"), _OKS))
        if not all(oks):
            latencies = list(compress(latencies, oks))
            latency_offsets = list(compress(offsets, oks))
        else:
            latency_offsets = offsets
        ttfts = block.column("ttft_ms")
        known = list(map(_is_value, ttfts))
        ttft_values: Sequence[float] = ttfts  # type: ignore[assignment]
        ttft_offsets = offsets
        if not all(known):
            ttft_values = list(compress(ttfts, known))  # type: ignore[arg-type]
            ttft_offsets = list(compress(offsets, known))
        latency_pending, ttft_pending = self._since_pending
        for values, key_offsets, pending in (
            (latencies, latency_offsets, latency_pending),
            (ttft_values, ttft_offsets, ttft_pending),
        ):
            pending.update(map(add, key_offsets, map(bisect_left, repeat(_EDGES), values)))

    def _settle_since_bins(self) -> None:
        """Put the pending counts of block ingest into the keys' report-window sketches."""
        for ttft, pending in enumerate(self._since_pending):
            for code, count in pending.items():
                number = int(code // _KEY_STRIDE)
                series = self._series.get(self._keys[number])
                if series is None:
                    series = self._series[self._keys[number]] = _ModelSeries()
                bins = (series.since_ttft if ttft else series.since_latency).bins
                key = _MIN_KEY + int(code - number * _KEY_STRIDE)
                bins[key] = bins.get(key, 0) + count
            pending.clear()

    def _apply_many(self, records: list[UsageRecord], sign: int, now: float, horizon: float) -> int:
        """Add (sign 1) or take back (sign -1) records; returns how many were older than the
        horizon (and left out).

        The hot path of a catch-up over a month of log: written out flat, with everything the
        loop touches bound to locals, because each lookup and call here is paid per record.
        """
        all_series = self._series
        group = self._group
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
            group_key = group(record)
            series = all_series.get(group_key)
            if series is None:
                series = all_series[group_key] = _ModelSeries()
            series.version += 1
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
                if sign < 0 or second < series.newest_second // 60 * 60:
                    series.settled += 1
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
                    if sign > 0 and epoch > series.newest_second:
                        series.newest_second = epoch
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
        previous, self._now = self._now, second
        # Minutes and quarters leave their windows only when the minute turns; a quiet
        # model's seconds are soon all gone: a prune costs nothing per quiet model.
        minute_turned = second // 60 != previous // 60
        first_minute = (second - MINUTE_WINDOW_S) // 60
        first_quarter = int(self._horizon(now)) // QUARTER_S
        for series in self._series.values():
            if series.seconds:
                _drop_before(series.seconds, second - SECOND_WINDOW_S)
            if minute_turned:
                _drop_before(series.minutes, first_minute)
                _drop_before(series.quarters, first_quarter)

    # -- merging --------------------------------------------------------------------------------
    def absorb_earlier(self, earlier: Store, now: float) -> list[UsageRecord]:
        """Add a store of the part of the log just before this store's records (a history read
        on the side, or one range of a catch-up split across processes), so that this store
        holds what one store fed both parts in order would. Both must have the same ``since``
        and grouping. A request id at the start of this store's part that ends ``earlier``'s
        replaces the earlier record, as it would have record by record; those earlier records
        are returned."""
        if earlier.since != self.since or earlier.group_by != self.group_by:
            raise ValueError("stores of different windows or groupings do not merge")
        self._settle_since_bins()
        earlier._settle_since_bins()
        replaced = self._recent_ids.absorb_earlier(earlier._recent_ids)
        for key, theirs in earlier._series.items():
            ours = self._series.get(key)
            if ours is None:
                ours = self._series[key] = _ModelSeries()
            ours.absorb_earlier(theirs)
        stats = self.stats
        stats.accepted += earlier.stats.accepted
        stats.replaced += earlier.stats.replaced + len(replaced)
        stats.too_old += earlier.stats.too_old
        if earlier.last_epoch is not None:
            self._note_newest(earlier.last_epoch)
        if replaced:
            self._apply_many(replaced, -1, now, self._horizon(now))
        self.version += 1
        self._now = max(self._now, earlier._now)
        self.prune(now)
        return replaced

    def stop_keeping_head(self) -> None:
        """Once nothing more will be merged before this store's records."""
        self.keeps_head = False
        self._recent_ids.stop_keeping_head()

    def __getstate__(self) -> dict[str, object]:
        """Records are packed with msgpack: pickling tens of thousands of structs one by one
        costs more than reading them did (a partial store crosses a process boundary)."""
        self._settle_since_bins()
        state = {name: getattr(self, name) for name in _PLAIN_STATE}
        state["_series"] = {key: series.pack() for key, series in self._series.items()}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name in _PLAIN_STATE:
            object.__setattr__(self, name, state[name])
        self._group = attrgetter(self.group_by)
        self._key_offsets = {}
        self._keys = []
        self._since_pending = (Counter(), Counter())
        packed_series = state["_series"]
        assert isinstance(packed_series, dict)
        self._series = {key: _ModelSeries.unpack(packed) for key, packed in packed_series.items()}

    # -- queries ------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        return sorted(self._series)

    def change_mark(self, model_id: str) -> tuple[int, float]:
        """(how often the model's series changed, its newest request end in the last 15
        minutes or -inf): what a view compares to know whether its figures of the model can
        have moved. (-1, -inf) for a model the store does not know."""
        series = self._series.get(model_id)
        if series is None:
            return -1, -math.inf
        return series.version, series.newest_second

    def settled_mark(self, model_id: str) -> int:
        """Moves when a minute before the model's newest one changes (see ``change_mark``)."""
        series = self._series.get(model_id)
        return -1 if series is None else series.settled

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
        sketch = self.since_sketch(model_id, ttft)
        return sketch.percentiles(self._since_vector(model_id)[TTFT_SUM if ttft else LATENCY_SUM])

    def since_sketch(self, model_id: str | None = None, ttft: bool = False) -> LatencySketch:
        """The merged latency (or TTFT) sketch of everything since ``since``, for histograms."""
        self._settle_since_bins()
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

    def minute_tally(self, model_id: str | None, minute: int) -> Tally:
        """The minute tier's bucket ``minute`` (POSIX seconds // 60)."""
        total = _new_vector()
        for series in self._selected(model_id):
            cell = series.minutes.get(minute)
            if cell is not None:
                _merge(total, cell.vector)
        return _tally(total)

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

    def minute_sketch(
        self, model_id: str | None, first_minute: int, last_minute: int, ttft: bool = False
    ) -> tuple[LatencySketch, float]:
        """The latency (or TTFT) sketch of the minutes ``first_minute..last_minute`` merged,
        and the sum of its values: ``latency`` is this over the minutes a window overlaps."""
        sketch = LatencySketch()
        total_ms = 0.0
        for series in self._selected(model_id):
            minutes = series.minutes
            for minute in range(first_minute, last_minute + 1):
                cell = minutes.get(minute)
                if cell is not None:
                    sketch.merge(cell.ttft if ttft else cell.latency)
                    total_ms += cell.vector[TTFT_SUM if ttft else LATENCY_SUM]
        return sketch, total_ms

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
            # The seconds that have a bucket, found by C loops; each field summed by one.
            vectors = list(filter(None, map(series.seconds.get, range(end - points + 1, end + 1))))
            for slot, index in slots:
                sums[slot] += sum(map(itemgetter(index), vectors))
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


def _merged_vectors(
    earlier: dict[int, list[float]], later: dict[int, list[float]]
) -> dict[int, list[float]]:
    """Bucket sums of two parts, in time order (pruning walks the front of the dict)."""
    merged = {key: list(vector) for key, vector in earlier.items()}
    for key, vector in later.items():
        found = merged.get(key)
        if found is None:
            merged[key] = vector
        else:
            _merge(found, vector)
    return dict(sorted(merged.items()))


def _merge(total: list[float], vector: list[float]) -> None:
    # One C loop (a catch-up merges a few vectors per run of records).
    total[:] = map(add, total, vector)


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

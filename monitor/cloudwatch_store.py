"""CloudWatch `AWS/Bedrock` datapoints, per model, metric, statistic and minute: pure, no I/O.

These numbers are account-wide (every caller, every host) and arrive a few minutes late; they are
kept apart from the local log's store and are never added to it.

CloudWatch revises recent minutes for several minutes after publishing them, so a minute merged
again *replaces* the value held for it (it is never added twice). Minutes without traffic have no
datapoint at all: absent means zero for counts and "no sample" for latencies.

Memory is bounded: each (model, metric, statistic) series is a fixed ring of ``retention_minutes``
slots (16 bytes each: 23 KB per series for a day), allocated only when a datapoint arrives.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

MINUTE_S: Final = 60
DEFAULT_RETENTION_MINUTES: Final = 24 * 60

# Metric names in `AWS/Bedrock`.
INVOCATIONS: Final = "Invocations"
INPUT_TOKENS: Final = "InputTokenCount"
OUTPUT_TOKENS: Final = "OutputTokenCount"
CACHE_READ: Final = "CacheReadInputTokens"
CACHE_WRITE: Final = "CacheWriteInputTokens"
CLIENT_ERRORS: Final = "InvocationClientErrors"
SERVER_ERRORS: Final = "InvocationServerErrors"
THROTTLES: Final = "InvocationThrottles"
OUTPUT_IMAGES: Final = "OutputImageCount"
TPM_QUOTA_USAGE: Final = "EstimatedTPMQuotaUsage"
LATENCY: Final = "InvocationLatency"
TTFT: Final = "TimeToFirstToken"

# The documentation's table and AWS's own dashboards disagree on the cache metric names; both are
# accepted and stored under the documented one.
METRIC_ALIASES: Final[Mapping[str, str]] = {
    "CacheReadInputTokenCount": CACHE_READ,
    "CacheWriteInputTokenCount": CACHE_WRITE,
    # `AWS/BedrockMantle` (the OpenAI- and Anthropic-compatible endpoint) names the same
    # quantities differently; its rows are kept apart from AWS/Bedrock's all the same.
    "Inferences": INVOCATIONS,
    "TotalInputTokens": INPUT_TOKENS,
    "TotalOutputTokens": OUTPUT_TOKENS,
    "InferenceClientErrors": CLIENT_ERRORS,
    "InferenceServerErrors": SERVER_ERRORS,
}

COUNT_METRICS: Final = (
    INVOCATIONS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    CACHE_READ,
    CACHE_WRITE,
    CLIENT_ERRORS,
    SERVER_ERRORS,
    THROTTLES,
    OUTPUT_IMAGES,
    TPM_QUOTA_USAGE,
)
LATENCY_METRICS: Final = (LATENCY, TTFT)
KNOWN_METRICS: Final = frozenset(COUNT_METRICS + LATENCY_METRICS)
PERCENTILE_STATS: Final = ("p50", "p90", "p99")

SUM: Final = "Sum"
AVERAGE: Final = "Average"
MAXIMUM: Final = "Maximum"
SAMPLE_COUNT: Final = "SampleCount"

SeriesKey = tuple[str, str]  # (metric, statistic)


def canonical_metric(name: str) -> str:
    """The name a metric is stored under (both cache spellings map to the documented one)."""
    return METRIC_ALIASES.get(name, name)


def minute_of(epoch_s: float) -> int:
    """The minute index (epoch seconds // 60) a timestamp falls in."""
    return int(epoch_s // MINUTE_S)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds. Percentiles are None when CloudWatch did not give them (an endpoint that
    refuses percentile statistics, or a window longer than the one they were asked for)."""

    avg: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "p50": _round(self.p50),
            "p90": _round(self.p90),
            "p99": _round(self.p99),
            "avg": _round(self.avg),
            "max": _round(self.max),
        }


@dataclass(frozen=True, slots=True)
class CloudWatchTotals:
    """Account-wide counts over a window, as CloudWatch reports them."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    client_errors: int = 0
    server_errors: int = 0
    throttles: int = 0
    output_images: int = 0
    latency_ms: LatencySummary = LatencySummary()
    ttft_ms: LatencySummary = LatencySummary()

    @property
    def errors(self) -> int:
        return self.client_errors + self.server_errors

    @classmethod
    def from_window_stats(cls, stats: Mapping[SeriesKey, float]) -> CloudWatchTotals:
        """Totals from statistics that each cover the whole window (one datapoint per series)."""

        def count(metric: str) -> int:
            value = stats.get((metric, SUM), 0.0)
            # Finite values can still add up to infinity: such a sum is no count at all.
            return round(value) if math.isfinite(value) else 0

        def latency(metric: str) -> LatencySummary:
            return LatencySummary(
                avg=stats.get((metric, AVERAGE)),
                max=stats.get((metric, MAXIMUM)),
                p50=stats.get((metric, "p50")),
                p90=stats.get((metric, "p90")),
                p99=stats.get((metric, "p99")),
            )

        return cls.from_lookups(count, latency)

    @classmethod
    def from_lookups(
        cls, count: Callable[[str], int], latency: Callable[[str], LatencySummary]
    ) -> CloudWatchTotals:
        """Totals from a count per metric name and a latency summary per latency metric."""
        return cls(
            requests=count(INVOCATIONS),
            input_tokens=count(INPUT_TOKENS),
            output_tokens=count(OUTPUT_TOKENS),
            cache_read_input_tokens=count(CACHE_READ),
            cache_write_input_tokens=count(CACHE_WRITE),
            client_errors=count(CLIENT_ERRORS),
            server_errors=count(SERVER_ERRORS),
            throttles=count(THROTTLES),
            output_images=count(OUTPUT_IMAGES),
            latency_ms=latency(LATENCY),
            ttft_ms=latency(TTFT),
        )

    def as_report(self) -> dict[str, object]:
        """The report's per-model ``cloudwatch`` object."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
            "errors": self.errors,
            "throttles": self.throttles,
            "latency_ms": self.latency_ms.as_dict(),
            "ttft_ms": self.ttft_ms.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class PeriodTotal:
    """A coarse Sum over [start, as_of) from one large-Period query (budget periods)."""

    start: float
    as_of: float
    value: float


class MinuteRing:
    """Values for the most recent ``size`` minutes; a slot is reused when its minute ages out."""

    __slots__ = ("_minutes", "_size", "_values", "newest")

    def __init__(self, size: int) -> None:
        self._size = size
        self._minutes = array("q", [-1]) * size
        self._values = array("d", [0.0]) * size
        self.newest = -1

    def set(self, minute: int, value: float) -> bool:
        """Store (or replace) a minute's value; False when nothing changed or it is too old."""
        if minute <= self.newest - self._size:
            return False
        slot = minute % self._size
        if self._minutes[slot] == minute and self._values[slot] == value:
            return False
        self._minutes[slot] = minute
        self._values[slot] = value
        if minute > self.newest:
            self.newest = minute
        return True

    def get(self, minute: int) -> float | None:
        slot = minute % self._size
        return self._values[slot] if self._minutes[slot] == minute else None

    def items(self, first: int, last: int) -> Iterable[tuple[int, float]]:
        """(minute, value) for minutes in [first, last) that hold a value, oldest first."""
        first = max(first, self.newest - self._size + 1)
        last = min(last, self.newest + 1)
        minutes, values, size = self._minutes, self._values, self._size
        for minute in range(first, last):
            slot = minute % size
            if minutes[slot] == minute:
                yield minute, values[slot]


class CloudWatchStore:
    """Per model: per (metric, statistic) minute rings, plus period-to-date totals."""

    def __init__(self, retention_minutes: int = DEFAULT_RETENTION_MINUTES) -> None:
        if retention_minutes < 1:
            raise ValueError("retention_minutes must be at least 1")
        self.retention_minutes = retention_minutes
        self._series: dict[str, dict[SeriesKey, MinuteRing]] = {}
        self._period_totals: dict[tuple[str, str, str], PeriodTotal] = {}
        # Bumped on every change, so a view can skip redrawing when nothing moved.
        self.version = 0

    # -- writing -------------------------------------------------------------------------------

    def merge(
        self,
        model_id: str,
        metric: str,
        stat: str,
        points: Iterable[tuple[float, float]],
    ) -> int:
        """Put (epoch seconds, value) datapoints; a minute already held is replaced. Returns how
        many minutes changed."""
        key = (canonical_metric(metric), stat)
        series = self._series.setdefault(model_id, {})
        ring = series.get(key)
        changed = 0
        for epoch_s, value in points:
            if ring is None:
                ring = series[key] = MinuteRing(self.retention_minutes)
            if ring.set(minute_of(epoch_s), float(value)):
                changed += 1
        if changed:
            self.version += 1
        return changed

    def set_period_total(
        self, model_id: str, metric: str, period: str, start: float, as_of: float, value: float
    ) -> None:
        """Record a coarse Sum over [start, as_of) for a budget period named ``period``."""
        key = (model_id, canonical_metric(metric), period)
        total = PeriodTotal(start=start, as_of=as_of, value=float(value))
        if self._period_totals.get(key) != total:
            self._period_totals[key] = total
            self.version += 1

    # -- reading -------------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Models with at least one datapoint or period total, sorted."""
        with_totals = {model for model, _, _ in self._period_totals}
        return sorted(set(self._series) | with_totals)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._series

    def has_series(self, model_id: str, metric: str, stat: str) -> bool:
        """Whether any datapoint of this series has arrived (it may have aged out since)."""
        return self._ring(model_id, metric, stat) is not None

    def value(self, model_id: str, metric: str, stat: str, epoch_s: float) -> float | None:
        """The datapoint of the minute holding ``epoch_s``, or None when there is none."""
        ring = self._ring(model_id, metric, stat)
        return None if ring is None else ring.get(minute_of(epoch_s))

    def points(
        self, model_id: str, metric: str, stat: str, start: float, end: float
    ) -> list[tuple[int, float]]:
        """(minute start epoch seconds, value) for the minutes in [start, end) that have data."""
        ring = self._ring(model_id, metric, stat)
        if ring is None:
            return []
        first, last = _minute_range(start, end)
        return [(minute * MINUTE_S, value) for minute, value in ring.items(first, last)]

    def minute_series(
        self, model_id: str, metric: str, stat: str, start: float, end: float
    ) -> list[float | None]:
        """One entry per minute in [start, end), None where CloudWatch has no datapoint (charts)."""
        first, last = _minute_range(start, end)
        values: list[float | None] = [None] * max(0, last - first)
        ring = self._ring(model_id, metric, stat)
        if ring is not None:
            for minute, value in ring.items(first, last):
                values[minute - first] = value
        return values

    def sum(self, model_id: str, metric: str, start: float, end: float) -> float:
        """Sum over the minutes in [start, end) (absent minutes count as zero)."""
        ring = self._ring(model_id, metric, SUM)
        if ring is None:
            return 0.0
        first, last = _minute_range(start, end)
        return sum(value for _, value in ring.items(first, last))

    def latency_window(
        self, model_id: str, metric: str, start: float, end: float
    ) -> LatencySummary:
        """Average (weighted by each minute's sample count) and maximum over [start, end).

        Percentiles cannot be combined across minutes, so they are left out; see
        :meth:`latency_minute`. The weight of a minute is its SampleCount when that was fetched,
        else (for InvocationLatency) its Invocations, since every invocation reports a latency.
        """
        first, last = _minute_range(start, end)
        averages = self._ring(model_id, metric, AVERAGE)
        maxima = self._ring(model_id, metric, MAXIMUM)
        weights = self._ring(model_id, metric, SAMPLE_COUNT)
        if weights is None and metric == LATENCY:
            weights = self._ring(model_id, INVOCATIONS, SUM)
        weighted = total_weight = 0.0
        unweighted: list[float] = []
        if averages is not None:
            for minute, avg in averages.items(first, last):
                weight = weights.get(minute) if weights is not None else None
                if weight is not None and weight > 0:
                    weighted += avg * weight
                    total_weight += weight
                else:
                    unweighted.append(avg)
        mean: float | None = None
        if total_weight > 0:
            mean = weighted / total_weight
        elif unweighted:
            mean = sum(unweighted) / len(unweighted)
        peak: float | None = None
        if maxima is not None:
            peak = max((value for _, value in maxima.items(first, last)), default=None)
        return LatencySummary(avg=mean, max=peak)

    def latency_minute(self, model_id: str, metric: str, epoch_s: float) -> LatencySummary:
        """One minute's latency statistics, percentiles included when they were fetched."""

        def stat(name: str) -> float | None:
            return self.value(model_id, metric, name, epoch_s)

        return LatencySummary(
            avg=stat(AVERAGE), max=stat(MAXIMUM), p50=stat("p50"), p90=stat("p90"), p99=stat("p99")
        )

    def totals(self, model_id: str, start: float, end: float) -> CloudWatchTotals:
        """Counts and latency over the minutes in [start, end)."""

        def count(metric: str) -> int:
            return round(self.sum(model_id, metric, start, end))

        def latency(metric: str) -> LatencySummary:
            return self.latency_window(model_id, metric, start, end)

        return CloudWatchTotals.from_lookups(count, latency)

    def newest_minute(self, model_id: str | None = None) -> float | None:
        """Start (epoch seconds) of the newest minute holding any datapoint."""
        models = [model_id] if model_id is not None else list(self._series)
        newest = max(
            (
                ring.newest
                for model in models
                for ring in self._series.get(model, {}).values()
                if ring.newest >= 0
            ),
            default=None,
        )
        return None if newest is None else float(newest * MINUTE_S)

    def period_total(self, model_id: str, metric: str, period: str) -> PeriodTotal | None:
        return self._period_totals.get((model_id, canonical_metric(metric), period))

    def period_to_date(self, model_id: str, metric: str, period: str, now: float) -> float | None:
        """The period's coarse total, brought up to ``now`` with the per-minute sums fetched
        since it was taken. None when no coarse total has been fetched for this period yet."""
        total = self.period_total(model_id, metric, period)
        if total is None:
            return None
        return total.value + self.sum(model_id, metric, total.as_of, now)

    def _ring(self, model_id: str, metric: str, stat: str) -> MinuteRing | None:
        return self._series.get(model_id, {}).get((canonical_metric(metric), stat))


def _minute_range(start: float, end: float) -> tuple[int, int]:
    """Minute indices [first, last) of the minutes that start inside [start, end)."""
    # A minute that began before ``start`` is left out; one that begins before ``end`` is in.
    return math.ceil(start / MINUTE_S), math.ceil(end / MINUTE_S)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def combine_report_objects(objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Account-wide totals from the per-model ``cloudwatch`` report objects: counts add up, the
    average is weighted by requests, the maximum is the largest; percentiles cannot be combined
    and are null."""
    items = list(objects)
    counts = (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "errors",
        "throttles",
    )
    combined: dict[str, Any] = {
        key: sum(int(item.get(key) or 0) for item in items) for key in counts
    }
    for latency_key in ("latency_ms", "ttft_ms"):
        weighted = weight = 0.0
        peak: float | None = None
        for item in items:
            latency = item.get(latency_key) or {}
            avg, top = latency.get("avg"), latency.get("max")
            requests = float(item.get("requests") or 0)
            if avg is not None and requests > 0:
                weighted += float(avg) * requests
                weight += requests
            if top is not None:
                peak = float(top) if peak is None else max(peak, float(top))
        combined[latency_key] = LatencySummary(
            avg=weighted / weight if weight else None, max=peak
        ).as_dict()
    return combined

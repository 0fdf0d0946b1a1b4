"""Per-app, account-wide numbers from CloudWatch's ``BedrockTop`` namespace: pure, no I/O.

The wrapper's EMF blocks (``monitor.emf``) make CloudWatch add up every instrumented host's and
Lambda's calls per ``[App, ModelId]``, per minute. These datapoints are kept here, per app and
model, apart from the local log's store and from ``AWS/Bedrock``'s numbers (which count every
caller, instrumented or not): the three are never added together.

A minute merged again replaces the value held for it (CloudWatch revises recent minutes); memory
is bounded by ``retention_minutes`` per series and ``max_series`` series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from monitor.cloudwatch_store import MINUTE_S, MinuteRing, minute_of
from monitor.emf import (
    CACHE_READ,
    CACHE_WRITE,
    ERRORS,
    INPUT_TOKENS,
    LATENCY,
    NAMESPACE,
    OUTPUT_TOKENS,
    REQUESTS,
    THROTTLES,
)

SUM: Final = "Sum"
AVERAGE: Final = "Average"
SAMPLE_COUNT: Final = "SampleCount"
MAXIMUM: Final = "Maximum"
DEFAULT_RETENTION_MINUTES: Final = 3 * 60
# (app, model) pairs kept at most; the source asks CloudWatch for no more than these.
MAX_SERIES: Final = 500

SeriesKey = tuple[str, str]  # (metric, statistic)


@dataclass(frozen=True, slots=True)
class AppTotals:
    """One app's (or one app and model's) account-wide counts over a window."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    errors: int = 0
    throttles: int = 0
    latency_avg_ms: float | None = None  # successful calls, weighted by their number
    latency_max_ms: float | None = None
    latency_samples: int = 0

    def __add__(self, other: AppTotals) -> AppTotals:
        samples = self.latency_samples + other.latency_samples
        avg: float | None = None
        if samples:
            avg = (
                (self.latency_avg_ms or 0.0) * self.latency_samples
                + (other.latency_avg_ms or 0.0) * other.latency_samples
            ) / samples
        maxima = [m for m in (self.latency_max_ms, other.latency_max_ms) if m is not None]
        return AppTotals(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_write_input_tokens=self.cache_write_input_tokens + other.cache_write_input_tokens,
            errors=self.errors + other.errors,
            throttles=self.throttles + other.throttles,
            latency_avg_ms=avg,
            latency_max_ms=max(maxima) if maxima else None,
            latency_samples=samples,
        )

    def as_report(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
            "errors": self.errors,
            "throttles": self.throttles,
            "latency_ms": {"avg": _round(self.latency_avg_ms), "max": _round(self.latency_max_ms)},
        }

    @classmethod
    def from_window_stats(cls, stats: dict[SeriesKey, float]) -> AppTotals:
        """Totals from statistics that each cover the whole window."""

        def count(metric: str) -> int:
            return round(stats.get((metric, SUM), 0.0))

        return cls(
            requests=count(REQUESTS),
            input_tokens=count(INPUT_TOKENS),
            output_tokens=count(OUTPUT_TOKENS),
            cache_read_input_tokens=count(CACHE_READ),
            cache_write_input_tokens=count(CACHE_WRITE),
            errors=count(ERRORS),
            throttles=count(THROTTLES),
            latency_avg_ms=stats.get((LATENCY, AVERAGE)),
            latency_max_ms=stats.get((LATENCY, MAXIMUM)),
            latency_samples=round(stats.get((LATENCY, SAMPLE_COUNT), 0.0)),
        )


@dataclass(frozen=True, slots=True)
class AppRates:
    """Per-minute rates over the ``window_s`` seconds that end at ``as_of``."""

    requests_per_min: float
    input_tokens_per_min: float
    output_tokens_per_min: float
    errors: int
    throttles: int
    window_s: int
    as_of: float  # end of the window: the newest minute CloudWatch has, plus one minute

    def as_report(self) -> dict[str, object]:
        return {
            "requests_per_min": round(self.requests_per_min, 3),
            "input_tokens_per_min": round(self.input_tokens_per_min, 3),
            "output_tokens_per_min": round(self.output_tokens_per_min, 3),
            "errors": self.errors,
            "throttles": self.throttles,
            "window_s": self.window_s,
        }


class AppMetricsStore:
    """Per (app, model): per (metric, statistic) minute rings."""

    def __init__(
        self, retention_minutes: int = DEFAULT_RETENTION_MINUTES, max_series: int = MAX_SERIES
    ) -> None:
        if retention_minutes < 1:
            raise ValueError("retention_minutes must be at least 1")
        self.retention_minutes = retention_minutes
        self.max_series = max_series
        self._series: dict[tuple[str, str], dict[SeriesKey, MinuteRing]] = {}
        self.dropped_series = 0  # pairs refused beyond max_series
        self.version = 0  # bumped on every change, so views redraw only when something moved

    def merge(
        self, app: str, model_id: str, metric: str, stat: str, points: Iterable[tuple[float, float]]
    ) -> int:
        """Put (epoch seconds, value) datapoints; a minute already held is replaced. Returns how
        many minutes changed."""
        pair = (app, model_id)
        series = self._series.get(pair)
        if series is None:
            if len(self._series) >= self.max_series:
                self.dropped_series += 1
                return 0
            series = self._series[pair] = {}
        changed = 0
        ring = series.get((metric, stat))
        for epoch_s, value in points:
            if ring is None:
                ring = series[(metric, stat)] = MinuteRing(self.retention_minutes)
            if ring.set(minute_of(epoch_s), float(value)):
                changed += 1
        if changed:
            self.version += 1
        return changed

    def apps(self) -> list[str]:
        return sorted({app for app, _ in self._series})

    def models_of(self, app: str) -> list[str]:
        return sorted(model for each, model in self._series if each == app)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (app, model) pair held, sorted."""
        return sorted(self._series)

    def points(
        self, app: str, model_id: str, metric: str, start: float, end: float
    ) -> list[tuple[int, float]]:
        """(minute start, Sum) for the minutes in [start, end) that have data (counters)."""
        ring = self._series.get((app, model_id), {}).get((metric, SUM))
        if ring is None:
            return []
        first, last = math.ceil(start / MINUTE_S), math.ceil(end / MINUTE_S)
        return [(minute * MINUTE_S, value) for minute, value in ring.items(first, last)]

    def newest_minute(self) -> float | None:
        """Start (epoch seconds) of the newest minute holding any datapoint."""
        newest = max(
            (ring.newest for rings in self._series.values() for ring in rings.values()),
            default=-1,
        )
        return None if newest < 0 else float(newest * MINUTE_S)

    def totals(self, app: str, start: float, end: float, model_id: str | None = None) -> AppTotals:
        """Counts and latency over the minutes in [start, end), of one model or all of them."""
        models = [model_id] if model_id is not None else self.models_of(app)
        total = AppTotals()
        for model in models:
            total = total + self._pair_totals(self._series.get((app, model), {}), start, end)
        return total

    def rates(self, app: str, window_s: int, end: float | None = None) -> AppRates:
        """Per-minute rates over the ``window_s`` seconds up to ``end`` (default: the end of the
        newest minute CloudWatch has for any app, since its data arrives minutes late)."""
        if end is None:
            newest = self.newest_minute()
            end = 0.0 if newest is None else newest + MINUTE_S
        total = self.totals(app, end - window_s, end)
        minutes = window_s / MINUTE_S
        return AppRates(
            requests_per_min=total.requests / minutes,
            input_tokens_per_min=total.input_tokens / minutes,
            output_tokens_per_min=total.output_tokens / minutes,
            errors=total.errors,
            throttles=total.throttles,
            window_s=window_s,
            as_of=end,
        )

    def _pair_totals(
        self, series: dict[SeriesKey, MinuteRing], start: float, end: float
    ) -> AppTotals:
        first, last = math.ceil(start / MINUTE_S), math.ceil(end / MINUTE_S)

        def count(metric: str) -> int:
            ring = series.get((metric, SUM))
            if ring is None:
                return 0
            return round(sum(value for _, value in ring.items(first, last)))

        weighted = samples = 0.0
        averages = series.get((LATENCY, AVERAGE))
        weights = series.get((LATENCY, SAMPLE_COUNT))
        if averages is not None and weights is not None:
            for minute, avg in averages.items(first, last):
                weight = weights.get(minute) or 0.0
                weighted += avg * weight
                samples += weight
        maxima = series.get((LATENCY, MAXIMUM))
        peak = None
        if maxima is not None:
            peak = max((value for _, value in maxima.items(first, last)), default=None)
        return AppTotals(
            requests=count(REQUESTS),
            input_tokens=count(INPUT_TOKENS),
            output_tokens=count(OUTPUT_TOKENS),
            cache_read_input_tokens=count(CACHE_READ),
            cache_write_input_tokens=count(CACHE_WRITE),
            errors=count(ERRORS),
            throttles=count(THROTTLES),
            latency_avg_ms=weighted / samples if samples else None,
            latency_max_ms=peak,
            latency_samples=round(samples),
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def apps_report(
    totals: dict[str, dict[str, AppTotals]],
    window_s: float,
    cost: Callable[[str, AppTotals], float | None],
) -> list[dict[str, object]]:
    """The report's ``apps_cloudwatch`` list: one object per app (account-wide, every host that
    ships EMF), its models inside, busiest first. ``cost`` prices one model's totals (None when
    the model has no price); an app's ``cost_usd`` adds its priced models and names the others
    in ``unpriced_models``."""
    minutes = max(window_s, MINUTE_S) / MINUTE_S
    apps: list[dict[str, object]] = []
    for app, models in totals.items():
        app_total = AppTotals()
        model_objects: list[dict[str, object]] = []
        priced: list[float] = []
        unpriced: list[str] = []
        for model_id, each in sorted(models.items()):
            app_total = app_total + each
            price = cost(model_id, each)
            if price is None:
                unpriced.append(model_id)
            else:
                priced.append(price)
            model_objects.append(
                {"model_id": model_id, **each.as_report(), "cost_usd": _money(price)}
            )
        model_objects.sort(key=_busiest)
        apps.append(
            {
                "app": app,
                "source": "cloudwatch",
                "namespace": NAMESPACE,
                **app_total.as_report(),
                "cost_usd": _money(sum(priced)) if priced else None,
                "unpriced_models": unpriced,
                "rates": {
                    "requests_per_min": round(app_total.requests / minutes, 3),
                    "input_tokens_per_min": round(app_total.input_tokens / minutes, 3),
                    "output_tokens_per_min": round(app_total.output_tokens / minutes, 3),
                    "window_s": round(window_s),
                },
                "models": model_objects,
            }
        )
    apps.sort(key=lambda entry: (_busiest(entry), str(entry["app"])))
    return apps


def _busiest(entry: dict[str, object]) -> int:
    tokens = entry.get("input_tokens", 0), entry.get("output_tokens", 0)
    return -sum(int(value) for value in tokens if isinstance(value, int))


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 6)

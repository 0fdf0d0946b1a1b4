"""What the Prometheus endpoint publishes, as plain values: pure, no I/O, no prometheus_client.

A :class:`MetricsBoard` holds *registrations*: a source (the local log's store, later the
fleet's, CloudWatch) is one :meth:`MetricsBoard.add_source` call (its counts and its health), a
gauge family (budgets, later quotas) one :meth:`MetricsBoard.add_gauge` call. A scrape asks the
board for a :class:`MetricsSnapshot`, taken on the thread that owns the stores;
``monitor.exporter`` turns it into prometheus_client families.

Numbers from different sources are never added: each sample carries its ``source`` label, and the
local log's counters are exactly the report's ``local`` totals over the same window (the store's
``since`` tallies, which only grow while ``since`` stays put).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from monitor import emf
from monitor.app_metrics_store import AppMetricsStore
from monitor.cloudwatch_store import (
    CACHE_READ,
    CACHE_WRITE,
    CLIENT_ERRORS,
    INPUT_TOKENS,
    INVOCATIONS,
    OUTPUT_TOKENS,
    SERVER_ERRORS,
    SUM,
    THROTTLES,
    CloudWatchStore,
)
from monitor.sources.aws import ERROR, OK, STARTING, SourceHealth
from monitor.store import LatencySketch, Store, Tally

# Seconds. Bedrock calls take from a few hundred milliseconds to minutes; TTFT is shorter.
LATENCY_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Model ids get their own label value in the order they first appear, up to this many per source;
# later ones are counted under OTHER_MODELS, so that a log full of made-up ids cannot grow the
# series count without bound (and a model never moves between label values, so counters stay
# monotonic).
MAX_MODEL_LABELS: Final = 100
OTHER_MODELS: Final = "other"

_FAR_FUTURE: Final = 2.0**40  # an end bound past any minute a source holds

LabelSet = tuple[tuple[str, str], ...]  # (name, value) pairs in a fixed order


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts at upper bounds in seconds (the +Inf bucket is ``count``)."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_s: float


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One label set's counters and histograms."""

    labels: LabelSet
    tally: Tally
    cost_usd: float | None = None  # None: unpriced, and no cost sample is published
    latency: Histogram | None = None
    ttft: Histogram | None = None


@dataclass(frozen=True, slots=True)
class GaugeSample:
    labels: LabelSet
    value: float


@dataclass(frozen=True, slots=True)
class GaugeFamily:
    name: str  # without the bedrock_top_ prefix
    documentation: str
    label_names: tuple[str, ...]
    samples: tuple[GaugeSample, ...]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    usage: tuple[UsageSample, ...]
    gauges: tuple[GaugeFamily, ...]
    # POSIX time the counters started from (the report window's start): OpenMetrics' _created.
    created: float | None = None


UsageReader = Callable[[], Iterable[UsageSample]]
GaugeReader = Callable[[], Iterable[GaugeSample]]
HealthReader = Callable[[], SourceHealth]
# A source made of several (one per region polled), whose number can grow while it runs.
HealthsReader = Callable[[], Sequence[SourceHealth]]


@dataclass(frozen=True, slots=True)
class _Gauge:
    name: str
    documentation: str
    label_names: tuple[str, ...]
    read: GaugeReader


@dataclass
class MetricsBoard:
    """The registrations a scrape reads, in order."""

    created: float | None = None
    _usage: list[UsageReader] = field(default_factory=list)
    _gauges: list[_Gauge] = field(default_factory=list)
    _health: list[HealthReader] = field(default_factory=list)
    _healths: list[HealthsReader] = field(default_factory=list)

    def add_usage(self, read: UsageReader) -> None:
        """A usage source: its samples carry their own ``source`` label."""
        self._usage.append(read)

    def add_source(self, usage: UsageReader | None, health: HealthReader) -> None:
        """A source: its usage (if it has counts) and its health, which feeds the
        ``source_up`` and ``source_cost_per_hour_usd`` gauges."""
        if usage is not None:
            self._usage.append(usage)
        self._health.append(health)

    def add_sources(self, usage: UsageReader, healths: HealthsReader) -> None:
        """Sources read as one (one per region polled): their usage, and their healths, each
        named apart (e.g. ``cloudwatch:eu-central-1``)."""
        self._usage.append(usage)
        self._healths.append(healths)

    def add_gauge(
        self, name: str, documentation: str, label_names: Sequence[str], read: GaugeReader
    ) -> None:
        self._gauges.append(_Gauge(name, documentation, tuple(label_names), read))

    def snapshot(self) -> MetricsSnapshot:
        usage = tuple(sample for read in self._usage for sample in read())
        gauges = [
            GaugeFamily(g.name, g.documentation, g.label_names, tuple(g.read()))
            for g in self._gauges
        ]
        if self._health or self._healths:
            states = [read() for read in self._health]
            states += [health for read in self._healths for health in read()]
            gauges.append(
                GaugeFamily(
                    "source_up",
                    "1 when the source's state is ok",
                    ("source",),
                    tuple(GaugeSample((("source", h.name),), float(h.up)) for h in states),
                )
            )
            gauges.append(
                GaugeFamily(
                    "source_cost_per_hour_usd",
                    "What the source's own requests cost the AWS bill per hour (projected)",
                    ("source",),
                    tuple(GaugeSample((("source", h.name),), h.cost_per_hour_usd) for h in states),
                )
            )
        return MetricsSnapshot(usage=usage, gauges=tuple(gauges), created=self.created)


def histogram(
    sketch: LatencySketch, count: int, sum_ms: float, bounds_s: Sequence[float]
) -> Histogram:
    """A Prometheus histogram from a latency sketch: bucket counts within the sketch's relative
    error of each bound; ``count`` and ``sum_ms`` are the store's exact figures."""
    buckets = tuple((bound, min(count, sketch.count_at_most(bound * 1000.0))) for bound in bounds_s)
    return Histogram(buckets=buckets, count=count, sum_s=sum_ms / 1000.0)


class ModelLabels:
    """Sticky, bounded label values for model ids (see ``MAX_MODEL_LABELS``)."""

    def __init__(self, limit: int = MAX_MODEL_LABELS) -> None:
        self.limit = limit
        self._named: dict[str, None] = {}

    def label(self, model_id: str) -> str:
        if model_id in self._named:
            return model_id
        if len(self._named) < self.limit:
            self._named[model_id] = None
            return model_id
        return OTHER_MODELS


CostOf = Callable[[str, Tally], float | None]


def store_usage(
    store: Store, source: str, cost: CostOf | None = None, labels: ModelLabels | None = None
) -> UsageReader:
    """The usage reader of a log store (the local log; the fleet's store alike): per model, the
    tallies, priced cost and latency/TTFT histograms since the store's ``since``."""
    names = labels or ModelLabels()

    def read() -> list[UsageSample]:
        grouped: dict[str, list[str]] = {}
        for model_id in store.model_ids():
            grouped.setdefault(names.label(model_id), []).append(model_id)
        samples = []
        for label, model_ids in grouped.items():
            samples.append(_store_sample(store, source, label, model_ids, cost))
        return samples

    return read


def _store_sample(
    store: Store, source: str, label: str, model_ids: list[str], cost: CostOf | None
) -> UsageSample:
    tally = Tally()
    priced: list[float] = []
    latency_sketch, ttft_sketch = LatencySketch(), LatencySketch()
    latency_count = ttft_count = 0
    latency_sum = ttft_sum = 0.0
    for model_id in model_ids:
        model_tally = store.since_tally(model_id)
        tally = tally + model_tally
        if cost is not None:
            usd = cost(model_id, model_tally)
            if usd is not None:
                priced.append(usd)
        latency_sketch.merge(store.since_sketch(model_id))
        ttft_sketch.merge(store.since_sketch(model_id, ttft=True))
        count, total = store.since_sum_ms(model_id)
        latency_count, latency_sum = latency_count + count, latency_sum + total
        count, total = store.since_sum_ms(model_id, ttft=True)
        ttft_count, ttft_sum = ttft_count + count, ttft_sum + total
    return UsageSample(
        labels=(("model_id", label), ("source", source)),
        tally=tally,
        cost_usd=sum(priced) if priced else None,
        latency=histogram(latency_sketch, latency_count, latency_sum, LATENCY_BUCKETS_S),
        ttft=histogram(ttft_sketch, ttft_count, ttft_sum, TTFT_BUCKETS_S),
    )


class RevisedMinuteTotal:
    """A monotonic total of per-minute sums that their source keeps revising for a while
    (CloudWatch's minutes): minutes still open to revision are held one by one and replaced as
    they change; once a minute is older than ``revise_s`` before the source's last good read it
    is folded into a closed total and forgotten, so memory is bounded by the revision window and
    the total never depends on how long the source's own history is kept."""

    def __init__(self, since: float, revise_s: float) -> None:
        self.since = since
        self.revise_s = revise_s
        self._closed = 0.0
        self._closed_before = since  # minute starts below this are in the closed total
        self._open: dict[float, float] = {}

    def update(self, points: Iterable[tuple[float, float]], settled_at: float | None) -> float:
        """``points``: (minute start, value) for every minute since the last closed one that the
        source holds; ``settled_at``: the source's last good read (None: nothing is settled)."""
        for minute, value in points:
            if minute >= self._closed_before:
                # A revision that shrinks a minute is taken as the source's late correction,
                # but never below what was already published: a counter does not go back.
                self._open[minute] = max(value, self._open.get(minute, 0.0))
        if settled_at is not None:
            edge = settled_at - self.revise_s
            for minute in [m for m in self._open if m + 60 <= edge]:
                self._closed += self._open.pop(minute)
            self._closed_before = max(self._closed_before, edge - edge % 60)
        return self.value

    @property
    def value(self) -> float:
        return self._closed + sum(self._open.values())

    @property
    def open_from(self) -> float:
        """The earliest minute start still open: read the source from here."""
        return self._closed_before


# Tally fields in order, and the CloudWatch metric each is read from.
_CLOUDWATCH_FIELDS: Final = (
    ("requests", INVOCATIONS),
    ("input_tokens", INPUT_TOKENS),
    ("output_tokens", OUTPUT_TOKENS),
    ("cache_read_input_tokens", CACHE_READ),
    ("cache_write_input_tokens", CACHE_WRITE),
    ("client_errors", CLIENT_ERRORS),
    ("server_errors", SERVER_ERRORS),
    ("throttles", THROTTLES),
)


def cloudwatch_usage(
    store: CloudWatchStore,
    since: float,
    settled_at: Callable[[], float | None],
    revise_s: float,
    cost: CostOf | None = None,
    labels: ModelLabels | None = None,
    source: str = "cloudwatch",
) -> UsageReader:
    """The usage reader of CloudWatch's minutes: account-wide counts since ``since``, each a
    :class:`RevisedMinuteTotal` (CloudWatch revises recent minutes). ``settled_at`` gives the
    poller's last good poll. No histograms: CloudWatch gives averages and percentiles per minute,
    which cannot be turned into bucket counts."""
    names = labels or ModelLabels()
    totals: dict[tuple[str, str], RevisedMinuteTotal] = {}

    def read() -> list[UsageSample]:
        settled = settled_at()
        grouped: dict[str, list[int]] = {}
        for model_id in store.model_ids():
            counts = []
            for _field, metric in _CLOUDWATCH_FIELDS:
                total = totals.get((model_id, metric))
                if total is None:
                    total = totals[(model_id, metric)] = RevisedMinuteTotal(since, revise_s)
                points = store.points(model_id, metric, SUM, total.open_from, _FAR_FUTURE)
                counts.append(round(total.update(points, settled)))
            label = names.label(model_id)
            previous = grouped.get(label)
            grouped[label] = (
                counts
                if previous is None
                else [a + b for a, b in zip(previous, counts, strict=True)]
            )
        samples = []
        for label, counts in grouped.items():
            tally = Tally(
                **{f: n for (f, _metric), n in zip(_CLOUDWATCH_FIELDS, counts, strict=True)}
            )
            usd = None
            if cost is not None and label != OTHER_MODELS:
                usd = cost(label, tally)
            samples.append(
                UsageSample(
                    labels=(("model_id", label), ("source", source)), tally=tally, cost_usd=usd
                )
            )
        return samples

    return read


# Tally fields and the BedrockTop (EMF) metric each is read from. EMF counts errors as one
# metric; they are kept as server errors here, and only their sum (``errors``) is published.
_APP_FIELDS: Final = (
    ("requests", emf.REQUESTS),
    ("input_tokens", emf.INPUT_TOKENS),
    ("output_tokens", emf.OUTPUT_TOKENS),
    ("cache_read_input_tokens", emf.CACHE_READ),
    ("cache_write_input_tokens", emf.CACHE_WRITE),
    ("server_errors", emf.ERRORS),
    ("throttles", emf.THROTTLES),
)


def app_metrics_usage(
    store: AppMetricsStore,
    since: float,
    settled_at: Callable[[], float | None],
    revise_s: float,
    cost: CostOf | None = None,
    source: str = "apps_cloudwatch",
) -> UsageReader:
    """The usage reader of the ``BedrockTop`` namespace (the wrapper's EMF blocks, added up by
    CloudWatch over every instrumented host): account-wide counts per app and model since
    ``since``, with an ``app`` label. The store holds at most ``MAX_SERIES`` pairs, which bounds
    the label sets."""
    totals: dict[tuple[str, str, str], RevisedMinuteTotal] = {}

    def read() -> list[UsageSample]:
        settled = settled_at()
        samples = []
        for app, model_id in store.pairs():
            counts: dict[str, int] = {}
            for field_name, metric in _APP_FIELDS:
                total = totals.get((app, model_id, metric))
                if total is None:
                    total = totals[(app, model_id, metric)] = RevisedMinuteTotal(since, revise_s)
                points = store.points(app, model_id, metric, total.open_from, _FAR_FUTURE)
                counts[field_name] = round(total.update(points, settled))
            tally = Tally(**counts)
            samples.append(
                UsageSample(
                    labels=(("model_id", model_id), ("source", source), ("app", app)),
                    tally=tally,
                    cost_usd=None if cost is None else cost(model_id, tally),
                )
            )
        return samples

    return read


def log_health(name: str, state: Mapping[str, object]) -> SourceHealth:
    """A log source's health from its tailer's state (``LogSourceState.as_dict``): an error
    reading a file is an error; named logs that do not exist yet, with nothing else followed,
    are "starting"."""
    errors = state.get("errors") or {}
    if isinstance(errors, Mapping) and errors:
        path, error = next(iter(errors.items()))
        return SourceHealth(name, ERROR, f"error reading {path}: {error}", last_error=str(error))
    if state.get("waiting_for") and not state.get("files"):
        return SourceHealth(name, STARTING, "waiting for the log to appear")
    return SourceHealth(name, OK)


def gauge_samples(values: Mapping[LabelSet, float]) -> list[GaugeSample]:
    return [GaugeSample(labels, value) for labels, value in values.items()]

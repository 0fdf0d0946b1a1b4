"""CloudWatch source: discover the models in `AWS/Bedrock` and poll their per-minute metrics.

Runs in the app's event loop (aiobotocore); never blocks a screen. Everything it fetches goes into
a :class:`~monitor.cloudwatch_store.CloudWatchStore`, apart from the local log's numbers.

Cost is the design constraint: CloudWatch bills $0.01 per 1,000 metrics requested through
GetMetricData, per metric per call, whatever the number of datapoints. So the schedule decides the
bill, and the source counts what it asks for and projects what the schedule will cost:

* one call carries up to 500 queries; the time range of a poll covers every minute that CloudWatch
  may still revise (``revise_s``), so nothing is lost by polling less often;
* "hot" metrics (what the overview shows) are polled every interval for models on screen, "warm"
  ones (cache tokens, images, quota, TTFT) and percentiles every ``warm_every`` intervals, except
  for the model in the drill-down, which gets everything every interval;
* models off screen, or with no new data for ``idle_after_s``, are polled every ``slow_every``
  intervals; a paused view multiplies the interval by ``paused_factor``;
* period-to-date totals (budgets) come from one large-Period query per period every
  ``period_refresh_s``.

Retries and backoff on throttling are botocore's ("adaptive" mode: exponential backoff with jitter
and a client-side rate limiter); the poll schedule adds its own jitter so that several monitors do
not poll in step.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from monitor.cloudwatch_store import (
    AVERAGE,
    CACHE_READ,
    CACHE_WRITE,
    CLIENT_ERRORS,
    INPUT_TOKENS,
    INVOCATIONS,
    KNOWN_METRICS,
    LATENCY,
    MAXIMUM,
    MINUTE_S,
    OUTPUT_IMAGES,
    OUTPUT_TOKENS,
    PERCENTILE_STATS,
    SAMPLE_COUNT,
    SERVER_ERRORS,
    SUM,
    THROTTLES,
    TPM_QUOTA_USAGE,
    TTFT,
    CloudWatchStore,
    CloudWatchTotals,
    canonical_metric,
    minute_of,
)
from monitor.sources.aws import (
    ACCESS_DENIED,
    ACCESS_DENIED_CODES,
    CREDENTIAL_ERROR_CODES,
    DISABLED,
    ERROR,
    HEADLESS_DEADLINE_S,
    NO_CREDENTIALS,
    OK,
    STALE,
    STARTING,
    AwsConnection,
    AwsTarget,
    SourceFailure,
    classify_error,
    deadline_passed,
)

NAMESPACE: Final = "AWS/Bedrock"
MODEL_DIMENSION: Final = "ModelId"
MANTLE_NAMESPACE: Final = "AWS/BedrockMantle"
USD_PER_METRIC: Final = 0.01 / 1000
HOURS_PER_MONTH: Final = 730.0
MAX_QUERIES_PER_CALL: Final = 500
MAX_DATAPOINTS_PER_CALL: Final = 100_800
MIN_INTERVAL_S: Final = 10.0
DEFAULT_INTERVAL_S: Final = 60.0
ONE_MINUTE_DATA_S: Final = 15 * 86400  # retention of 1-minute datapoints
FIVE_MINUTE_DATA_S: Final = 63 * 86400  # retention of 5-minute datapoints

# Percentile support of the endpoint (CloudWatchState.percentiles).
PCT_UNKNOWN: Final = "unknown"
PCT_SUPPORTED: Final = "supported"
PCT_FALLBACK: Final = "fallback"

# Which statistics each tier asks for, per metric.
HOT_STATS: Final[Mapping[str, tuple[str, ...]]] = {
    INVOCATIONS: (SUM,),
    INPUT_TOKENS: (SUM,),
    OUTPUT_TOKENS: (SUM,),
    CLIENT_ERRORS: (SUM,),
    SERVER_ERRORS: (SUM,),
    THROTTLES: (SUM,),
    # Weighted by Invocations for window averages, so no SampleCount is needed.
    LATENCY: (AVERAGE, MAXIMUM),
}
WARM_STATS: Final[Mapping[str, tuple[str, ...]]] = {
    CACHE_READ: (SUM,),
    CACHE_WRITE: (SUM,),
    OUTPUT_IMAGES: (SUM,),
    TPM_QUOTA_USAGE: (SUM,),
    # Only streaming calls report TTFT, so its averages need their own sample counts.
    TTFT: (AVERAGE, MAXIMUM, SAMPLE_COUNT),
}
PERCENTILE_METRICS: Final = (LATENCY, TTFT)
# TPM_QUOTA_USAGE: the quota day's tokens (tokens-per-day quotas).
PERIOD_METRICS: Final = (
    INVOCATIONS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    CACHE_READ,
    CACHE_WRITE,
    TPM_QUOTA_USAGE,
)
# What a model named only in the configuration is asked for until ListMetrics finds it.
CONFIG_MODEL_METRICS: Final = (INVOCATIONS, INPUT_TOKENS, OUTPUT_TOKENS, LATENCY)

HOT: Final = "hot"
WARM: Final = "warm"
PCT: Final = "pct"
TIERS: Final = (HOT, WARM, PCT)

Dimensions = tuple[tuple[str, str], ...]
PeriodStarts = Callable[[float], Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class NamespaceSpec:
    """A CloudWatch namespace of Bedrock traffic: where its model is named and which of its
    dimension sets count the same traffic again (and are left out so nothing is counted twice).
    Metric names are mapped to the store's by ``canonical_metric``."""

    name: str
    label: str  # how rows of this namespace are marked: runtime | mantle
    model_dimensions: tuple[str, ...]
    # A metric published both per model and per model and project is the same traffic twice:
    # only the dimension sets without these are read.
    breakdown_dimensions: tuple[str, ...] = ()

    def model_of(self, dims: Dimensions) -> str | None:
        names = dict(dims)
        if any(name in names for name in self.breakdown_dimensions):
            return None
        return next((names[n] for n in self.model_dimensions if n in names), None)


BEDROCK: Final = NamespaceSpec(NAMESPACE, "runtime", (MODEL_DIMENSION,))
# bedrock-mantle publishes at Account, Project, Model and Project+Model levels; the Model level
# (dimension `Model`) is read. `ModelId` is accepted too: ListMetrics says which one exists.
MANTLE: Final = NamespaceSpec(MANTLE_NAMESPACE, "mantle", ("Model", "ModelId"), ("Project",))


def utc_period_starts(now: float) -> dict[str, float]:
    """Default budget periods: the current UTC day and month."""
    tm = time.gmtime(now)
    day = calendar.timegm((tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0))
    month = calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))
    return {"day": float(day), "month": float(month)}


@dataclass(frozen=True, slots=True)
class Query:
    """One GetMetricData query: a model's metric (as published, with its dimensions) and a stat."""

    model_id: str
    metric: str
    stat: str
    dimensions: Dimensions
    namespace: str = NAMESPACE
    account_id: str | None = None  # a linked (source) account, seen from a monitoring account

    def to_api(self, query_id: str, period_s: int) -> dict[str, Any]:
        query: dict[str, Any] = {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
                },
                "Period": period_s,
                "Stat": self.stat,
            },
            "ReturnData": True,
        }
        if self.account_id is not None:
            query["AccountId"] = self.account_id
        return query


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often each part is fetched. The defaults keep 10 busy models under $0.07/hour."""

    interval_s: float = DEFAULT_INTERVAL_S
    warm_every: int = 5
    slow_every: int = 5
    paused_factor: float = 5.0
    idle_after_s: float = 300.0
    discovery_every_s: float = 300.0
    period_refresh_s: float = 600.0
    # CloudWatch keeps revising a minute for several minutes; each poll asks again for these.
    revise_s: float = 600.0
    backfill_s: float = 3 * 3600.0
    percentile_retry_s: float = 900.0
    credentials_retry_s: float = 300.0
    max_backoff_s: float = 300.0
    jitter: float = 0.1


@dataclass(frozen=True, slots=True)
class CloudWatchState:
    """A snapshot for the header and the report."""

    region: str | None
    status: str
    message: str
    age_s: float | None  # seconds since the last good poll
    last_good_poll: float | None
    calls: int  # GetMetricData calls (pages) sent
    list_calls: int  # ListMetrics calls sent
    metrics_requested: int
    cost_usd: float
    projected_metrics_per_hour: float
    projected_cost_per_hour_usd: float
    projected_cost_per_month_usd: float
    percentiles: str  # unknown | supported | fallback
    percentiles_message: str
    interval_s: float
    effective_interval_s: float
    paused: bool
    models: int
    issues: tuple[str, ...] = ()  # per-query problems of the last poll (PartialData, Forbidden...)
    namespace: str = NAMESPACE
    account_id: str | None = None

    def as_report(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "state": self.status,
            "message": self.message,
            "calls": self.calls,
            "metrics_requested": self.metrics_requested,
            "estimated_cost_usd": round(self.cost_usd, 6),
            "percentiles": self.percentiles,
        }


@dataclass
class _Model:
    model_id: str
    # Published metric name -> the dimension sets it exists with (OutputImageCount has several).
    metrics: dict[str, set[Dimensions]] = field(default_factory=dict)
    last_ok: dict[str, float] = field(default_factory=dict)  # tier -> time of its last good poll
    last_cycle: dict[str, int] = field(default_factory=dict)  # tier -> cycle number of that poll
    last_change: float | None = None
    first_seen: float | None = None


def queries_per_call(minutes: int) -> int:
    """Queries per GetMetricData call for a time range of ``minutes`` datapoints per query."""
    return max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // max(1, minutes)))


def report_period(start: float, end: float, now: float) -> tuple[float, int]:
    """One Period spanning [start, end): the aligned start and the Period in seconds.

    One datapoint per query keeps a long window far from the 100,800-datapoint limit (cost is per
    metric, not per datapoint), and makes percentiles true percentiles of the whole window. Older
    data only exists at coarser resolution, so the start and the Period are aligned to it.
    """
    age = now - start
    step = 3600 if age > FIVE_MINUTE_DATA_S else 300 if age > ONE_MINUTE_DATA_S else MINUTE_S
    aligned = math.floor(start / step) * step
    span = max(end - aligned, MINUTE_S)
    return float(aligned), int(math.ceil(span / step) * step)


class CloudWatchSource:
    """Polls `AWS/Bedrock` for all models in as few GetMetricData calls as the API allows."""

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        models_from_config: Iterable[str] = (),
        *,
        enabled: bool = True,
        schedule: Schedule | None = None,
        store: CloudWatchStore | None = None,
        period_starts: PeriodStarts = utc_period_starts,
        recently_active: bool = True,
        retry_mode: str = "adaptive",
        max_attempts: int = 4,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        namespace: NamespaceSpec = BEDROCK,
        account_id: str | None = None,
    ) -> None:
        """``namespace``: AWS/Bedrock (default) or bedrock-mantle's. ``account_id``: read a
        linked source account's metrics from a monitoring account (cross-account
        observability); None reads the credentials' own account."""
        base = schedule or Schedule()
        self.namespace = namespace
        self.account_id = account_id
        interval = max(MIN_INTERVAL_S, float(interval_s))
        self.schedule = Schedule(**{**_as_dict(base), "interval_s": interval})
        self.region = region
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.enabled = enabled
        self.store = store or CloudWatchStore()
        self.period_starts = period_starts
        self.recently_active = recently_active
        self._retry_mode = retry_mode
        self._max_attempts = max(1, max_attempts)
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._clock = clock
        self._rng = rng or random.Random()
        self._config_models = [m for m in dict.fromkeys(models_from_config) if m]
        self._models: dict[str, _Model] = {}
        self._connection: AwsConnection | None = None
        self._client: Any = None
        self._probe_client: Any = None  # one attempt: a refused percentile query fails fast
        self._task: asyncio.Task[None] | None = None
        self._status = STARTING if enabled else DISABLED
        self._message = "waiting for the first poll" if enabled else "disabled (--no-cloudwatch)"
        self._last_good: float | None = None
        self._last_attempt: float | None = None
        self._failures = 0
        self._cycle = 0
        self._last_discovery: float | None = None
        self._last_periods: float | None = None
        self._percentiles = PCT_UNKNOWN
        self._percentiles_message = ""
        self._percentiles_refused_at: float | None = None
        self._visible: set[str] | None = None
        self._focus: str | None = None
        self._paused = False
        self._issues: tuple[str, ...] = ()
        self.calls = 0
        self.list_calls = 0
        self.metrics_requested = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve region and credentials and open the clients; failures become the state."""
        if not self.enabled or self._client is not None:
            return
        try:
            await self._connect()
        except Exception as exc:
            failure = classify_error(exc)
            self._set_failure(failure, self._clock())

    async def _connect(self) -> None:
        connect_timeout, read_timeout = self._timeouts
        connection = AwsConnection(
            AwsTarget(self.region, self.profile, self.endpoint_url),
            retry_mode=self._retry_mode,
            max_attempts=self._max_attempts,
            connect_timeout_s=connect_timeout,
            read_timeout_s=read_timeout,
        )
        try:
            self.region = await connection.open()
            self._client = await connection.client("cloudwatch")
            # One attempt: a refused percentile query fails fast.
            self._probe_client = await connection.client("cloudwatch", max_attempts=1)
        except BaseException:
            await connection.close()
            self._client = self._probe_client = None
            raise
        self._connection = connection
        if self._status in (STARTING, NO_CREDENTIALS, ERROR):
            self._message = "connected; waiting for the first poll"

    async def stop(self) -> None:
        """Stop the polling task (if :meth:`run_forever` was started) and close the clients."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        connection, self._connection = self._connection, None
        self._client = self._probe_client = None
        if connection is not None:
            await connection.close()

    def run_in_background(self) -> asyncio.Task[None]:
        """Start :meth:`run_forever` as a task of the running loop (stopped by :meth:`stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="cloudwatch-poller")
        return self._task

    async def run_forever(self) -> None:
        """Poll, then sleep until the next poll is due; one poll at a time, never overlapping."""
        if not self.enabled:
            return
        while True:
            await self.poll_once()
            await asyncio.sleep(self.next_delay())

    def model_ids(self) -> list[str]:
        """The models discovery found (or the configuration named), sorted."""
        return sorted(self._models)

    # -- what the view tells the source --------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        """A paused view slows the schedule (the store keeps filling, just less often)."""
        self._paused = paused

    def set_visible_models(self, model_ids: Iterable[str] | None) -> None:
        """The models on screen get the fast schedule; None means all of them."""
        self._visible = None if model_ids is None else set(model_ids)

    def set_focus_model(self, model_id: str | None) -> None:
        """The model in the drill-down gets every metric and percentiles every interval."""
        self._focus = model_id

    # -- the schedule --------------------------------------------------------------------------

    def effective_interval_s(self) -> float:
        sched = self.schedule
        # Credentials, permissions and set-up errors are not fixed by asking again soon; a
        # network fault before the first good poll (client open) is, so it backs off normally.
        setup_error = self._status == ERROR and self._client is None
        if self._status in (NO_CREDENTIALS, ACCESS_DENIED, DISABLED) or setup_error:
            return max(sched.interval_s, sched.credentials_retry_s)
        interval = sched.interval_s
        if self._failures:
            interval = min(interval * 2 ** min(self._failures - 1, 10), sched.max_backoff_s)
            interval = max(interval, sched.interval_s)
        if self._paused:
            interval = max(interval, sched.interval_s * sched.paused_factor)
        return interval

    def next_delay(self) -> float:
        """Seconds until the next poll, with jitter so that monitors do not poll in step."""
        jitter = self.schedule.jitter
        return self.effective_interval_s() * self._rng.uniform(1 - jitter, 1 + jitter)

    def _every(self, model: _Model, tier: str, now: float) -> int:
        sched = self.schedule
        if model.model_id == self._focus:
            return 1
        visible = self._visible is None or model.model_id in self._visible
        # No new or revised minute for a while: the model is quiet, ask less often.
        last_news = model.last_change if model.last_change is not None else model.first_seen
        idle = last_news is not None and now - last_news > sched.idle_after_s
        if not visible or idle:
            return sched.slow_every
        return 1 if tier == HOT else sched.warm_every

    def _tier_stats(self, tier: str) -> Mapping[str, tuple[str, ...]]:
        if tier == HOT:
            return HOT_STATS
        if tier == WARM:
            return WARM_STATS
        return dict.fromkeys(PERCENTILE_METRICS, PERCENTILE_STATS)

    def _tier_queries(self, model: _Model, tier: str) -> list[Query]:
        stats_by_metric = self._tier_stats(tier)
        queries: list[Query] = []
        for metric, dimension_sets in model.metrics.items():
            stats = stats_by_metric.get(canonical_metric(metric), ())
            for dims in sorted(dimension_sets):
                queries.extend(self._query(model.model_id, metric, stat, dims) for stat in stats)
        return queries

    def _percentiles_wanted(self, now: float) -> bool:
        refused = self._percentiles_refused_at
        return refused is None or now - refused >= self.schedule.percentile_retry_s

    def projected_metrics_per_hour(self) -> float:
        """Metrics requested per hour if the current models and schedule stay as they are."""
        sched = self.schedule
        now = self._clock()
        cycles_per_hour = 3600.0 / self.effective_interval_s()
        per_cycle = 0.0
        for model in self._models.values():
            for tier in TIERS:
                if tier == PCT and self._percentiles == PCT_FALLBACK:
                    continue
                per_cycle += len(self._tier_queries(model, tier)) / self._every(model, tier, now)
        periods = len(self.period_starts(now))
        period_queries = sum(
            1
            for model in self._models.values()
            for metric, dims in model.metrics.items()
            if canonical_metric(metric) in PERIOD_METRICS
            for _ in dims
        )
        per_hour_periods = period_queries * periods * 3600.0 / sched.period_refresh_s
        return per_cycle * cycles_per_hour + per_hour_periods

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> CloudWatchState:
        now = self._clock()
        age = None if self._last_good is None else max(0.0, now - self._last_good)
        status, message = self._status, self._message
        effective = self.effective_interval_s()
        if status == OK and age is not None and age > 2.5 * effective + 30:
            status, message = STALE, f"no good poll for {age:.0f} s"
        per_hour = self.projected_metrics_per_hour() if self.enabled else 0.0
        return CloudWatchState(
            region=self.region,
            status=status,
            message=message,
            age_s=age,
            last_good_poll=self._last_good,
            calls=self.calls,
            list_calls=self.list_calls,
            metrics_requested=self.metrics_requested,
            cost_usd=self.metrics_requested * USD_PER_METRIC,
            projected_metrics_per_hour=per_hour,
            projected_cost_per_hour_usd=per_hour * USD_PER_METRIC,
            projected_cost_per_month_usd=per_hour * USD_PER_METRIC * HOURS_PER_MONTH,
            percentiles=self._percentiles,
            percentiles_message=self._percentiles_message,
            interval_s=self.schedule.interval_s,
            effective_interval_s=effective,
            paused=self._paused,
            models=len(self._models),
            issues=self._issues,
            namespace=self.namespace.name,
            account_id=self.account_id,
        )

    def _set_failure(self, failure: SourceFailure, now: float) -> None:
        self._failures += 1
        status = failure.status
        if status == STALE and self._last_good is None:
            status = ERROR if self._status != STALE else STALE
        self._status = status
        message = failure.message
        if status == STALE and self._last_good is not None:
            message = f"{message} (last good data {now - self._last_good:.0f} s ago)"
        self._message = message

    # -- polling -------------------------------------------------------------------------------

    async def poll_once(self, now: float | None = None) -> None:
        """Discovery when due, then one poll cycle. Never raises: failures become the state."""
        if not self.enabled:
            return
        now = self._clock() if now is None else now
        self._last_attempt = now
        if self._client is None:
            await self.start()
            if self._client is None:
                return
        try:
            await self._poll(now)
        except Exception as exc:
            failure = classify_error(exc)
            self._set_failure(failure, now)
            if failure.status in (NO_CREDENTIALS, ACCESS_DENIED):
                # Credentials may be refreshed on disk (aws sso login): start afresh next time.
                await self._close_clients()
            return
        self._failures = 0
        self._last_good = now
        self._status = OK
        notes = [f"{len(self._models)} models"]
        if self._percentiles == PCT_FALLBACK:
            notes.append("latency percentiles unavailable: showing average and maximum")
        if self._issues:
            notes.append(f"{len(self._issues)} query problems")
        self._message = "; ".join(notes)

    async def _close_clients(self) -> None:
        connection, self._connection = self._connection, None
        self._client = self._probe_client = None
        if connection is not None:
            await connection.close()

    async def _poll(self, now: float) -> None:
        sched = self.schedule
        if self._last_discovery is None or now - self._last_discovery >= sched.discovery_every_s:
            await self.discover(recently_active=self.recently_active)
            self._last_discovery = now
            for model in self._models.values():
                if model.first_seen is None:
                    model.first_seen = now
        self._cycle += 1
        self._issues = ()
        end = float((minute_of(now) + 1) * MINUTE_S)  # the current minute, partial, included
        floor = end - sched.backfill_s
        due: dict[float, list[tuple[_Model, str, list[Query]]]] = {}
        for model in self._models.values():
            for tier in TIERS:
                if tier == PCT and not self._percentiles_wanted(now):
                    continue
                every = self._every(model, tier, now)
                last = model.last_cycle.get(tier)
                if last is not None and self._cycle - last < every:
                    continue
                queries = self._tier_queries(model, tier)
                if not queries:
                    continue
                last_ok = model.last_ok.get(tier)
                start = floor if last_ok is None else max(floor, last_ok - sched.revise_s)
                start = float(minute_of(start) * MINUTE_S)
                # New models backfill in their own call; the rest share the recent range.
                key = start if last_ok is None else -1.0
                due.setdefault(key, []).append((model, tier, queries))
        for key, entries in sorted(due.items()):
            start = (
                key
                if key >= 0
                else min(max(floor, m.last_ok[t] - sched.revise_s) for m, t, _ in entries)
            )
            start = float(minute_of(start) * MINUTE_S)
            core = [(m, t, q) for m, t, q in entries if t != PCT]
            pct = [(m, t, q) for m, t, q in entries if t == PCT]
            if core:
                await self._fetch_minutes(core, start, end, now, self._client)
            if pct:
                await self._fetch_percentiles(pct, start, end, now)
        if self._last_periods is None or now - self._last_periods >= sched.period_refresh_s:
            await self.refresh_period_totals(now)
            self._last_periods = now

    async def _fetch_minutes(
        self,
        entries: Sequence[tuple[_Model, str, list[Query]]],
        start: float,
        end: float,
        now: float,
        client: Any,
    ) -> None:
        queries = [q for _, _, qs in entries for q in qs]
        results = await self._get_metric_data(client, queries, start, end, MINUTE_S)
        changed_models: set[str] = set()
        for (model_id, metric, stat), points in _combine(results).items():
            if self.store.merge(model_id, metric, stat, sorted(points.items())):
                changed_models.add(model_id)
        for model, tier, _ in entries:
            model.last_ok[tier] = now
            model.last_cycle[tier] = self._cycle
            if model.model_id in changed_models:
                model.last_change = now

    async def _fetch_percentiles(
        self,
        entries: Sequence[tuple[_Model, str, list[Query]]],
        start: float,
        end: float,
        now: float,
    ) -> None:
        """Percentiles go in calls of their own: an endpoint that refuses them (moto answers HTTP
        500) then costs nothing else, and average/maximum remain."""
        from botocore.exceptions import ClientError

        try:
            await self._fetch_minutes(entries, start, end, now, self._probe_client)
        except ClientError as exc:
            http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ACCESS_DENIED_CODES or code in CREDENTIAL_ERROR_CODES:
                raise
            if http >= 500 or code.startswith("InvalidParameter"):
                self._refuse_percentiles(now, f"HTTP {http} {code}".strip())
                for model, tier, _ in entries:
                    model.last_cycle[tier] = self._cycle
                return
            raise
        self._percentiles = PCT_SUPPORTED
        self._percentiles_message = ""

    def _refuse_percentiles(self, now: float, why: str) -> None:
        self._percentiles = PCT_FALLBACK
        self._percentiles_refused_at = now
        retry = time.strftime("%H:%M:%S", time.gmtime(now + self.schedule.percentile_retry_s))
        self._percentiles_message = (
            f"endpoint refused p50/p90/p99 ({why}); showing average and maximum; "
            f"trying again at {retry} UTC"
        )

    async def _get_metric_data(
        self, client: Any, queries: Sequence[Query], start: float, end: float, period_s: int
    ) -> dict[Query, dict[float, float]]:
        """Run queries in as few calls as the limits allow, following NextToken."""
        minutes = max(1, math.ceil((end - start) / period_s))
        per_call = queries_per_call(minutes)
        results: dict[Query, dict[float, float]] = {}
        problems: list[str] = list(self._issues)
        paginator = client.get_paginator("get_metric_data")
        for offset in range(0, len(queries), per_call):
            chunk = list(queries[offset : offset + per_call])
            by_id = {f"q{i}": q for i, q in enumerate(chunk)}
            pages = paginator.paginate(
                MetricDataQueries=[q.to_api(i, period_s) for i, q in by_id.items()],
                StartTime=start,
                EndTime=end,
                ScanBy="TimestampAscending",
            )
            self.calls += 1
            async for page in pages:
                self.metrics_requested += len(chunk)
                for result in page.get("MetricDataResults", []):
                    query = by_id.get(result.get("Id", ""))
                    if query is None:
                        continue
                    status = result.get("StatusCode", "Complete")
                    if status not in ("Complete", "PartialData"):
                        problems.append(f"{query.model_id} {query.metric} {query.stat}: {status}")
                    points = results.setdefault(query, {})
                    for ts, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    ):
                        number = float(value)
                        if not math.isfinite(number):  # no count or latency is NaN or infinite
                            problems.append(f"{query.model_id} {query.metric}: {value} dropped")
                            continue
                        points[ts.timestamp()] = number
                for note in page.get("Messages", []) or []:
                    problems.append(f"{note.get('Code', '')}: {note.get('Value', '')}".strip())
                if page.get("NextToken"):
                    self.calls += 1  # the paginator is about to send the next page
        self._issues = tuple(problems[-20:])
        return results

    def _query(self, model_id: str, metric: str, stat: str, dims: Dimensions) -> Query:
        return Query(model_id, metric, stat, dims, self.namespace.name, self.account_id)

    def _list_params(self, recently_active: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"Namespace": self.namespace.name}
        if recently_active:
            params["RecentlyActive"] = "PT3H"
        if self.account_id is not None:
            params["IncludeLinkedAccounts"] = True
            params["OwningAccount"] = self.account_id
        return params

    async def discover(self, recently_active: bool = True) -> None:
        """ListMetrics on the namespace (all pages): which models exist with which metrics."""
        found: dict[str, dict[str, set[Dimensions]]] = {}
        paginator = self._client.get_paginator("list_metrics")
        params = self._list_params(recently_active)
        self.list_calls += 1
        async for page in paginator.paginate(**params):
            for metric in page.get("Metrics", []):
                name = metric.get("MetricName", "")
                dims = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
                model_id = self.namespace.model_of(dims)
                if model_id is None or canonical_metric(name) not in KNOWN_METRICS:
                    continue
                found.setdefault(model_id, {}).setdefault(name, set()).add(dims)
            if page.get("NextToken"):
                self.list_calls += 1
        for model_id in self._config_models if self.namespace is BEDROCK else ():
            if model_id not in found and model_id not in self._models:
                dims = ((MODEL_DIMENSION, model_id),)
                found[model_id] = {m: {dims} for m in CONFIG_MODEL_METRICS}
        for model_id, metrics in found.items():
            model = self._models.setdefault(model_id, _Model(model_id))
            for name, dimension_sets in metrics.items():
                model.metrics.setdefault(name, set()).update(dimension_sets)
        # Models that fell out of RecentlyActive stay known (they simply go idle and slow).

    async def owning_accounts(self, recently_active: bool = True) -> list[str]:
        """The accounts whose metrics a monitoring account sees in this namespace (ListMetrics
        with IncludeLinkedAccounts: its answer carries one OwningAccount per metric)."""
        if self._client is None:
            await self.start()
        if self._client is None:
            return []
        params: dict[str, Any] = {"Namespace": self.namespace.name, "IncludeLinkedAccounts": True}
        if recently_active:
            params["RecentlyActive"] = "PT3H"
        accounts: set[str] = set()
        self.list_calls += 1
        async for page in self._client.get_paginator("list_metrics").paginate(**params):
            accounts.update(str(a) for a in page.get("OwningAccounts", []) or [] if a)
            if page.get("NextToken"):
                self.list_calls += 1
        return sorted(accounts)

    async def refresh_period_totals(self, now: float) -> None:
        """Period-to-date Sums for budgets: one datapoint per query, one call group per period."""
        end = float(minute_of(now) * MINUTE_S)
        queries = [
            self._query(model.model_id, metric, SUM, dims)
            for model in self._models.values()
            for metric, dimension_sets in model.metrics.items()
            if canonical_metric(metric) in PERIOD_METRICS
            for dims in sorted(dimension_sets)
        ]
        if not queries:
            return
        for period, start in self.period_starts(now).items():
            aligned, period_s = report_period(start, end, now)
            if end <= aligned:
                continue
            results = await self._get_metric_data(self._client, queries, aligned, end, period_s)
            combined = _combine(results)
            for query in queries:
                key = (query.model_id, canonical_metric(query.metric), SUM)
                value = sum(combined.get(key, {}).values())
                self.store.set_period_total(
                    query.model_id, query.metric, period, aligned, end, value
                )

    # -- the headless report -------------------------------------------------------------------

    async def window_report(self, start: float, end: float) -> dict[str, CloudWatchTotals]:
        """Totals per model over [start, end), each statistic as one datapoint of the window."""
        now = self._clock()
        if self._client is None:
            await self.start()
        if self._client is None:
            return {}
        try:
            await self.discover(recently_active=(now - start) <= 3 * 3600)
            aligned, period_s = report_period(start, end, now)
            stats = {**HOT_STATS, **WARM_STATS}
            queries = [
                self._query(model.model_id, metric, stat, dims)
                for model in self._models.values()
                for metric, dimension_sets in model.metrics.items()
                for dims in sorted(dimension_sets)
                for stat in stats.get(canonical_metric(metric), ())
                if stat != SAMPLE_COUNT
            ]
            pct_queries = [
                self._query(model.model_id, metric, stat, dims)
                for model in self._models.values()
                for metric, dimension_sets in model.metrics.items()
                if canonical_metric(metric) in PERCENTILE_METRICS
                for dims in sorted(dimension_sets)
                for stat in PERCENTILE_STATS
            ]
            results = await self._get_metric_data(self._client, queries, aligned, end, period_s)
            if pct_queries:
                results.update(await self._report_percentiles(pct_queries, aligned, end, period_s))
        except Exception as exc:
            self._set_failure(classify_error(exc), now)
            return {}
        self._last_good = now
        self._status = OK
        self._message = f"{len(self._models)} models"
        per_model: dict[str, dict[tuple[str, str], float]] = {}
        for (model_id, metric, stat), points in _combine(results).items():
            if points:
                per_model.setdefault(model_id, {})[(metric, stat)] = _window_value(stat, points)
        return {
            model_id: CloudWatchTotals.from_window_stats(stats_)
            for model_id, stats_ in sorted(per_model.items())
        }

    async def _report_percentiles(
        self, queries: Sequence[Query], start: float, end: float, period_s: int
    ) -> dict[Query, dict[float, float]]:
        from botocore.exceptions import ClientError

        try:
            results = await self._get_metric_data(self._probe_client, queries, start, end, period_s)
        except ClientError as exc:
            http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if http >= 500 or code.startswith("InvalidParameter"):
                self._refuse_percentiles(self._clock(), f"HTTP {http} {code}".strip())
                return {}
            raise
        self._percentiles = PCT_SUPPORTED
        return results


def _combine(
    results: Mapping[Query, Mapping[float, float]],
) -> dict[tuple[str, str, str], dict[float, float]]:
    """Per (model, canonical metric, stat): the variants of one metric (other dimensions, such as
    OutputImageCount's ImageSize) are added; the two spellings of a cache metric are the same
    quantity under two names, so where both have a value the larger one is kept."""
    by_name: dict[tuple[str, str, str], dict[float, float]] = {}
    for query, points in results.items():
        merged = by_name.setdefault((query.model_id, query.metric, query.stat), {})
        if query.stat == SUM:
            for ts, value in points.items():
                merged[ts] = merged.get(ts, 0.0) + value
        elif query.stat in (MAXIMUM, SAMPLE_COUNT) or query.stat.startswith("p"):
            for ts, value in points.items():
                merged[ts] = max(merged.get(ts, value), value)
        else:
            merged.update(points)
    combined: dict[tuple[str, str, str], dict[float, float]] = {}
    for (model_id, metric, stat), points in by_name.items():
        target = combined.setdefault((model_id, canonical_metric(metric), stat), {})
        for ts, value in points.items():
            target[ts] = max(target.get(ts, value), value)
    return combined


def _window_value(stat: str, points: Mapping[float, float]) -> float:
    """A window statistic from its datapoints (normally one: the Period spans the window)."""
    values = list(points.values())
    if stat in (SUM, SAMPLE_COUNT):
        return sum(values)
    if stat == MAXIMUM:
        return max(values)
    return values[0] if len(values) == 1 else sum(values) / len(values)


def _as_dict(schedule: Schedule) -> dict[str, Any]:
    return {name: getattr(schedule, name) for name in Schedule.__dataclass_fields__}


def cloudwatch_report(
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    since_epoch: float,
    now: float,
    *,
    enabled: bool = True,
    disabled_message: str = "disabled (--no-cloudwatch)",
    models_from_config: Iterable[str] = (),
    read_timeout_s: float = 20.0,
    max_attempts: int = 4,
    store: CloudWatchStore | None = None,
    period_starts: PeriodStarts | None = None,
    deadline_s: float = HEADLESS_DEADLINE_S,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """For ``--once``: one query over [since, now) and its account (per model ``cloudwatch``
    objects, and ``sources.cloudwatch``). Runs its own event loop; never raises for AWS faults.
    Every request of the run shares one total ``deadline_s``, after which the source is
    reported as timed out (retries and slow endpoints cannot hold a report up for minutes).

    With ``period_starts`` (budgets that read CloudWatch), one regular poll follows, filling
    ``store`` with recent minutes (for burn rates) and the period-to-date totals."""
    source = CloudWatchSource(
        region=region,
        profile=profile,
        endpoint_url=endpoint_url,
        models_from_config=models_from_config,
        enabled=enabled,
        read_timeout_s=read_timeout_s,
        max_attempts=max_attempts,
        clock=lambda: now,
        store=store,
        period_starts=utc_period_starts if period_starts is None else period_starts,
    )
    if not enabled:
        return {}, {**source.state.as_report(), "message": disabled_message}

    async def work() -> dict[str, CloudWatchTotals]:
        totals = await source.window_report(since_epoch, now)
        if period_starts is not None and totals:
            await source.poll_once()
        return totals

    async def run() -> dict[str, CloudWatchTotals]:
        try:
            return await asyncio.wait_for(work(), deadline_s)
        except TimeoutError:
            late = deadline_passed(deadline_s)
            source._set_failure(classify_error(late), now)
            return {}
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(source.stop(), 2.0)

    totals = asyncio.run(run())
    return {m: t.as_report() for m, t in totals.items()}, source.state.as_report()


# Re-exported for views that only import the source module.
__all__ = [
    "ACCESS_DENIED",
    "DISABLED",
    "ERROR",
    "NO_CREDENTIALS",
    "OK",
    "STALE",
    "STARTING",
    "CloudWatchSource",
    "CloudWatchState",
    "Schedule",
    "cloudwatch_report",
    "utc_period_starts",
]

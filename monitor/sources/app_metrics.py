"""Per-app account-wide rates from CloudWatch's ``BedrockTop`` namespace (the wrapper's EMF).

When applications run the wrapper with EMF on (``BEDROCK_TOP_EMF=1``), CloudWatch Logs turns
each record into ``BedrockTop`` metrics with dimensions ``[App, ModelId]`` and ``[ModelId]``;
CloudWatch adds up every host and Lambda. This source finds the ``[App, ModelId]`` series with
ListMetrics and polls them with GetMetricData into an
:class:`~monitor.app_metrics_store.AppMetricsStore`, apart from the local log and from
``AWS/Bedrock``.

Cost: GetMetricData bills $0.01 per 1,000 metrics requested. Each app and model pair costs
``QUERIES_PER_PAIR`` metrics per poll; the default poll every 300 s is 108 metrics an hour per
pair (about $0.0011 an hour, $0.79 a month). ListMetrics runs every 15 minutes; with no
``BedrockTop`` metrics in the account (EMF off everywhere), that is all this source asks for.
Clients and fault classification come from :mod:`monitor.sources.aws`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from monitor import emf
from monitor.app_metrics_store import (
    AVERAGE,
    MAX_SERIES,
    SAMPLE_COUNT,
    SUM,
    AppMetricsStore,
    AppTotals,
)
from monitor.cloudwatch_store import MINUTE_S, minute_of
from monitor.sources.aws import (
    ACCESS_DENIED,
    DISABLED,
    ERROR,
    HEADLESS_DEADLINE_S,
    NO_CREDENTIALS,
    OK,
    STALE,
    STARTING,
    AwsConnection,
    AwsTarget,
    SourceHealth,
    classify_error,
    deadline_passed,
)
from monitor.sources.cloudwatch import queries_per_call, report_period

NAME: Final = "apps_cloudwatch"
SERVICE_LABEL: Final = "CloudWatch (BedrockTop)"
PERMISSIONS: Final = "cloudwatch:ListMetrics and cloudwatch:GetMetricData"
USD_PER_METRIC: Final = 0.01 / 1000
DEFAULT_INTERVAL_S: Final = 300.0
MIN_INTERVAL_S: Final = 60.0
# What each pair is asked for: every count's Sum, and the latency's Average weighted by its
# SampleCount (the number of successful calls).
STATS: Final[tuple[tuple[str, str], ...]] = (
    *((metric, SUM) for metric in emf.COUNT_METRICS),
    (emf.LATENCY, AVERAGE),
    (emf.LATENCY, SAMPLE_COUNT),
)
QUERIES_PER_PAIR: Final = len(STATS)
RATE_WINDOW_S: Final = 300

Pair = tuple[str, str]  # (app, model id)


@dataclass(frozen=True, slots=True)
class AppSchedule:
    interval_s: float = DEFAULT_INTERVAL_S
    discovery_every_s: float = 900.0
    revise_s: float = 600.0  # CloudWatch revises recent minutes: each poll asks for these again
    backfill_s: float = 3 * 3600.0
    max_backoff_s: float = 3600.0


class AppMetricsSource:
    """Discovers and polls the ``BedrockTop`` ``[App, ModelId]`` series of one region."""

    def __init__(
        self,
        target: AwsTarget,
        *,
        enabled: bool = True,
        disabled_message: str = "off (CloudWatch is off)",
        interval_s: float = DEFAULT_INTERVAL_S,
        store: AppMetricsStore | None = None,
        max_attempts: int = 4,
        read_timeout_s: float = 20.0,
        recently_active: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.enabled = enabled
        self.schedule = AppSchedule(interval_s=max(MIN_INTERVAL_S, float(interval_s)))
        self.store = store or AppMetricsStore()
        self.region = target.region
        self.recently_active = recently_active
        self._max_attempts = max_attempts
        self._read_timeout_s = read_timeout_s
        self._clock = clock
        self._connection: AwsConnection | None = None
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pairs: dict[Pair, float | None] = {}  # pair -> time of its last good poll
        self._last_discovery: float | None = None
        self._status = STARTING if enabled else DISABLED
        self._message = "waiting for the first poll" if enabled else disabled_message
        self._last_good: float | None = None
        self._stale_since: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self.calls = 0
        self.list_calls = 0
        self.metrics_requested = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled or self._client is not None:
            return
        connection = AwsConnection(
            self.target, max_attempts=self._max_attempts, read_timeout_s=self._read_timeout_s
        )
        try:
            self.region = await connection.open()
            self._client = await connection.client("cloudwatch")
        except Exception as exc:
            await connection.close()
            self._client = None
            self._fail(exc, self._clock())
            return
        self._connection = connection

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._client = None
        if connection is not None:
            await connection.close()

    def run_in_background(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="bedrocktop-poller")
        return self._task

    async def run_forever(self) -> None:
        """Poll, then sleep until the next poll; one at a time, slower after failures."""
        if not self.enabled:
            return
        while True:
            await self.poll_once()
            await asyncio.sleep(self.effective_interval_s())

    def effective_interval_s(self) -> float:
        sched = self.schedule
        if not self._failures:
            return sched.interval_s
        backoff = sched.interval_s * float(2 ** min(self._failures, 10))
        return min(backoff, sched.max_backoff_s)

    # -- state ---------------------------------------------------------------------------------

    def projected_metrics_per_hour(self) -> float:
        if not self.enabled:
            return 0.0
        return len(self._pairs) * QUERIES_PER_PAIR * 3600.0 / self.effective_interval_s()

    @property
    def health(self) -> SourceHealth:
        return SourceHealth(
            name=NAME,
            status=self._status,
            message=self._message,
            region=self.region,
            last_good=self._last_good,
            stale_since=self._stale_since,
            last_error=self._last_error,
            cost_per_hour_usd=self.projected_metrics_per_hour() * USD_PER_METRIC,
        )

    def as_report(self) -> dict[str, Any]:
        """``sources.apps_cloudwatch`` in the report."""
        return {
            **self.health.as_report(),
            "namespace": emf.NAMESPACE,
            "pairs": len(self._pairs),
            "calls": self.calls,
            "list_calls": self.list_calls,
            "metrics_requested": self.metrics_requested,
            "estimated_cost_usd": round(self.metrics_requested * USD_PER_METRIC, 6),
        }

    def _fail(self, exc: BaseException, now: float) -> None:
        failure = classify_error(exc, SERVICE_LABEL, PERMISSIONS)
        self._failures += 1
        self._last_error = failure.message
        status = failure.status
        if status == STALE and self._last_good is None:
            status = ERROR
        if status in (STALE, ERROR) and self._stale_since is None:
            self._stale_since = now
        self._status = status
        self._message = failure.message
        if status == STALE and self._last_good is not None:
            self._message += f" (last good data {now - self._last_good:.0f} s ago)"

    def _succeed(self, now: float) -> None:
        self._failures = 0
        self._last_good = now
        self._stale_since = None
        self._status = OK
        if self._pairs:
            apps = len({app for app, _ in self._pairs})
            self._message = f"{apps} apps, {len(self._pairs)} app/model series"
        else:
            self._message = (
                f"no {emf.NAMESPACE} metrics in the last 3 hours (the wrapper's EMF is off: "
                "BEDROCK_TOP_EMF=1)"
            )

    # -- polling -------------------------------------------------------------------------------

    async def poll_once(self, now: float | None = None) -> None:
        """Discovery when due, then the pairs' recent minutes. Never raises."""
        if not self.enabled:
            return
        now = self._clock() if now is None else now
        if self._client is None:
            await self.start()
            if self._client is None:
                return
        try:
            due = self._last_discovery is None
            if due or now - (self._last_discovery or 0.0) >= self.schedule.discovery_every_s:
                await self.discover(self.recently_active)
                self._last_discovery = now
            await self._poll(now)
        except Exception as exc:
            self._fail(exc, now)
            if self._status in (NO_CREDENTIALS, ACCESS_DENIED):
                await self._close()  # refreshed credentials are picked up by the next start
            return
        self._succeed(now)

    async def discover(self, recently_active: bool = True) -> None:
        """ListMetrics on ``BedrockTop``: the [App, ModelId] pairs that exist."""
        params: dict[str, Any] = {"Namespace": emf.NAMESPACE}
        if recently_active:
            params["RecentlyActive"] = "PT3H"
        paginator = self._client.get_paginator("list_metrics")
        self.list_calls += 1
        found: list[Pair] = []
        async for page in paginator.paginate(**params):
            for metric in page.get("Metrics", []):
                if metric.get("MetricName") not in emf.METRICS:
                    continue
                dims = {d.get("Name"): d.get("Value") for d in metric.get("Dimensions", [])}
                if set(dims) == {emf.APP_DIMENSION, emf.MODEL_DIMENSION}:
                    found.append((str(dims[emf.APP_DIMENSION]), str(dims[emf.MODEL_DIMENSION])))
            if page.get("NextToken"):
                self.list_calls += 1
        for pair in dict.fromkeys(found):
            if pair not in self._pairs and len(self._pairs) < MAX_SERIES:
                self._pairs[pair] = None
        # Pairs that fell out of RecentlyActive stay: they are simply quiet.

    async def _poll(self, now: float) -> None:
        sched = self.schedule
        end = float((minute_of(now) + 1) * MINUTE_S)
        floor = end - sched.backfill_s
        groups: dict[float, list[Pair]] = {}
        for pair, last_ok in self._pairs.items():
            start = floor if last_ok is None else max(floor, last_ok - sched.revise_s)
            groups.setdefault(float(minute_of(start) * MINUTE_S), []).append(pair)
        for start, pairs in sorted(groups.items()):
            results = await self._get(pairs, start, end, MINUTE_S)
            for (app, model_id, metric, stat), points in results.items():
                self.store.merge(app, model_id, metric, stat, points)
            for pair in pairs:
                self._pairs[pair] = now

    async def _get(
        self, pairs: Sequence[Pair], start: float, end: float, period_s: int
    ) -> dict[tuple[str, str, str, str], list[tuple[float, float]]]:
        """GetMetricData for every pair's statistics, in as few calls as the limits allow."""
        queries = [(app, model, metric, stat) for app, model in pairs for metric, stat in STATS]
        per_call = queries_per_call(max(1, math.ceil((end - start) / period_s)))
        results: dict[tuple[str, str, str, str], list[tuple[float, float]]] = {}
        paginator = self._client.get_paginator("get_metric_data")
        for offset in range(0, len(queries), per_call):
            chunk = queries[offset : offset + per_call]
            by_id = {f"a{i}": query for i, query in enumerate(chunk)}
            api_queries = [
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": emf.NAMESPACE,
                            "MetricName": metric,
                            "Dimensions": [
                                {"Name": emf.APP_DIMENSION, "Value": app},
                                {"Name": emf.MODEL_DIMENSION, "Value": model},
                            ],
                        },
                        "Period": period_s,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
                for query_id, (app, model, metric, stat) in by_id.items()
            ]
            self.calls += 1
            pages = paginator.paginate(
                MetricDataQueries=api_queries,
                StartTime=start,
                EndTime=end,
                ScanBy="TimestampAscending",
            )
            async for page in pages:
                self.metrics_requested += len(chunk)
                for result in page.get("MetricDataResults", []):
                    key = by_id.get(result.get("Id", ""))
                    if key is None:
                        continue
                    points = results.setdefault(key, [])
                    for ts, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    ):
                        points.append((ts.timestamp(), float(value)))
                if page.get("NextToken"):
                    self.calls += 1
        return results

    # -- the headless report -------------------------------------------------------------------

    async def window_report(self, start: float, end: float) -> dict[Pair, AppTotals]:
        """Totals per (app, model) over [start, end), each statistic one datapoint of the
        window. Failures become the state; the result is then empty."""
        now = self._clock()
        if self._client is None:
            await self.start()
        if self._client is None:
            return {}
        try:
            await self.discover(recently_active=(now - start) <= 3 * 3600)
            aligned, period_s = report_period(start, end, now)
            results = await self._get(list(self._pairs), aligned, end, period_s)
        except Exception as exc:
            self._fail(exc, now)
            return {}
        self._succeed(now)
        per_pair: dict[Pair, dict[tuple[str, str], float]] = {}
        for (app, model, metric, stat), points in results.items():
            if points:
                values = [value for _, value in points]
                value = sum(values) if stat in (SUM, SAMPLE_COUNT) else values[0]
                if stat == AVERAGE and len(values) > 1:
                    value = sum(values) / len(values)
                per_pair.setdefault((app, model), {})[(metric, stat)] = value
        return {
            pair: AppTotals.from_window_stats(stats) for pair, stats in sorted(per_pair.items())
        }


def app_totals_by_app(totals: dict[Pair, AppTotals]) -> dict[str, dict[str, AppTotals]]:
    """app -> model -> totals."""
    grouped: dict[str, dict[str, AppTotals]] = {}
    for (app, model), each in totals.items():
        grouped.setdefault(app, {})[model] = each
    return grouped


def app_metrics_once(
    target: AwsTarget,
    since: float,
    now: float,
    *,
    enabled: bool = True,
    disabled_message: str = "off (CloudWatch is off)",
    deadline_s: float = HEADLESS_DEADLINE_S,
) -> tuple[dict[str, dict[str, AppTotals]], dict[str, Any]]:
    """For ``--once``: per app, per model totals over [since, now), and the source's state.
    Runs its own event loop; never raises for AWS faults."""
    source = AppMetricsSource(
        target, enabled=enabled, disabled_message=disabled_message, clock=lambda: now
    )
    if not enabled:
        return {}, source.as_report()

    async def run() -> dict[Pair, AppTotals]:
        try:
            # A headless report waits for AWS a bounded time in all (Session.aws_time_left).
            return await asyncio.wait_for(source.window_report(since, now), deadline_s)
        except TimeoutError:
            source._fail(
                deadline_passed(deadline_s),
                now,
            )
            return {}
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(source.stop(), 2.0)

    totals = asyncio.run(run())
    return app_totals_by_app(totals), source.as_report()

"""The Prometheus / OpenMetrics endpoint (``--prometheus``), and ``bedrock-top export``: the same
numbers headless, for a systemd unit or a container.

prometheus_client serves ``/metrics`` from its own thread. The stores belong to one thread (the
screen's event loop, or the exporter's), so a scrape does not read them from the server's thread:
it asks the owning event loop for a :class:`~monitor.metrics.MetricsSnapshot` and waits for it (a
few milliseconds), and nothing is computed while nobody scrapes. prometheus_client is imported
only here, and only when the endpoint starts: it is the optional ``[export]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from monitor.metrics import (
    GaugeSample,
    MetricsBoard,
    MetricsSnapshot,
    ModelLabels,
    UsageReader,
    UsageSample,
    app_metrics_usage,
    cloudwatch_usage,
    log_health,
    store_usage,
)
from monitor.sources.aws import SourceHealth

if TYPE_CHECKING:
    from monitor.session import Session
    from monitor.sources.app_metrics import AppMetricsSource
    from monitor.sources.cloudwatch import CloudWatchSource
    from monitor.sources.cloudwatch_regions import CloudWatchRegions, Scope
    from monitor.sources.fleet import FleetSource
    from monitor.sources.fleet_regions import FleetRegions
    from monitor.sources.service_quotas import ServiceQuotasSource

PREFIX = "bedrock_top_"
DEFAULT_HOST = "127.0.0.1"
SCRAPE_TIMEOUT_S = 10.0
# The tailer's batches are drained at most this often when nobody scrapes, so that the queue
# between the tailer's thread and the store stays small whatever the scrape interval.
DRAIN_EVERY_S = 1.0
INSTALL_HINT = "pip install 'bedrock-top[export]'"

# Counter name (without prefix and _total) -> (help, how to read it from a sample).
COUNTERS: dict[str, tuple[str, Callable[[UsageSample], float | None] | None]] = {
    "requests": ("Bedrock runtime calls", lambda s: s.tally.requests),
    "input_tokens": ("Input tokens (prompt cache excluded)", lambda s: s.tally.input_tokens),
    "output_tokens": ("Output tokens", lambda s: s.tally.output_tokens),
    "cache_read_input_tokens": (
        "Input tokens read from the prompt cache",
        lambda s: s.tally.cache_read_input_tokens,
    ),
    "cache_write_input_tokens": (
        "Input tokens written to the prompt cache",
        lambda s: s.tally.cache_write_input_tokens,
    ),
    "errors": ("Calls that failed (client and server errors)", lambda s: s.tally.errors),
    "throttles": ("Calls that were throttled", lambda s: s.tally.throttles),
    "estimated_requests": (
        "Calls whose token counts are the wrapper's estimates (no count in the response)",
        lambda s: s.tally.estimated,
    ),
    "cost_usd": ("Spend in USD of priced usage only (unpriced models have no sample)", None),
}


class ExportError(Exception):
    """The endpoint cannot start: one line saying why and what to do."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


def parse_listen(text: str, default_host: str = "") -> ListenAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``. Port 0 picks a free port; the host is
    ``default_host`` when not given. Raises ValueError."""
    host, _, port_text = text.strip().rpartition(":")
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"--prometheus {text!r}: expected a port from 1 to 65535 (or HOST:PORT; 0 picks a "
            "free port)"
        )
    return ListenAddress(host, int(port_text))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- prometheus_client families ------------------------------------------------------------------


class SnapshotCollector:
    """A prometheus_client collector over snapshots taken by ``take`` (called per scrape)."""

    def __init__(self, take: Callable[[], MetricsSnapshot]) -> None:
        self.take = take

    def describe(self) -> list[Any]:
        # Not probed at registration: a scrape is the only moment the stores are read.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        ok = GaugeMetricFamily(
            PREFIX + "scrape_ok",
            "1 when this scrape read the stores; 0 when bedrock-top could not answer in time "
            "(starting, stopping or stalled): the other series are then left out",
        )
        try:
            snapshot = self.take()
        except Exception:
            # Said as a value, not as an HTTP error: prometheus_client's server would print a
            # traceback on stderr, which under the live screen is the terminal.
            ok.add_metric([], 0.0)
            yield ok
            return
        ok.add_metric([], 1.0)
        yield ok
        label_names = _label_names(snapshot.usage)
        created = snapshot.created
        for name, (documentation, read) in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, documentation, labels=label_names)
            for sample in snapshot.usage:
                value = sample.cost_usd if read is None else read(sample)
                if value is not None:
                    family.add_metric(_values(sample, label_names), value, created=created)
            yield family
        for name, documentation, pick in (
            ("latency_seconds", "Latency of successful calls, seconds", "latency"),
            ("ttft_seconds", "Time to first token of streamed calls, seconds", "ttft"),
        ):
            histogram = HistogramMetricFamily(PREFIX + name, documentation, labels=label_names)
            for sample in snapshot.usage:
                figures = getattr(sample, pick)
                if figures is None:
                    continue
                buckets = [(_bound(le), count) for le, count in figures.buckets]
                buckets.append(("+Inf", figures.count))
                histogram.add_metric(_values(sample, label_names), buckets, figures.sum_s)
            yield histogram
        for gauge in snapshot.gauges:
            gauge_family = GaugeMetricFamily(
                PREFIX + gauge.name, gauge.documentation, labels=list(gauge.label_names)
            )
            for point in gauge.samples:
                gauge_family.add_metric([value for _name, value in point.labels], point.value)
            yield gauge_family


def _label_names(samples: tuple[UsageSample, ...]) -> list[str]:
    names: dict[str, None] = {"model_id": None, "source": None}
    for sample in samples:
        for name, _value in sample.labels:
            names.setdefault(name, None)
    return list(names)


def _values(sample: UsageSample, names: list[str]) -> list[str]:
    labels = dict(sample.labels)
    return [labels.get(name, "") for name in names]


def _bound(seconds: float) -> str:
    return repr(float(seconds))


# -- what is published ---------------------------------------------------------------------------


def build_board(
    session: Session,
    cloudwatch: CloudWatchSource | CloudWatchRegions | None,
    apps: AppMetricsSource | None = None,
    quotas: ServiceQuotasSource | None = None,
    fleet: FleetSource | FleetRegions | None = None,
) -> MetricsBoard:
    """Every registration for a session: the local log's usage, CloudWatch's (``AWS/Bedrock``,
    and the ``BedrockTop`` namespace per app) when it runs, budget fractions, and each source's
    health. A new source or gauge is one more registration here."""
    board = MetricsBoard(created=session.since)

    def cost(model_id: str, tally: Any) -> float | None:
        # Read at scrape time: the screen may have reloaded the configuration's prices.
        return session.price_book.cost_usd(model_id, tally)

    board.add_source(
        store_usage(session.feed.store, "local", cost, ModelLabels()),
        lambda: log_health("local", session.feed.tailer.snapshot()),
    )
    from monitor.sources.cloudwatch_regions import CloudWatchRegions

    if isinstance(cloudwatch, CloudWatchRegions):
        if cloudwatch.multi_region or cloudwatch.linked_accounts:
            board.add_sources(
                regional_usage(cloudwatch, session.since, cost), regional_health(cloudwatch)
            )
            cloudwatch = None
        else:
            # One region, one account: the same series, named as they always were.
            cloudwatch = next(iter(cloudwatch.runtime_sources()), None)
    if cloudwatch is not None:
        board.add_source(
            cloudwatch_usage(
                cloudwatch.store,
                session.since,
                lambda: cloudwatch.state.last_good_poll,
                # A poll asks again for the minutes CloudWatch may still revise; one more minute
                # covers a poll that was under way at the last good one.
                cloudwatch.schedule.revise_s + 60,
                cost,
                ModelLabels(),
            ),
            lambda: cloudwatch_health(cloudwatch),
        )
    if fleet is not None:
        # The fleet's own store (CloudWatch Logs): its own series, never added to local ones.
        board.add_source(store_usage(fleet.store, "fleet", cost, ModelLabels()), fleet.health)
    if apps is not None:
        board.add_source(
            app_metrics_usage(
                apps.store,
                session.since,
                lambda: apps.health.last_good,
                apps.schedule.revise_s + 60,
                cost,
            ),
            lambda: apps.health,
        )
    if quotas is not None or session.config.quotas:

        def quota_fractions() -> list[GaugeSample]:
            listed = quotas.quotas if quotas is not None else []
            samples = []
            for model_id, model in session.quota_statuses(session.clock(), listed).items():
                for measure, use in model.uses.items():
                    if use is not None:
                        labels = (
                            ("model_id", model_id),
                            ("quota", measure),
                            ("source", use.source),
                        )
                        samples.append(GaugeSample(labels, use.fraction))
            return samples

        board.add_gauge(
            "quota_fraction",
            "Use of each model's Bedrock runtime quota (tpm and rpm: the busiest of the last 5 "
            "minutes; tpd: the day so far), as a fraction of its limit",
            ("model_id", "quota", "source"),
            quota_fractions,
        )
        if quotas is not None:
            board.add_source(None, lambda: quotas.health)
    if session.config.budgets:
        evaluated: list[Any] = [None, []]  # (monotonic time, statuses) of the last evaluation

        def statuses() -> list[Any]:
            # Both budget families of one scrape share one evaluation (a month's budget sums
            # thousands of buckets per model).
            if evaluated[0] is None or time.monotonic() - evaluated[0] > 1.0:
                evaluated[:] = [time.monotonic(), session.budget_statuses(session.clock())]
            return list(evaluated[1])

        def budgets(field: str) -> Callable[[], list[GaugeSample]]:
            def read() -> list[GaugeSample]:
                samples = []
                for status in statuses():
                    value = getattr(status, field)
                    if value is None:
                        continue
                    labels = (
                        ("budget", status.spec.name),
                        ("period", status.spec.period),
                        ("source", status.source),
                    )
                    samples.append(GaugeSample(labels, float(value)))
                return samples

            return read

        board.add_gauge(
            "budget_fraction",
            "Budget used so far in its period, as a fraction of its limit",
            ("budget", "period", "source"),
            budgets("fraction"),
        )
        board.add_gauge(
            "budget_projected_fraction",
            "Budget forecast for the end of its period at the current burn rate (an estimate)",
            ("budget", "period", "source"),
            budgets("projected_fraction"),
        )

    return board


def regional_usage(
    regions: CloudWatchRegions, since: float, cost: Callable[[str, Any], float | None]
) -> UsageReader:
    """Every region's (and linked account's) ``AWS/Bedrock`` series, each labelled with its
    ``region`` (and ``account``): series of one source that add up, never merged into one here
    so that a region's restart or revision stays its own. Regions found later join at the next
    scrape."""
    from monitor.sources.cloudwatch import BEDROCK

    readers: dict[Scope, UsageReader] = {}
    names = ModelLabels()

    def read() -> list[UsageSample]:
        samples = []
        for scope, source in list(regions.sources.items()):
            if scope.namespace is not BEDROCK:
                continue
            reader = readers.get(scope)
            if reader is None:
                reader = readers[scope] = cloudwatch_usage(
                    source.store,
                    since,
                    _last_good_poll(source),
                    source.schedule.revise_s + 60,
                    cost,
                    names,
                )
            where: tuple[tuple[str, str], ...] = (("region", scope.region or source.region or ""),)
            if scope.account_id:
                where += (("account", scope.account_id),)
            samples += [replace(sample, labels=sample.labels + where) for sample in reader()]
        return samples

    return read


def _last_good_poll(source: CloudWatchSource) -> Callable[[], float | None]:
    return lambda: source.state.last_good_poll


def regional_health(regions: CloudWatchRegions) -> Callable[[], list[SourceHealth]]:
    """Each region's (and account's) ``AWS/Bedrock`` source as ``cloudwatch:<region>``
    (``cloudwatch:<region>:<account>``)."""
    from monitor.sources.cloudwatch import BEDROCK

    def read() -> list[SourceHealth]:
        healths = []
        for scope, source in list(regions.sources.items()):
            if scope.namespace is not BEDROCK:
                continue
            name = f"cloudwatch:{scope.region or source.region or ''}"
            if scope.account_id:
                name += f":{scope.account_id}"
            healths.append(replace(cloudwatch_health(source), name=name))
        return healths

    return read


def cloudwatch_health(source: CloudWatchSource) -> SourceHealth:
    state = source.state
    return SourceHealth(
        name="cloudwatch",
        status=state.status,
        message=state.message,
        region=state.region,
        last_good=state.last_good_poll,
        cost_per_hour_usd=state.projected_cost_per_hour_usd,
    )


# -- serving -------------------------------------------------------------------------------------


class OwnerLoop:
    """Runs a function on the event loop that owns the stores and waits for its result."""

    def __init__(
        self, loop: Callable[[], asyncio.AbstractEventLoop | None], timeout_s: float
    ) -> None:
        self._loop = loop
        self.timeout_s = timeout_s

    def call(self, function: Callable[[], MetricsSnapshot]) -> MetricsSnapshot:
        loop = self._loop()
        if loop is None or loop.is_closed():
            raise RuntimeError("bedrock-top is starting or stopping; scrape again")
        result: concurrent.futures.Future[MetricsSnapshot] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(function())
            except BaseException as exc:  # handed to the scraping thread, which reports it
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=self.timeout_s)


class MetricsEndpoint:
    """prometheus_client's HTTP server on ``address``, reading ``take`` per scrape."""

    def __init__(self, address: ListenAddress, take: Callable[[], MetricsSnapshot]) -> None:
        self.address = address
        self.take = take
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> ListenAddress:
        """Bind and serve; returns the address bound (port 0 becomes the port chosen). Raises
        ExportError for a port in use, one that needs privileges, or a host not on this machine."""
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ExportError(f"--prometheus needs prometheus-client: {INSTALL_HINT}") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(self.take))
        where = f"{self.address.host}:{self.address.port}"
        try:
            self._server, self._thread = start_http_server(
                self.address.port, addr=self.address.host, registry=registry
            )
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ExportError(
                    f"--prometheus {where}: the port is already in use by another program; "
                    "pick another port"
                ) from None
            if err.errno == errno.EACCES:
                raise ExportError(
                    f"--prometheus {where}: not allowed to bind that port (ports below 1024 "
                    "need privileges); pick a port above 1023"
                ) from None
            raise ExportError(
                f"--prometheus {where}: cannot listen there ({err.strerror or err})"
            ) from None
        self.address = ListenAddress(self.address.host, int(self._server.server_port))
        return self.address

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def screen_endpoint(
    session: Session,
    cloudwatch: CloudWatchSource | CloudWatchRegions | None,
    address: ListenAddress,
    loop: Callable[[], asyncio.AbstractEventLoop | None],
    apps: AppMetricsSource | None = None,
    quotas: ServiceQuotasSource | None = None,
    fleet: FleetSource | FleetRegions | None = None,
) -> MetricsEndpoint:
    """The endpoint of the live screen: snapshots taken on the screen's event loop, from the
    store as the screen last drained it (at most one refresh interval behind)."""
    board = build_board(session, cloudwatch, apps, quotas, fleet)
    owner = OwnerLoop(loop, SCRAPE_TIMEOUT_S)
    return MetricsEndpoint(address, lambda: owner.call(board.snapshot))


def announce(address: ListenAddress) -> None:
    print(f"bedrock-top: metrics on {address.url()}", file=sys.stderr, flush=True)
    if not is_loopback(address.host):
        print(
            f"bedrock-top: warning: the metrics endpoint on {address.host} has no "
            "authentication: anyone who can reach it reads your model ids and usage",
            file=sys.stderr,
            flush=True,
        )


# -- headless: bedrock-top export ----------------------------------------------------------------


class HeadlessExport:
    """The session's sources running on an event loop of their own, with no screen: the log
    followed into the store, CloudWatch polled, and snapshots taken there for each scrape."""

    def __init__(
        self,
        session: Session,
        cloudwatch: CloudWatchSource | CloudWatchRegions | None,
        apps: AppMetricsSource | None = None,
        quotas: ServiceQuotasSource | None = None,
        fleet: FleetSource | FleetRegions | None = None,
    ) -> None:
        self.session = session
        self.cloudwatch = cloudwatch
        self.apps = apps
        self.quotas = quotas
        self.fleet = fleet
        self.board = build_board(session, cloudwatch, apps, quotas, fleet)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_pending = False
        self._last_drain = 0.0

    def snapshot(self) -> MetricsSnapshot:
        self.session.feed.drain()
        return self.board.snapshot()

    def take_from_thread(self) -> MetricsSnapshot:
        return OwnerLoop(lambda: self._loop, SCRAPE_TIMEOUT_S).call(self.snapshot)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.session.feed.catch_up()
        self.session.feed.start(self._wake)
        if self.cloudwatch is not None:
            await self.cloudwatch.start()
            self.cloudwatch.run_in_background()
        if self.apps is not None:
            await self.apps.start()
            self.apps.run_in_background()
        if self.quotas is not None:
            self.quotas.run_in_background()
        if self.fleet is not None:
            await self.fleet.start()
            self.fleet.run_in_background()

    def _wake(self, _new_model: bool) -> None:
        """On the tailer's thread after each batch: one drain pending at a time, at most every
        ``DRAIN_EVERY_S``, so an idle exporter sleeps and a busy one stays cheap."""
        loop = self._loop
        if self._drain_pending or loop is None:
            return
        self._drain_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._schedule_drain)

    def _schedule_drain(self) -> None:
        wait = max(0.0, self._last_drain + DRAIN_EVERY_S - time.monotonic())
        assert self._loop is not None
        self._loop.call_later(wait, self._drain)

    def _drain(self) -> None:
        self._drain_pending = False
        self._last_drain = time.monotonic()
        self.session.feed.drain()

    async def stop(self) -> None:
        self.session.feed.stop()
        if self.cloudwatch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cloudwatch.stop(), timeout=2)
        if self.apps is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.apps.stop(), timeout=2)
        for source in (self.quotas, self.fleet):
            if source is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(source.stop(), timeout=2)
        self._loop = None


def cloudwatch_sources_for(
    session: Session, args: argparse.Namespace
) -> tuple[CloudWatchRegions | None, AppMetricsSource | None]:
    """The CloudWatch pollers the session wants, for the live screen and ``export`` alike:
    ``AWS/Bedrock`` (and bedrock-mantle) in every region polled, and the ``BedrockTop``
    namespace; or None for each. The session's budgets and quotas read their stores."""
    from monitor.session import cloudwatch_wanted

    enabled, _why = cloudwatch_wanted(args, session.config)
    if not enabled:
        return None, None
    from monitor.sources.app_metrics import AppMetricsSource
    from monitor.sources.aws import AwsTarget
    from monitor.sources.cloudwatch_regions import CloudWatchRegions

    sources = session.config.sources
    regions = CloudWatchRegions(
        list(sources.regions) or [None],
        all_regions=sources.all_regions,
        mantle=sources.mantle,
        linked_accounts=sources.linked_accounts,
        profile=sources.profile,
        endpoint_url=sources.endpoint_url,
        interval_s=sources.interval_s,
        models_from_config=session.config.models,
        period_starts=session.alarm_period_starts,
    )
    # Regions and accounts found later bring stores of their own: budgets and quotas ask
    # each time.
    session.cloudwatch_stores_of = regions.stores
    session.cloudwatch_region_stores_of = regions.region_stores
    # Quotas are per region: they read the first region's figures.
    first = regions.stores()
    session.cloudwatch_store = first[0] if first else None
    # The BedrockTop namespace is read in the first region polled.
    apps_region = sources.regions[0] if sources.regions else None
    apps = AppMetricsSource(
        AwsTarget(apps_region, sources.profile, sources.endpoint_url),
        interval_s=sources.app_metrics_interval_s,
    )
    return regions, apps


def quota_source_for(session: Session, args: argparse.Namespace) -> ServiceQuotasSource | None:
    """The Service Quotas source the session wants (as the live screen builds it), or None."""
    from monitor.session import quotas_wanted

    if not quotas_wanted(args, session.config)[0]:
        return None
    from monitor.sources.service_quotas import ServiceQuotasSource

    sources = session.config.sources
    return ServiceQuotasSource(sources.region, sources.profile, sources.endpoint_url)


def fleet_source_for(session: Session, args: argparse.Namespace) -> FleetRegions | None:
    """The fleet source (CloudWatch Logs) the session wants (as the live screen builds it: one
    per region polled, one store), or None."""
    from monitor.session import fleet_wanted

    if not fleet_wanted(args, session.config)[0]:
        return None
    from monitor.sources.fleet_regions import FleetRegions

    sources = session.config.sources
    return FleetRegions(
        list(sources.regions) or [None],
        sources.profile,
        sources.endpoint_url,
        log_groups=sources.log_groups,
        interval_s=sources.fleet_interval_s,
        live_tail=sources.live_tail,
        since=session.since,
    )


def listen_address(session: Session) -> ListenAddress | None:
    """Where the configuration (or --prometheus) asks the endpoint to listen, if anywhere."""
    export = session.config.export
    if export.prometheus_port is None:
        return None
    return ListenAddress(export.prometheus_host, export.prometheus_port)


async def run_headless(
    session: Session, args: argparse.Namespace, address: ListenAddress, stop: asyncio.Event
) -> None:
    """Serve metrics until ``stop`` is set. Raises ExportError when the endpoint cannot start."""
    cloudwatch, apps = cloudwatch_sources_for(session, args)
    service = HeadlessExport(
        session,
        cloudwatch,
        apps,
        quota_source_for(session, args),
        fleet_source_for(session, args),
    )
    await service.start()
    endpoint = MetricsEndpoint(address, service.take_from_thread)
    try:
        announce(endpoint.start())
        await stop.wait()
    finally:
        # The HTTP server's shutdown waits for its thread: not on the event loop.
        await asyncio.to_thread(endpoint.stop)
        await service.stop()


def export_main(argv: list[str]) -> int:
    """``bedrock-top export [--prometheus [HOST:]PORT] [source flags]``: no terminal needed."""
    from monitor.cli import UsageError, parse_args
    from monitor.session import SessionError, open_session

    try:
        args = parse_args(argv)
        if args.once:
            raise UsageError("export serves metrics until stopped; --once is the report")
    except UsageError as err:
        print(f"bedrock-top export: {err}", file=sys.stderr)
        return 2
    try:
        session = open_session(args, live=True)
    except SessionError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    try:
        address = listen_address(session)
        if address is None:
            print(
                "bedrock-top export: needs --prometheus PORT (or export.prometheus_port in the "
                "configuration)",
                file=sys.stderr,
            )
            return 2
        return asyncio.run(_export(session, args, address))
    finally:
        session.close()


async def _export(session: Session, args: argparse.Namespace, address: ListenAddress) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await run_headless(session, args, address, stop)
    except ExportError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    return 0

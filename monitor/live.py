"""What the live screen reads besides the log store, built from a session: prices, budgets (with
their threshold alarms) and the CloudWatch poller. No Textual import: the screen only calls these
objects, so each part stays testable without a terminal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from monitor.budgets import BudgetStatus as BudgetFigures
from monitor.budgets import ThresholdEvent, ThresholdTracker, run_on_threshold
from monitor.cloudwatch_store import INVOCATIONS, LATENCY, SUM, TTFT, CloudWatchStore
from monitor.formatting import format_count, format_usd
from monitor.groups import GroupIndex
from monitor.session import Session
from monitor.sources.app_metrics import RATE_WINDOW_S as APP_RATE_WINDOW_S
from monitor.sources.app_metrics import AppMetricsSource
from monitor.sources.cloudwatch import BEDROCK, MANTLE, CloudWatchSource, NamespaceSpec
from monitor.sources.cloudwatch_regions import CloudWatchRegions, worst_status
from monitor.sources.fleet import FleetSource
from monitor.sources.fleet_regions import FleetRegions
from monitor.sources.service_quotas import ServiceQuotasSource
from monitor.sources.service_quotas_regions import ServiceQuotasRegions
from monitor.store import Store, Tally
from monitor.ui.hooks import (
    AppRate,
    BudgetAlarm,
    BudgetLimit,
    BudgetStatus,
    CloudWatchState,
    FleetState,
    GroupFigures,
    ScreenExtras,
)

_log = logging.getLogger(__name__)
AVERAGE = "Average"
BUDGET_REFRESH_S = 5.0


class LiveBudgets:
    """Budgets evaluated at each refresh, and the thresholds they cross (once per threshold per
    period)."""

    def __init__(self, session: Session, every_s: float = BUDGET_REFRESH_S) -> None:
        self.session = session
        self.tracker = ThresholdTracker()
        self.every_s = every_s
        self._last: list[BudgetFigures] = []
        self._shown: list[BudgetStatus] = []
        self._evaluated_at: float | None = None
        self._fresh = False

    def budget_statuses(self, now: float) -> Sequence[BudgetStatus]:
        # A month's budget sums thousands of quarter-hour buckets per model: evaluated every few
        # seconds, not on every frame (budgets move slowly; the gauges lose nothing).
        due = self._evaluated_at is None or not 0 <= now - self._evaluated_at < self.every_s
        if due:
            self._last = self.session.budget_statuses(now)
            self._shown = [_shown(figures) for figures in self._last]
            self._evaluated_at = now
            self._fresh = True
        return self._shown

    def refresh(self) -> None:
        """Evaluate again at the next call (after a limit was changed)."""
        self._evaluated_at = None

    def crossed(self) -> list[BudgetAlarm]:
        """Thresholds crossed since the last evaluation, each also run through the
        configuration's ``on_threshold`` command (without waiting for it)."""
        if not self._fresh:
            return []
        self._fresh = False
        command = self.session.config.on_threshold
        alarms = []
        for event in self.tracker.update(self._last):
            if command:
                run_on_threshold(command, event, on_error=_log.warning)
            alarms.append(_alarm(event))
        return alarms

    def limits(self) -> list[BudgetLimit]:
        return [
            BudgetLimit(spec.name, spec.unit, spec.limit) for spec in self.session.config.budgets
        ]

    def save_limit(self, name: str, value: float) -> str:
        """Write a budget's new limit to the configuration file and load it back. Returns the
        file written. Raises ValueError or OSError with a message for the dialog."""
        from monitor.config import ConfigError, save_budget_limit

        config = self.session.config
        if config.path is None:
            raise ValueError("no configuration file: run `bedrock-top init-config` first")
        spec = next((spec for spec in config.budgets if spec.name == name), None)
        if spec is None:
            raise ValueError(f"no budget named {name!r}")
        if not value > 0:
            raise ValueError("the limit must be greater than 0")
        try:
            if spec.unit == "usd":
                written = save_budget_limit(config.path, name, limit_usd=float(value))
            else:
                written = save_budget_limit(config.path, name, limit_tokens=int(value))
        except ConfigError as err:  # the dialog shows it; the screen carries on
            raise ValueError(str(err)) from None
        self.session.reload_config()
        self.refresh()
        return str(written)


def _alarm(event: ThresholdEvent) -> BudgetAlarm:
    if event.limit_usd is not None:
        used = f"{format_usd(event.used_usd)} of {format_usd(event.limit_usd)}"
    else:
        used = f"{format_count(event.used_tokens)} of {format_count(event.limit_tokens or 0)} tok"
    return BudgetAlarm(
        budget=event.budget,
        message=f"{event.budget}: {event.fraction:.0%} of its {event.period} budget ({used})",
        final=event.threshold >= 1.0,
    )


def _shown(figures: BudgetFigures) -> BudgetStatus:
    spec = figures.spec
    if spec.unit == "usd":
        used_text, limit_text = format_usd(figures.used_usd), format_usd(spec.limit)
        if figures.source == "billing" and figures.billed_usd is not None:
            # Labelled: the billed part and the estimate since the bill's last complete day.
            estimated = format_usd(figures.estimated_usd or 0.0)
            used_text += f" (billed {format_usd(figures.billed_usd)} + est. {estimated})"
    else:
        used_text = f"{format_count(figures.used_tokens)} tok"
        limit_text = f"{format_count(spec.limit)} tok"
    return BudgetStatus(
        name=spec.name,
        period=spec.period,
        fraction=figures.fraction,
        used_text=used_text,
        limit_text=limit_text,
        source=figures.source,
        projected_fraction=figures.projected_fraction,
        exhausts_at=figures.exhausts_at,
        warn_at=spec.warn_at,
        models=spec.models,
    )


class LiveCloudWatch:
    """The CloudWatch sources (every region, namespace and account) as the screen sees them.
    Runs in the app's event loop. Figures of several regions add up (the same source, different
    calls); bedrock-mantle's are kept apart, in rows of their own."""

    def __init__(self, sources: CloudWatchRegions | CloudWatchSource) -> None:
        if isinstance(sources, CloudWatchSource):
            sources = CloudWatchRegions.of_source(sources)
        self.sources = sources

    @property
    def version(self) -> int:
        return self.sources.version

    @property
    def multi_region(self) -> bool:
        return self.sources.multi_region

    async def start(self) -> None:
        await self.sources.start()
        self.sources.run_in_background()

    async def stop(self) -> None:
        await self.sources.stop()

    def set_paused(self, paused: bool) -> None:
        self.sources.set_paused(paused)

    def set_visible_models(self, model_ids: Sequence[str] | None) -> None:
        self.sources.set_visible_models(model_ids)

    def set_focus_model(self, model_id: str | None) -> None:
        self.sources.set_focus_model(model_id)

    def region_states(self) -> list[CloudWatchState]:
        return [
            CloudWatchState(
                region=state.region,
                state=state.status,
                last_good_epoch=state.last_good_poll,
                cost_per_hour_usd=state.cost_per_hour_usd,
                message=_header_message(state.status, state.message, state.percentiles),
            )
            for state in self.sources.region_states()
        ]

    def cloudwatch_state(self) -> CloudWatchState:
        regions = self.region_states()
        if len(regions) == 1:
            return regions[0]
        if not regions:
            # Nothing to poll yet (--all-regions or linked accounts found none, or not yet).
            report = self.sources.report_state()
            return CloudWatchState(
                region="all regions" if self.sources.all_regions else "no region",
                state=str(report["state"]),
                message=str(report["message"]),
                cost_per_hour_usd=0.0,
            )
        status = worst_status(state.state for state in regions)
        goods = [s.last_good_epoch for s in regions if s.last_good_epoch is not None]
        return CloudWatchState(
            region=", ".join(state.region for state in regions) or "no region",
            state=status,
            last_good_epoch=min(goods) if goods and len(goods) == len(regions) else None,
            cost_per_hour_usd=self.sources.projected_cost_per_hour_usd(),
            message="; ".join(
                f"{state.region}: {state.message}"
                for state in regions
                if state.state == status and state.message
            ),
        )

    def _stores(self, namespace: NamespaceSpec = BEDROCK) -> list[tuple[str, CloudWatchStore]]:
        return [
            (scope.region or source.region or "", source.store)
            for scope, source in self.sources.sources.items()
            if scope.namespace is namespace
        ]

    def group_keys(self) -> Sequence[str]:
        keys = ["region"] if self.sources.multi_region else []
        return [*keys, "account"] if self.sources.linked_accounts else keys

    def group_figures(self, key: str, now: float) -> list[GroupFigures]:
        """Per region (or account): calls per minute of every model there, added up."""
        parts: dict[str, dict[NamespaceSpec, list[CloudWatchStore]]] = {}
        for scope, source in self.sources.sources.items():
            name = scope.account_id if key == "account" else scope.region or source.region
            per_namespace = parts.setdefault(name or "-", {})
            per_namespace.setdefault(scope.namespace, []).append(source.store)
        figures = []
        for name, stores in parts.items():
            runtime = [("", store) for store in stores.get(BEDROCK, [])]
            mantle = [("", store) for store in stores.get(MANTLE, [])]
            models = {m for _, store in runtime for m in store.model_ids()}
            figures.append(
                GroupFigures(
                    name=name,
                    requests_per_min=_add_calls(runtime, models),
                    models=len(models),
                    mantle_requests_per_min=_add_calls(
                        mantle, {m for _, store in mantle for m in store.model_ids()}
                    ),
                )
            )
        return figures

    def account_model_ids(self) -> Sequence[str]:
        return sorted({m for _, store in self._stores() for m in store.model_ids()})

    def model_regions(self, model_id: str, mantle: bool = False) -> list[str]:
        """The regions whose CloudWatch has data for the model (in the order polled)."""
        stores = self._stores(MANTLE if mantle else BEDROCK)
        return list(dict.fromkeys(region for region, store in stores if model_id in store))

    def mantle_model_ids(self) -> Sequence[str]:
        return sorted({m for _, store in self._stores(MANTLE) for m in store.model_ids()})

    def account_minute_series(
        self, model_id: str, metric: str, now: float, points: int
    ) -> list[float | None]:
        end = (int(now) // 60 + 1) * 60
        start = end - points * 60
        stores = [store for _, store in self._stores() if model_id in store]
        if metric not in (LATENCY, TTFT):
            return _add_series(
                [store.minute_series(model_id, metric, SUM, start, end) for store in stores],
                points,
            )
        # Several regions' averages, weighted by each region's calls in that minute.
        averages = [store.minute_series(model_id, metric, AVERAGE, start, end) for store in stores]
        if len(averages) == 1:
            return averages[0]
        weights = [store.minute_series(model_id, INVOCATIONS, SUM, start, end) for store in stores]
        series: list[float | None] = []
        for minute in range(points):
            pairs = [
                (avg[minute], weight[minute] or 0.0)
                for avg, weight in zip(averages, weights, strict=True)
                if avg[minute] is not None
            ]
            total = sum(w for _, w in pairs)
            if not pairs:
                series.append(None)
            elif total > 0:
                series.append(sum(float(a or 0.0) * w for a, w in pairs) / total)
            else:
                series.append(sum(float(a or 0.0) for a, _ in pairs) / len(pairs))
        return series

    def account_requests_per_min(self, model_id: str, now: float) -> float | None:
        return _newest_calls(self._stores(), model_id)

    def mantle_requests_per_min(self, model_id: str, now: float) -> float | None:
        return _newest_calls(self._stores(MANTLE), model_id)


def _header_message(status: str, message: str, percentiles: str) -> str:
    shown = message if status != "ok" else ""
    if percentiles == "fallback":
        shown = (shown + "; " if shown else "") + "no percentiles: avg/max"
    return shown


def _add_series(parts: Sequence[list[float | None]], points: int) -> list[float | None]:
    if len(parts) == 1:
        return parts[0]
    series: list[float | None] = []
    for minute in range(points):
        known = [part[minute] for part in parts if part[minute] is not None]
        series.append(sum(v for v in known if v is not None) if known else None)
    return series


def _add_calls(stores: Sequence[tuple[str, CloudWatchStore]], models: set[str]) -> float | None:
    values = [_newest_calls(stores, model_id) for model_id in sorted(models)]
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _newest_calls(stores: Sequence[tuple[str, CloudWatchStore]], model_id: str) -> float | None:
    """Invocations in each region's newest minute with data, added up (None: no data)."""
    total: float | None = None
    for _, store in stores:
        newest = store.newest_minute(model_id) if model_id in store else None
        if newest is None:
            continue
        value = store.value(model_id, INVOCATIONS, SUM, newest)
        if value is not None:
            total = (total or 0.0) + value
    return total


class LiveAppMetrics:
    """The BedrockTop poller (per-app rates from the wrapper's EMF) as the screen sees it."""

    def __init__(self, source: AppMetricsSource, window_s: int = APP_RATE_WINDOW_S) -> None:
        self.source = source
        self.window_s = window_s
        self._rates: tuple[int, list[AppRate]] | None = None

    @property
    def version(self) -> int:
        return self.source.store.version

    async def start(self) -> None:
        await self.source.start()
        self.source.run_in_background()

    async def stop(self) -> None:
        await self.source.stop()

    def app_rates(self) -> list[AppRate]:
        store = self.source.store
        cached = self._rates
        if cached is not None and cached[0] == store.version:
            return cached[1]  # nothing new since the last poll: no recomputation per frame
        rows = []
        for app in store.apps():
            rates = store.rates(app, self.window_s)
            totals = store.totals(app, rates.as_of - self.window_s, rates.as_of)
            rows.append(
                AppRate(
                    app=app,
                    requests_per_min=rates.requests_per_min,
                    input_tokens_per_min=rates.input_tokens_per_min,
                    output_tokens_per_min=rates.output_tokens_per_min,
                    errors=rates.errors,
                    throttles=rates.throttles,
                    models=len(store.models_of(app)),
                    latency_avg_ms=totals.latency_avg_ms,
                )
            )
        rows.sort(key=lambda row: (-row.input_tokens_per_min - row.output_tokens_per_min, row.app))
        self._rates = (store.version, rows)
        return rows

    def apps_state(self) -> CloudWatchState:
        health = self.source.health
        return CloudWatchState(
            region=health.region or "no region",
            state=health.status,
            last_good_epoch=health.last_good,
            cost_per_hour_usd=health.cost_per_hour_usd,
            message=health.message if health.status != "ok" else "",
        )


class LiveFleet:
    """The fleet source as the screen sees it. Runs in the app's event loop."""

    def __init__(self, source: FleetSource | FleetRegions) -> None:
        self.source = source

    @property
    def store(self) -> Store:
        return self.source.store

    @property
    def groups(self) -> GroupIndex:
        return self.source.groups

    @property
    def version(self) -> int:
        return self.source.version

    async def start(self) -> None:
        await self.source.start()
        self.source.run_in_background()

    async def stop(self) -> None:
        await self.source.stop()

    def set_live_tail(self, on: bool) -> None:
        self.source.set_live_tail(on)

    def fleet_state(self) -> FleetState:
        source = self.source
        health = source.health()
        return FleetState(
            state=health.status,
            log_groups=tuple(source.log_groups),
            last_good_epoch=health.last_good,
            requests_per_hour=source.requests_per_hour(),
            live_tail=source.live_tail,
            live_tail_open=source.tail_open,
            live_tail_minutes=source.live_tail_minutes(),
            rejected=sum(source.rejected.values()),
            message=health.message if health.status != "ok" else source.live_tail_note,
        )


def live_extras(
    session: Session,
    cloudwatch: CloudWatchRegions | CloudWatchSource | None,
    apps_cloudwatch: AppMetricsSource | None = None,
    quotas: ServiceQuotasRegions | ServiceQuotasSource | None = None,
    billing: Any = None,
    fleet: FleetSource | FleetRegions | None = None,
) -> ScreenExtras:
    """The screen's optional inputs for this session. Quotas are shown when Service Quotas is
    read or the configuration sets limits by hand; ``billing`` is a LiveBilling, when on."""
    from monitor.live_quotas import LiveQuotas

    def cost(model_id: str, tally: Tally) -> float | None:
        # Read at each call: prices learned from a new bill replace the session's book.
        return session.price_book.cost_usd(model_id, tally)

    return ScreenExtras(
        cost=cost,
        budgets=LiveBudgets(session) if session.config.budgets else None,
        cloudwatch=None if cloudwatch is None else LiveCloudWatch(cloudwatch),
        quotas=LiveQuotas(session, quotas) if quotas is not None or session.config.quotas else None,
        billing=billing,
        notices=list(session.config.warnings),
        apps_cloudwatch=None if apps_cloudwatch is None else LiveAppMetrics(apps_cloudwatch),
        fleet=None if fleet is None else LiveFleet(fleet),
    )

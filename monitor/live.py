"""What the live screen reads besides the log store, built from a session: prices, budgets (with
their threshold alarms) and the CloudWatch poller. No Textual import: the screen only calls these
objects, so each part stays testable without a terminal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from monitor.budgets import BudgetStatus as BudgetFigures
from monitor.budgets import ThresholdEvent, ThresholdTracker, run_on_threshold
from monitor.cloudwatch_store import INVOCATIONS, LATENCY, SUM, TTFT
from monitor.formatting import format_count, format_usd
from monitor.groups import GroupIndex
from monitor.session import Session
from monitor.sources.app_metrics import RATE_WINDOW_S as APP_RATE_WINDOW_S
from monitor.sources.app_metrics import AppMetricsSource
from monitor.sources.cloudwatch import CloudWatchSource
from monitor.sources.fleet import FleetSource
from monitor.sources.service_quotas import ServiceQuotasSource
from monitor.store import Store, Tally
from monitor.ui.hooks import (
    AppRate,
    BudgetAlarm,
    BudgetLimit,
    BudgetStatus,
    CloudWatchState,
    FleetState,
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
    """The CloudWatch poller as the screen sees it. Runs in the app's event loop."""

    def __init__(self, source: CloudWatchSource) -> None:
        self.source = source

    @property
    def version(self) -> int:
        return self.source.store.version

    async def start(self) -> None:
        await self.source.start()
        self.source.run_in_background()

    async def stop(self) -> None:
        await self.source.stop()

    def set_paused(self, paused: bool) -> None:
        self.source.set_paused(paused)

    def set_visible_models(self, model_ids: Sequence[str] | None) -> None:
        self.source.set_visible_models(model_ids)

    def set_focus_model(self, model_id: str | None) -> None:
        self.source.set_focus_model(model_id)

    def cloudwatch_state(self) -> CloudWatchState:
        state = self.source.state
        message = state.message if state.status != "ok" else ""
        if state.percentiles == "fallback":
            message = (message + "; " if message else "") + "no percentiles: avg/max"
        return CloudWatchState(
            region=state.region or "no region",
            state=state.status,
            last_good_epoch=state.last_good_poll,
            cost_per_hour_usd=state.projected_cost_per_hour_usd,
            message=message,
        )

    def account_model_ids(self) -> Sequence[str]:
        return self.source.store.model_ids()

    def account_minute_series(
        self, model_id: str, metric: str, now: float, points: int
    ) -> list[float | None]:
        end = (int(now) // 60 + 1) * 60
        stat = AVERAGE if metric in (LATENCY, TTFT) else SUM
        return self.source.store.minute_series(model_id, metric, stat, end - points * 60, end)

    def account_requests_per_min(self, model_id: str, now: float) -> float | None:
        newest = self.source.store.newest_minute(model_id)
        if newest is None:
            return None
        return self.source.store.value(model_id, INVOCATIONS, SUM, newest)


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

    def __init__(self, source: FleetSource) -> None:
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
    cloudwatch: CloudWatchSource | None,
    apps_cloudwatch: AppMetricsSource | None = None,
    quotas: ServiceQuotasSource | None = None,
    billing: Any = None,
    fleet: FleetSource | None = None,
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

"""What the live screen reads besides the log store: prices, budgets and CloudWatch.

Each is optional. The screen asks these objects for plain values at each refresh and never writes
to them, so the sources that fill them (the pricing table, the budget tracker, the CloudWatch
poller) stay independent of Textual. No Textual import here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol, runtime_checkable

from monitor.groups import GroupIndex
from monitor.quotas import ModelQuotas
from monitor.store import Store, Tally

# USD for a model's tally, or None when the model has no known price (shown as "unpriced").
CostFunction = Callable[[str, Tally], float | None]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget as the screen shows it (filled from the budget tracker at each refresh)."""

    name: str
    period: str  # day | week | month
    fraction: float  # used / limit
    used_text: str  # e.g. "$3.20" or "1.2M tok"
    limit_text: str
    source: str = "local"  # local | cloudwatch
    projected_fraction: float | None = None
    exhausts_at: float | None = None  # epoch seconds, when inside the period
    warn_at: Sequence[float] = (0.5, 0.8, 1.0)
    models: tuple[str, ...] | None = None  # model ids or globs; None: applies to every model

    def applies_to(self, model_id: str) -> bool:
        return self.models is None or any(fnmatchcase(model_id, p) for p in self.models)

    @property
    def level(self) -> int:
        """How many warn thresholds are crossed (0: fine)."""
        return sum(1 for threshold in self.warn_at if self.fraction >= threshold)


@dataclass(frozen=True, slots=True)
class BudgetAlarm:
    """A budget crossed a ``warn_at`` threshold for the first time in its period."""

    budget: str
    message: str
    final: bool  # the limit itself (threshold >= 1) was reached


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """A budget's limit as the edit dialog shows it."""

    name: str
    unit: str  # usd | tokens
    limit: float


class BudgetView(Protocol):
    """Budgets for the screen: all of them, evaluated at ``now``; the alarms raised since the
    last evaluation; and the limits, which the edit dialog changes and saves."""

    def budget_statuses(self, now: float) -> Sequence[BudgetStatus]: ...

    def crossed(self) -> Sequence[BudgetAlarm]: ...

    def limits(self) -> Sequence[BudgetLimit]: ...

    def save_limit(self, name: str, value: float) -> str:
        """Save and reload; returns the file written. Raises ValueError or OSError."""
        ...


@dataclass(frozen=True, slots=True)
class CloudWatchState:
    """The CloudWatch source as the header shows it."""

    region: str
    state: str  # e.g. "ok", "stale", "no credentials", "starting"
    last_good_epoch: float | None = None
    cost_per_hour_usd: float | None = None
    message: str = ""


class CloudWatchView(Protocol):
    """Account-wide per-minute data. ``version`` changes whenever anything shown changes.
    ``start``/``stop`` run the poller in the app's event loop; the ``set_*`` calls tell it what
    the screen shows, so that it slows down when nothing is looked at."""

    @property
    def version(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_paused(self, paused: bool) -> None: ...

    def set_visible_models(self, model_ids: Sequence[str] | None) -> None: ...

    def set_focus_model(self, model_id: str | None) -> None: ...

    def cloudwatch_state(self) -> CloudWatchState: ...

    def account_model_ids(self) -> Sequence[str]: ...

    def account_minute_series(
        self, model_id: str, metric: str, now: float, points: int
    ) -> list[float | None]:
        """One value per minute, oldest first, None where CloudWatch has no datapoint.
        ``metric`` is a CloudWatch metric name: Invocations, InputTokenCount, OutputTokenCount,
        InvocationLatency, InvocationThrottles, ..."""
        ...

    def account_requests_per_min(self, model_id: str, now: float) -> float | None:
        """Invocations in the newest complete minute CloudWatch has, or None."""
        ...


@dataclass(frozen=True, slots=True)
class AppRate:
    """One app's account-wide rates from the ``BedrockTop`` namespace (the wrapper's EMF)."""

    app: str
    requests_per_min: float
    input_tokens_per_min: float
    output_tokens_per_min: float
    errors: int
    throttles: int
    models: int
    latency_avg_ms: float | None = None


class AppMetricsView(Protocol):
    """Per-app rates, account-wide (every host that ships the wrapper's EMF), minutes late.
    ``version`` changes whenever anything shown changes."""

    @property
    def version(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def app_rates(self) -> Sequence[AppRate]:
        """Busiest first, over the last minutes CloudWatch has."""
        ...

    def apps_state(self) -> CloudWatchState: ...


@dataclass(frozen=True, slots=True)
class QuotaAlarm:
    """A quota measure crossed 80% or 100% of its limit."""

    message: str
    final: bool  # the limit itself was reached


class QuotaView(Protocol):
    """Quotas for the screen: each model's use against its limits at ``now`` (evaluated every
    few seconds), the crossings since the last call, the source's state, and the reservation
    hint of a model's recent calls. ``start``/``stop`` run the source in the app's loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def model_quotas(self, now: float) -> Mapping[str, ModelQuotas]: ...

    def crossed(self) -> Sequence[QuotaAlarm]: ...

    def state_text(self) -> str:
        """One short phrase for the header: "ok", "access denied", ..."""
        ...

    def reservation_hint(self, model_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class BillingState:
    """The billing source as the header shows it."""

    state: str  # ok, starting, access-denied, no-credentials, stale, ...
    message: str = ""
    cache_age_s: float | None = None  # age of the bill shown (None: no bill yet)
    cost_per_day_usd: float = 0.0  # what refreshing it costs a day


@dataclass(frozen=True, slots=True)
class BillingLine:
    """One model (or the unmatched usage types) in the billing panel: billed beside estimated
    for the same days. An estimate of None is unpriced or not available."""

    name: str  # a model id, or "unmatched"
    billed_usd: float
    local_usd: float | None = None
    cloudwatch_usd: float | None = None


@dataclass(frozen=True, slots=True)
class BillingPanelData:
    """The bill beside the estimates for the same days (never added to them)."""

    month_to_date_usd: float
    through: str | None  # ISO date of the last day with data
    first_day: str
    lines: Sequence[BillingLine]
    local_usd: float | None  # the log's estimate for the same days (this host)
    cloudwatch_usd: float | None  # CloudWatch's (account and region), None: not available
    unmatched_usage_types: int = 0
    estimated: bool = False  # Cost Explorer still marks some of these days as estimated
    learned_models: int = 0  # models priced from the bill


class BillingView(Protocol):
    """The month-to-date bill. ``version`` changes whenever anything shown changes; ``start`` and
    ``stop`` run the (rare) refresh in the app's event loop."""

    @property
    def version(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def billing_state(self) -> BillingState: ...

    def billing_panel(self, now: float) -> BillingPanelData | None: ...


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet source (CloudWatch Logs) as the header shows it."""

    state: str
    log_groups: tuple[str, ...] = ()
    last_good_epoch: float | None = None
    requests_per_hour: float = 0.0
    live_tail: bool = False
    live_tail_open: bool = False
    live_tail_minutes: float = 0.0
    rejected: int = 0
    message: str = ""


class FleetView(Protocol):
    """Every caller's records from CloudWatch Logs, in a store and group index of their own
    (never added to the local log's). ``start``/``stop`` run the poller in the app's loop."""

    @property
    def store(self) -> Store: ...

    @property
    def groups(self) -> GroupIndex: ...

    @property
    def version(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_live_tail(self, on: bool) -> None: ...

    def fleet_state(self) -> FleetState: ...


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One row of the overview grouped by region or account: account-wide figures only (the
    usage log's records are counted per model)."""

    name: str
    requests_per_min: float | None  # AWS/Bedrock, newest minute of each model, added up
    models: int
    mantle_requests_per_min: float | None = None


@runtime_checkable
class RegionsView(Protocol):
    """What a CloudWatch view with several regions (and bedrock-mantle rows) adds: each
    region's state for the header, the regions a model's traffic was seen in, and the
    `AWS/BedrockMantle` models, whose figures are never added to AWS/Bedrock's."""

    @property
    def multi_region(self) -> bool: ...

    def region_states(self) -> Sequence[CloudWatchState]: ...

    def model_regions(self, model_id: str, mantle: bool = False) -> Sequence[str]: ...

    def mantle_model_ids(self) -> Sequence[str]: ...

    def mantle_requests_per_min(self, model_id: str, now: float) -> float | None: ...

    def group_keys(self) -> Sequence[str]:
        """The keys other than ``model`` the overview can group by: region, account."""
        ...

    def group_figures(self, key: str, now: float) -> Sequence[GroupFigures]: ...


def regions_view(view: CloudWatchView | None) -> RegionsView | None:
    """The view's regional side, when it has one."""
    return view if isinstance(view, RegionsView) else None


@dataclass
class ScreenExtras:
    """Optional inputs of the live screen; each absent part hides its columns and panels."""

    cost: CostFunction | None = None
    budgets: BudgetView | None = None
    cloudwatch: CloudWatchView | None = None
    fleet: FleetView | None = None
    quotas: QuotaView | None = None
    billing: BillingView | None = None
    notices: list[str] = field(default_factory=list)  # shown once at start (e.g. config warnings)
    apps_cloudwatch: AppMetricsView | None = None  # per-app rates from the BedrockTop namespace


def tightest_budget(statuses: Sequence[BudgetStatus], model_id: str | None) -> BudgetStatus | None:
    """The budget closest to its limit among those that apply (``None``: overall budgets)."""
    candidates = [
        status
        for status in statuses
        if (status.models is None if model_id is None else status.applies_to(model_id))
    ]
    return max(candidates, key=lambda status: status.fraction, default=None)

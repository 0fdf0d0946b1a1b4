"""Budget periods, usage against limits, burn rates and forecasts.

Everything here except :func:`run_on_threshold` is pure: no I/O and no clock reads; ``now`` is
always passed in. A budget's window is computed from timestamps (the calendar day, week or month
that contains ``now`` in the configured timezone), never from counters that must be reset.

Forecast (documented in ``docs/configuration.md``): the burn rate is the budget's usage over the
last hour divided by 3600 s; the projection assumes it continues until the period ends::

    projected_used     = used + burn_rate_1h * (period_end - now)
    projected_fraction = projected_used / limit
    exhausts_at        = now + (limit - used) / burn_rate_1h   if that is before period_end

The last-15-minute rate is reported beside it to show whether the burn is speeding up.

A budget with ``source = "billing"`` counts what Cost Explorer billed for the days of its period
that the bill covers (up to the last complete day with data), plus the estimate since then (and
for any part of the period before the bill's first day) from CloudWatch when it is on, else the
local log; its burn rate and forecast come from that estimate, since the bill is hours late.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo

from monitor.pricing import PriceBook
from monitor.store import Tally

Period = Literal["day", "week", "month"]
BudgetSource = Literal["local", "cloudwatch", "auto", "billing"]
UsageSource = Literal["local", "cloudwatch", "billing"]
PERIODS: Final[tuple[str, ...]] = ("day", "week", "month")
BUDGET_SOURCES: Final[tuple[str, ...]] = ("local", "cloudwatch", "auto", "billing")
DEFAULT_WARN_AT: Final[tuple[float, ...]] = (0.5, 0.8, 1.0)
BURN_WINDOW_SHORT_S: Final = 15 * 60
BURN_WINDOW_LONG_S: Final = 60 * 60

UsageFn = Callable[[str, float, float], Tally]
"""``usage(model_id, start_epoch, end_epoch)``: the model's tally over ``[start, end)``."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One ``[[budgets]]`` entry of the configuration."""

    name: str
    period: Period
    limit_usd: float | None = None
    limit_tokens: int | None = None  # input + output tokens
    models: tuple[str, ...] | None = None  # globs on the model id as given; None: all models
    source: BudgetSource = "auto"
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT

    def __post_init__(self) -> None:
        if (self.limit_usd is None) == (self.limit_tokens is None):
            raise ValueError(f"budget {self.name!r}: give exactly one of limit_usd, limit_tokens")
        if not self.limit > 0:
            raise ValueError(f"budget {self.name!r}: the limit must be positive")
        if self.period not in PERIODS:
            raise ValueError(f"budget {self.name!r}: unknown period {self.period!r}")

    @property
    def limit(self) -> float:
        """The limit in the budget's own unit (USD or tokens)."""
        if self.limit_usd is not None:
            return float(self.limit_usd)
        assert self.limit_tokens is not None
        return float(self.limit_tokens)

    @property
    def unit(self) -> Literal["usd", "tokens"]:
        return "usd" if self.limit_usd is not None else "tokens"

    def applies_to(self, model_id: str) -> bool:
        if self.models is None:
            return True
        return any(fnmatchcase(model_id, pattern) for pattern in self.models)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget, evaluated at one moment."""

    spec: BudgetSpec
    source: UsageSource  # where the usage came from
    now: float
    period_start: float  # epoch seconds
    period_end: float
    period_start_iso: str  # in the configured timezone, with its offset
    period_end_iso: str
    used_usd: float  # priced usage only; see unpriced_tokens
    used_tokens: int  # input + output
    unpriced_tokens: int  # tokens of models (or cache kinds) without a price
    fraction: float  # used / limit, in the budget's unit
    burn_per_h_15m: float  # budget unit per hour over the last 15 minutes
    burn_per_h_1h: float  # budget unit per hour over the last hour
    projected_fraction: float
    exhausts_at: float | None  # epoch seconds, only when inside the period and still ahead
    exhausts_at_iso: str | None
    warn_level: float | None  # highest warn_at threshold reached, or None
    # Billing budgets only: the billed part, the estimated rest, and where the estimate came from.
    billed_usd: float | None = None
    billed_tokens: int | None = None
    estimated_usd: float | None = None
    billed_through: str | None = None  # ISO date of the last billed day counted
    estimate_source: Literal["local", "cloudwatch"] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def period(self) -> Period:
        return self.spec.period

    @property
    def limit_usd(self) -> float | None:
        return self.spec.limit_usd

    @property
    def limit_tokens(self) -> int | None:
        return self.spec.limit_tokens

    @property
    def used(self) -> float:
        """Usage in the budget's own unit."""
        return self.used_usd if self.spec.unit == "usd" else float(self.used_tokens)


def as_zone(tz: tzinfo | str) -> tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _local_midnight(day: date, tz: tzinfo) -> float:
    # fold=0: where midnight falls into a DST gap, this is the instant the clocks jump (the first
    # instant of the day); where it happens twice, the first occurrence.
    return datetime(day.year, day.month, day.day, tzinfo=tz, fold=0).timestamp()


def period_bounds(period: Period, now_epoch: float, tz: tzinfo | str) -> tuple[float, float]:
    """``[start, end)`` in epoch seconds of the calendar day, week (from Monday) or month that
    contains ``now_epoch`` in ``tz``. A day is 23 or 25 hours long across a DST change."""
    zone = as_zone(tz)
    # Whole seconds: fromtimestamp rounds to microseconds, which could carry 23:59:59.9999999
    # into the next day; every period boundary is a whole second.
    today = datetime.fromtimestamp(math.floor(now_epoch), zone).date()
    if period == "day":
        first, after = today, today + timedelta(days=1)
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        after = first + timedelta(days=7)
    elif period == "month":
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}: expected one of {', '.join(PERIODS)}")
    return _local_midnight(first, zone), _local_midnight(after, zone)


def iso_in(epoch: float, tz: tzinfo | str) -> str:
    """ISO-8601 with the zone's offset, to the second: ``2026-03-29T00:00:00+01:00``."""
    return datetime.fromtimestamp(round(epoch), as_zone(tz)).isoformat()


def resolve_source(spec: BudgetSpec, cloudwatch_enabled: bool) -> Literal["local", "cloudwatch"]:
    """``auto`` means CloudWatch when it is enabled, else the local log (and so does the
    estimate part of a ``billing`` budget)."""
    if spec.source in ("auto", "billing"):
        return "cloudwatch" if cloudwatch_enabled else "local"
    return "cloudwatch" if spec.source == "cloudwatch" else "local"


@dataclass(frozen=True, slots=True)
class BilledSpend:
    """The bill as budgets read it: per UTC day (its start, epoch seconds), per model id (None:
    usage types matched to no model), the billed USD and input + output tokens."""

    days: Mapping[float, Mapping[str | None, tuple[float, float]]]
    start: float  # 00:00 UTC of the first day the bill covers (with data or not)
    through_end: float | None  # end of the last billed day counted (the last complete one)
    through: str | None  # that day, ISO date

    def between(self, spec: BudgetSpec, start: float, end: float) -> tuple[float, int]:
        """Billed (USD, tokens) of the days inside [start, end) for the budget's models.
        Unmatched usage counts only for budgets over every model."""
        usd = 0.0
        tokens = 0.0
        for day_start, models in self.days.items():
            if not start <= day_start < end:
                continue
            for model_id, (day_usd, day_tokens) in models.items():
                if model_id is None and spec.models is not None:
                    continue
                if model_id is not None and not spec.applies_to(model_id):
                    continue
                usd += day_usd
                tokens += day_tokens
        return usd, round(tokens)


def evaluate_billing(
    spec: BudgetSpec,
    now: float,
    billed: BilledSpend,
    estimate_models: Iterable[str],
    estimate_usage: UsageFn,
    price_book: PriceBook,
    *,
    tz: tzinfo | str = "UTC",
    estimate_source: Literal["local", "cloudwatch"] = "local",
) -> BudgetStatus:
    """Billed spend for the period's days the bill covers (through its last complete day), plus
    the estimate for the rest of the period up to ``now``. Forecasts use the estimate's rates."""
    zone = as_zone(tz)
    start, end = period_bounds(spec.period, now, zone)
    models = [m for m in dict.fromkeys(estimate_models) if spec.applies_to(m)]
    billed_usd, billed_tokens = 0.0, 0
    estimate_windows = [(start, end)]
    counted = False
    if billed.through_end is not None:
        # Whole UTC days of the bill inside the period: from the first day boundary at or after
        # the later of the two starts (a period in another timezone starts inside a UTC day).
        later = max(start, billed.start)
        first = billed.start + math.ceil((later - billed.start) / 86400) * 86400
        last_end = min(billed.through_end, now)
        if last_end > first:
            counted = True
            billed_usd, billed_tokens = billed.between(spec, first, last_end)
            estimate_windows = [(start, first), (last_end, max(last_end, now))]
    est_usd, est_tokens, unpriced = 0.0, 0, 0
    for window_start, window_end in estimate_windows:
        if window_end > window_start:
            usd, tokens, missing = _measure(
                models, estimate_usage, price_book, window_start, window_end
            )
            est_usd, est_tokens, unpriced = est_usd + usd, est_tokens + tokens, unpriced + missing
    status = _forecast(
        spec,
        now,
        zone,
        models,
        estimate_usage,
        price_book,
        (start, end),
        billed_usd + est_usd,
        billed_tokens + est_tokens,
        unpriced,
        "billing",
    )
    return replace(
        status,
        billed_usd=billed_usd,
        billed_tokens=billed_tokens,
        estimated_usd=est_usd,
        billed_through=billed.through if counted else None,
        estimate_source=estimate_source,
    )


def _measure(
    model_ids: Sequence[str],
    usage: UsageFn,
    price_book: PriceBook,
    start: float,
    end: float,
) -> tuple[float, int, int]:
    """(priced USD, input+output tokens, unpriced tokens) over ``[start, end)``."""
    used_usd = 0.0
    used_tokens = 0
    unpriced = 0
    for model_id in model_ids:
        tally = usage(model_id, start, end)
        used_tokens += tally.input_tokens + tally.output_tokens
        cost = price_book.cost_usd(model_id, tally)
        if cost is None:
            unpriced += tally.total_tokens
        else:
            used_usd += cost
    return used_usd, used_tokens, unpriced


def warn_level(spec: BudgetSpec, fraction: float) -> float | None:
    reached = [level for level in spec.warn_at if fraction >= level]
    return max(reached) if reached else None


def evaluate(
    spec: BudgetSpec,
    now: float,
    model_ids: Iterable[str],
    usage: UsageFn,
    price_book: PriceBook,
    *,
    tz: tzinfo | str = "UTC",
    source: Literal["local", "cloudwatch"] | None = None,
) -> BudgetStatus:
    """Evaluate ``spec`` at ``now`` over the models it applies to among ``model_ids``.

    ``usage`` must be the chosen source's (see :func:`resolve_source`); ``source`` names it in
    the status (default: the spec's source, with ``auto`` read as ``local``).
    """
    zone = as_zone(tz)
    start, end = period_bounds(spec.period, now, zone)
    models = [model_id for model_id in dict.fromkeys(model_ids) if spec.applies_to(model_id)]
    used_usd, used_tokens, unpriced = _measure(models, usage, price_book, start, end)
    named: UsageSource = source or ("cloudwatch" if spec.source == "cloudwatch" else "local")
    return _forecast(
        spec,
        now,
        zone,
        models,
        usage,
        price_book,
        (start, end),
        used_usd,
        used_tokens,
        unpriced,
        named,
    )


def _forecast(
    spec: BudgetSpec,
    now: float,
    zone: tzinfo,
    models: Sequence[str],
    usage: UsageFn,
    price_book: PriceBook,
    bounds: tuple[float, float],
    used_usd: float,
    used_tokens: int,
    unpriced: int,
    source: UsageSource,
) -> BudgetStatus:
    """The status from the period's usage; burn rates from ``usage`` over the last hour."""
    start, end = bounds
    usd_15m, tokens_15m, _ = _measure(models, usage, price_book, now - BURN_WINDOW_SHORT_S, now)
    usd_1h, tokens_1h, _ = _measure(models, usage, price_book, now - BURN_WINDOW_LONG_S, now)

    if spec.unit == "usd":
        used, short, long = used_usd, usd_15m, usd_1h
    else:
        used, short, long = float(used_tokens), float(tokens_15m), float(tokens_1h)
    limit = spec.limit
    rate_per_s = long / BURN_WINDOW_LONG_S
    remaining_s = max(0.0, end - now)
    fraction = used / limit
    projected_fraction = (used + rate_per_s * remaining_s) / limit

    exhausts_at: float | None = None
    if used < limit and rate_per_s > 0:
        moment = now + (limit - used) / rate_per_s
        if moment < end:
            exhausts_at = moment

    return BudgetStatus(
        spec=spec,
        source=source,
        now=now,
        period_start=start,
        period_end=end,
        period_start_iso=iso_in(start, zone),
        period_end_iso=iso_in(end, zone),
        used_usd=used_usd,
        used_tokens=used_tokens,
        unpriced_tokens=unpriced,
        fraction=fraction,
        burn_per_h_15m=short * 3600 / BURN_WINDOW_SHORT_S,
        burn_per_h_1h=long,
        projected_fraction=projected_fraction,
        exhausts_at=exhausts_at,
        exhausts_at_iso=None if exhausts_at is None else iso_in(exhausts_at, zone),
        warn_level=warn_level(spec, fraction),
    )


def evaluate_all(
    specs: Iterable[BudgetSpec],
    now: float,
    price_book: PriceBook,
    *,
    tz: tzinfo | str,
    local_models: Iterable[str],
    local_usage: UsageFn,
    cloudwatch_models: Iterable[str] = (),
    cloudwatch_usage: UsageFn | None = None,
    billed: BilledSpend | None = None,
) -> list[BudgetStatus]:
    """Evaluate every budget against its source: the local log, or CloudWatch when
    ``cloudwatch_usage`` is given (CloudWatch is on) and the budget asks for it or for ``auto``,
    or the bill (``billed``) plus that estimate since the bill's last day.

    A budget whose source is ``cloudwatch`` while CloudWatch is off, or ``billing`` while the
    billing source is off, is left out: its usage is unknown, and the log's local numbers are
    not a stand-in for account-wide ones.
    """
    zone = as_zone(tz)
    local = list(local_models)
    remote = list(cloudwatch_models)
    statuses: list[BudgetStatus] = []
    for spec in specs:
        if spec.source == "billing":
            if billed is None:
                continue
            on_cloud = cloudwatch_usage is not None
            statuses.append(
                evaluate_billing(
                    spec,
                    now,
                    billed,
                    remote if on_cloud else local,
                    cloudwatch_usage if cloudwatch_usage is not None else local_usage,
                    price_book,
                    tz=zone,
                    estimate_source="cloudwatch" if on_cloud else "local",
                )
            )
            continue
        source = resolve_source(spec, cloudwatch_enabled=cloudwatch_usage is not None)
        if source == "cloudwatch":
            if cloudwatch_usage is None:
                continue
            statuses.append(
                evaluate(spec, now, remote, cloudwatch_usage, price_book, tz=zone, source=source)
            )
        else:
            statuses.append(
                evaluate(spec, now, local, local_usage, price_book, tz=zone, source=source)
            )
    return statuses


def _tightness(status: BudgetStatus) -> tuple[float, float]:
    return status.fraction, status.projected_fraction


def tightest_budget(statuses: Iterable[BudgetStatus], model_id: str) -> BudgetStatus | None:
    """Of the budgets that apply to ``model_id``, the most used (then the most projected)."""
    applicable = [status for status in statuses if status.spec.applies_to(model_id)]
    return max(applicable, key=_tightness, default=None)


def overall_budget(statuses: Iterable[BudgetStatus]) -> BudgetStatus | None:
    """The budget for the totals strip: the tightest of those covering all models, else the
    tightest of all."""
    statuses = list(statuses)
    covering_all = [status for status in statuses if status.spec.models is None]
    return max(covering_all or statuses, key=_tightness, default=None)


def budget_report(statuses: Iterable[BudgetStatus]) -> list[dict[str, Any]]:
    """The report's ``budgets`` list. ``limit_usd`` and ``limit_tokens`` are both present; the
    one the budget does not use is null."""
    return [
        {
            "name": status.name,
            "period": status.period,
            "period_start": status.period_start_iso,
            "period_end": status.period_end_iso,
            "source": status.source,
            "models": None if status.spec.models is None else list(status.spec.models),
            "limit_usd": status.limit_usd,
            "limit_tokens": status.limit_tokens,
            "used_usd": round(status.used_usd, 6),
            "used_tokens": status.used_tokens,
            "unpriced_tokens": status.unpriced_tokens,
            "fraction": round(status.fraction, 6),
            "projected_fraction": round(status.projected_fraction, 6),
            "exhausts_at": status.exhausts_at_iso,
            "burn_per_h_15m": round(status.burn_per_h_15m, 6),
            "burn_per_h_1h": round(status.burn_per_h_1h, 6),
            "warn_level": status.warn_level,
            **_billing_fields(status),
        }
        for status in statuses
    ]


def _billing_fields(status: BudgetStatus) -> dict[str, Any]:
    """A billing budget's parts: billed through a day, and the labelled estimate since."""
    if status.source != "billing":
        return {}
    return {
        "billed_usd": None if status.billed_usd is None else round(status.billed_usd, 6),
        "billed_tokens": status.billed_tokens,
        "billed_through": status.billed_through,
        "estimated_usd": None if status.estimated_usd is None else round(status.estimated_usd, 6),
        "estimate_source": status.estimate_source,
    }


@dataclass(frozen=True, slots=True)
class ThresholdEvent:
    """A budget crossed one of its ``warn_at`` levels for the first time in its period."""

    budget: str
    threshold: float
    fraction: float
    period: Period
    period_start_iso: str
    used_usd: float
    used_tokens: int
    limit_usd: float | None
    limit_tokens: int | None

    def environment(self) -> dict[str, str]:
        """The variables given to the ``on_threshold`` command."""
        return {
            "BEDROCK_TOP_BUDGET": self.budget,
            "BEDROCK_TOP_THRESHOLD": f"{self.threshold:g}",
            "BEDROCK_TOP_FRACTION": f"{self.fraction:.4f}",
            "BEDROCK_TOP_PERIOD": self.period,
            "BEDROCK_TOP_PERIOD_START": self.period_start_iso,
            "BEDROCK_TOP_USED_USD": f"{self.used_usd:.4f}",
            "BEDROCK_TOP_USED_TOKENS": str(self.used_tokens),
            "BEDROCK_TOP_LIMIT_USD": "" if self.limit_usd is None else f"{self.limit_usd:g}",
            "BEDROCK_TOP_LIMIT_TOKENS": "" if self.limit_tokens is None else str(self.limit_tokens),
        }


class AlarmEvent(Protocol):
    """What ``on_threshold`` is run for: a budget's or a quota's crossing."""

    def environment(self) -> dict[str, str]: ...


@dataclass
class LevelTracker:
    """Which warn levels have fired, per name, until its ``reset_key`` changes: the one memory
    behind every alarm (budgets and quotas), so that each level rings once.

    With ``rearm``, a level that the fraction falls back under may fire again on the next
    crossing (quota usage per minute rises and falls); without it a level fires once until the
    key changes (a budget period).
    """

    _fired: dict[str, tuple[object, set[float]]] = field(default_factory=dict)

    def crossed(
        self,
        name: str,
        reset_key: object,
        levels: Iterable[float],
        fraction: float,
        *,
        rearm: bool = False,
    ) -> float | None:
        """The highest level newly crossed, or None. Several at once give one (one bell)."""
        state = self._fired.get(name)
        if state is None or state[0] != reset_key:
            state = (reset_key, set())
            self._fired[name] = state
        fired = state[1]
        if rearm:
            fired.difference_update({level for level in fired if fraction < level})
        crossed = [level for level in levels if fraction >= level and level not in fired]
        if not crossed:
            return None
        fired.update(crossed)
        return max(crossed)


@dataclass
class ThresholdTracker:
    """Turns successive statuses into threshold events, once per threshold per period.

    The state of a budget is keyed by its period start and limit: a new period, or a limit
    edited from the screen, starts afresh. When one update crosses several levels, a single
    event is returned for the highest, so the bell rings once.
    """

    levels: LevelTracker = field(default_factory=LevelTracker)

    def update(self, statuses: Iterable[BudgetStatus]) -> list[ThresholdEvent]:
        events: list[ThresholdEvent] = []
        for status in statuses:
            key = (status.period_start, status.spec.limit)
            threshold = self.levels.crossed(status.name, key, status.spec.warn_at, status.fraction)
            if threshold is None:
                continue
            events.append(
                ThresholdEvent(
                    budget=status.name,
                    threshold=threshold,
                    fraction=status.fraction,
                    period=status.period,
                    period_start_iso=status.period_start_iso,
                    used_usd=status.used_usd,
                    used_tokens=status.used_tokens,
                    limit_usd=status.limit_usd,
                    limit_tokens=status.limit_tokens,
                )
            )
        return events


def run_on_threshold(
    argv: Sequence[str],
    event: AlarmEvent,
    *,
    base_env: Mapping[str, str] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> subprocess.Popen[bytes] | None:
    """Start the user's ``on_threshold`` command for ``event`` and return at once.

    The command gets the event in ``BEDROCK_TOP_*`` environment variables, no stdin, and its
    output discarded (it must not draw over the screen). It runs in its own session so that a
    Ctrl-C meant for the monitor does not reach it. Never raises: a failure to start is logged
    and passed to ``on_error``; the caller never waits for the process.
    """
    env = dict(os.environ if base_env is None else base_env)
    env.update(event.environment())
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except Exception as err:  # OSError, SubprocessError, or an empty or non-string argv
        message = f"on_threshold command {list(argv)!r} failed to start: {err}"
        _log.warning(message)
        if on_error is not None:
            try:
                on_error(message)
            except Exception:  # the caller's handler must not break the caller either
                _log.exception("on_error handler raised")
        return None

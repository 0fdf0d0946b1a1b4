"""The numbers of the overview, computed from the store: plain data, no Textual.

The screen turns these rows into lines; tests and the benchmark can compute them without a
terminal. Every number here is local (the usage log of this host); account-wide CloudWatch values
live in their own columns and are never added to these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.formatting import format_count, format_ms, format_usd
from monitor.groups import GroupIndex
from monitor.quotas import ModelQuotas
from monitor.store import (
    CLIENT_ERRORS,
    INPUT,
    OUTPUT,
    REQUESTS,
    SERVER_ERRORS,
    THROTTLES,
    LatencySketch,
    Percentiles,
    Rates,
    Store,
    Tally,
)
from monitor.ui.hooks import (
    BudgetStatus,
    GroupFigures,
    ScreenExtras,
    regions_view,
    tightest_budget,
)

RATE_WINDOW_S = 60  # req/min and tokens/s
LATENCY_WINDOW_S = 300  # p50/p99 and the error and throttle counts
SPEND_WINDOW_S = 3600
SPARK_POINTS = 12  # minutes in the latency sparkline
SPARK_BARS = "▁▂▃▄▅▆▇█"
GAUGE_CELLS = 8


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``drop``: higher numbers leave first when the terminal is narrow."""

    key: str
    label: str
    width: int
    align: str = "right"
    drop: int = 0
    sortable: bool = True
    account: bool = False  # an account-wide (CloudWatch) column


MODEL = Column("model", "model", 14, align="left", drop=0)
BASE_COLUMNS: tuple[Column, ...] = (
    MODEL,
    Column("req", "req/m", 6, drop=1),
    Column("in", "in tok/s", 8, drop=7),
    Column("out", "out tok/s", 9, drop=2),
    Column("p50", "p50", 6, drop=8),
    Column("p99", "p99", 6, drop=3),
    Column("err", "err 5m", 6, drop=4),
    Column("thr", "thr 5m", 6, drop=9),
)
SPEND = Column("spend", "spend 1h", 9, drop=5)
BUDGET = Column("budget", "budget", GAUGE_CELLS + 5, align="left", drop=6)
QUOTA = Column("quota", "quota", GAUGE_CELLS + 6, align="left", drop=6)  # gauge and "~"
ACCOUNT_REQ = Column("acct_req", "acct req/m", 10, drop=10, account=True)
# Shown when several regions are polled: where the model's account-wide traffic was seen.
REGION = Column("region", "regions", 20, align="left", drop=12, sortable=False, account=True)
MANTLE_MARK = "mantle"
# Groupings only CloudWatch can make (offered when several regions are polled, or linked
# accounts are read): their rows carry account-wide figures alone.
CLOUDWATCH_GROUPINGS = ("region", "account")
TREND = Column("trend", "p50 trend", SPARK_POINTS, align="left", drop=11, sortable=False)


def columns_for(extras: ScreenExtras) -> list[Column]:
    """The columns that have something to show with these inputs."""
    columns = list(BASE_COLUMNS)
    if extras.cost is not None:
        columns.append(SPEND)
    if extras.budgets is not None:
        columns.append(BUDGET)
    if extras.quotas is not None:
        columns.append(QUOTA)
    if extras.cloudwatch is not None:
        columns.append(ACCOUNT_REQ)
        regional = regions_view(extras.cloudwatch)
        if regional is not None and regional.multi_region:
            columns.append(REGION)
    columns.append(TREND)
    return columns


def fit_columns(columns: Sequence[Column], width: int, model_max: int = 48) -> list[Column]:
    """Drop columns (highest ``drop`` first) until they fit ``width``; the model column takes
    what is left, up to ``model_max``."""
    kept = list(columns)

    def needed(cols: list[Column]) -> int:
        return sum(col.width for col in cols) + len(cols) - 1

    while needed(kept) > width and len(kept) > 1:
        kept.remove(max(kept[1:], key=lambda col: col.drop))
    spare = max(0, width - needed(kept))
    model = kept[0]
    return [
        Column(model.key, model.label, min(model_max, model.width + spare), model.align),
        *kept[1:],
    ]


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    style: str = ""  # "", dim, warn, error, spark, ok, account, gauge-ok, gauge-warn, gauge-error


@dataclass(frozen=True, slots=True)
class ModelRow:
    model_id: str
    cells: dict[str, Cell]
    sort_values: dict[str, float | str]
    spend: float | None = None  # USD over SPEND_WINDOW_S; None when unpriced or no prices
    unpriced: bool = False  # had tokens in SPEND_WINDOW_S but no known price
    local: bool = True  # the usage log has calls of this model (else only CloudWatch knows it)
    endpoint: str = "runtime"  # runtime (AWS/Bedrock and the log) | mantle (AWS/BedrockMantle)

    @property
    def key(self) -> str:
        """Unique per row: a model can have a bedrock-runtime row and a bedrock-mantle row."""
        return self.model_id if self.endpoint == "runtime" else f"{self.endpoint}:{self.model_id}"


@dataclass(frozen=True, slots=True)
class Totals:
    requests_per_min: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    throttles: int
    models: int
    spend_hour: float | None  # None: no prices, or some model unpriced
    unpriced_models: int
    budget: BudgetStatus | None


def sparkline(values: Sequence[float | None]) -> str:
    """One cell per value, scaled between the smallest and largest known value; gaps blank."""
    known = [value for value in values if value is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    top = len(SPARK_BARS) - 1
    chars = []
    for value in values:
        if value is None:
            chars.append(" ")
        elif span <= 0:
            chars.append(SPARK_BARS[top // 2])
        else:
            chars.append(SPARK_BARS[round((value - low) / span * top)])
    return "".join(chars)


def gauge(fraction: float, cells: int = GAUGE_CELLS) -> str:
    """A bar of ``cells`` characters with eighth-block resolution, then the percentage."""
    clamped = min(max(fraction, 0.0), 1.0)
    eighths = round(clamped * cells * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return f"{bar:<{cells}} {min(fraction, 9.99) * 100:3.0f}%"


def budget_cell(status: BudgetStatus | None) -> Cell:
    if status is None:
        return Cell("", "dim")
    style = ("gauge-ok", "gauge-ok", "gauge-warn", "gauge-error")[min(status.level, 3)]
    return Cell(gauge(status.fraction), style)


def quota_cell(quotas: ModelQuotas | None) -> Cell:
    """The tightest of a model's tokens/requests per minute and tokens per day, as a gauge
    coloured at 50/80/100%; ``~`` marks a local estimate."""
    use = None if quotas is None else quotas.tightest
    if use is None:
        return Cell("-", "dim")
    # Quotas warn earlier than budgets: at 80% calls are about to be throttled.
    style = ("gauge-ok", "gauge-warn", "gauge-error", "gauge-error")[min(use.level, 3)]
    estimate = "~" if use.source == "local-estimate" else ""
    return Cell(gauge(use.fraction) + estimate, style)


def _rate(value: float) -> str:
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return format_count(round(value))


class SparkCache:
    """Per-model figures that cost more than a few lookups, kept until the store says they can
    have moved (``Store.change_mark``, ``Store.settled_mark``) or their window turns: the
    5-minute percentiles and the current minute of the sparkline (the model changed, or the
    minute turned), the completed minutes of the sparkline and of the spend hour (a late
    record changed one, or the minute turned). Nothing is recomputed on a timer, so nothing
    shown is older than the last refresh."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[tuple[int, int], list[float | None]]] = {}
        self._latest: dict[str, tuple[tuple[int, int, int], Percentiles, list[float | None]]] = {}
        self._hour: dict[str, tuple[tuple[int, int], Tally]] = {}
        self._window_done: dict[str, tuple[tuple[int, int, int], LatencySketch, float]] = {}
        self._total: tuple[tuple[int, int], Percentiles] | None = None

    def values(self, store: Store, model_id: str, now: float) -> list[float | None]:
        return [*self._completed(store, model_id, now), *self._current(store, model_id, now)[1]]

    def latency(self, store: Store, model_id: str, now: float) -> Percentiles:
        return self._current(store, model_id, now)[0]

    def total_latency(self, store: Store, now: float) -> Percentiles:
        """Every model's latency over the window, on the same schedule as the rows'."""
        key = (int(now) // 60, store.version)
        cached = self._total
        if cached is None or cached[0] != key:
            cached = self._total = (key, store.latency(None, now, LATENCY_WINDOW_S))
        return cached[1]

    def hour_tally(self, store: Store, model_id: str, now: float) -> Tally:
        """``store.tally_between(model_id, now - SPEND_WINDOW_S, now)``: the completed minutes
        summed once per minute, the current one added at each call. Within a day, as the
        spend hour always is, tally_between reads the minute tier."""
        current = math.ceil(now / 60) - 1  # the last minute tally_between includes
        key = (current, store.settled_mark(model_id))
        cached = self._hour.get(model_id)
        if cached is None or cached[0] != key:
            done = store.tally_between(model_id, now - SPEND_WINDOW_S, current * 60)
            cached = self._hour[model_id] = (key, done)
        return cached[1] + store.minute_tally(model_id, current)

    def forget(self, model_ids: set[str]) -> None:
        """Drop what was kept for models that are no longer shown."""
        for cache in (self._done, self._latest, self._hour, self._window_done):
            for model_id in [m for m in cache if m not in model_ids]:
                del cache[model_id]

    def _completed(self, store: Store, model_id: str, now: float) -> list[float | None]:
        key = (int(now) // 60, store.settled_mark(model_id))
        cached = self._done.get(model_id)
        if cached is None or cached[0] != key:
            done = store.minute_quantiles(model_id, now - 60, 0.5, SPARK_POINTS - 1)
            self._done[model_id] = cached = (key, done)
        return cached[1]

    def _current(
        self, store: Store, model_id: str, now: float
    ) -> tuple[Percentiles, list[float | None]]:
        """``store.latency`` over the window and the current minute's p50, from the window's
        completed minutes (merged once per minute, or when a late record changes one) and the
        current minute (merged when the model changed)."""
        minute = int(now) // 60
        # The window's first minute moves when now - window crosses a minute edge, which is
        # not when the current minute turns.
        first = math.ceil((now - LATENCY_WINDOW_S) / 60)
        key = (first, minute, store.change_mark(model_id)[0])
        cached = self._latest.get(model_id)
        if cached is None or cached[0] != key:
            done_key = (first, minute, store.settled_mark(model_id))
            done = self._window_done.get(model_id)
            if done is None or done[0] != done_key:
                done = (done_key, *store.minute_sketch(model_id, first, minute - 1))
                self._window_done[model_id] = done
            current, current_ms = store.minute_sketch(model_id, minute, minute)
            window = LatencySketch()
            window.merge(done[1])
            window.merge(current)
            latency = window.percentiles(done[2] + current_ms)
            cached = (key, latency, [current.quantile(0.5)])
            self._latest[model_id] = cached
        return cached[1], cached[2]


def model_row(
    store: Store,
    model_id: str,
    now: float,
    extras: ScreenExtras,
    sparks: SparkCache,
    budgets: Sequence[BudgetStatus] = (),
    quotas: Mapping[str, ModelQuotas] | None = None,
) -> ModelRow:
    rates = window_rates(store, model_id, now)
    latency = sparks.latency(store, model_id, now)
    errors, throttles = recent_failures(store, model_id, now)
    cells, sort_values = _usage_columns(
        model_id, rates, latency, errors, throttles, sparks.values(store, model_id, now)
    )
    spend: float | None = None
    unpriced = False
    if extras.cost is not None:
        hour = sparks.hour_tally(store, model_id, now)
        spend = extras.cost(model_id, hour)
        unpriced = spend is None and hour.total_tokens > 0
        cells["spend"] = Cell(format_usd(spend), "dim" if spend is None else "")
        sort_values["spend"] = -1.0 if spend is None else spend
    if extras.budgets is not None:
        status = tightest_budget(budgets, model_id)
        cells["budget"] = budget_cell(status)
        sort_values["budget"] = -1.0 if status is None else status.fraction
    if extras.quotas is not None:
        entry = (quotas or {}).get(model_id)
        cells["quota"] = quota_cell(entry)
        tightest = None if entry is None else entry.tightest
        sort_values["quota"] = -1.0 if tightest is None else tightest.fraction
    if extras.cloudwatch is not None:
        account = extras.cloudwatch.account_requests_per_min(model_id, now)
        cells["acct_req"] = Cell("-" if account is None else _rate(account), "account")
        sort_values["acct_req"] = -1.0 if account is None else account
        regional = regions_view(extras.cloudwatch)
        if regional is not None and regional.multi_region:
            cells["region"] = region_cell(regional.model_regions(model_id))
    return ModelRow(model_id, cells, sort_values, spend, unpriced, model_id in store)


def _usage_columns(
    name: str,
    rates: Rates,
    latency: Percentiles,
    errors: int,
    throttles: int,
    trend: Sequence[float | None],
) -> tuple[dict[str, Cell], dict[str, float | str]]:
    """The cells and sort values every usage row has (a model's, an app's, a caller's)."""
    cells = {
        "model": Cell(name),
        "req": Cell(_rate(rates.requests_per_min), "" if rates.requests_per_min else "dim"),
        "in": Cell(_rate(rates.input_tokens_per_s)),
        "out": Cell(_rate(rates.output_tokens_per_s)),
        "p50": Cell(format_ms(latency.p50)),
        "p99": Cell(format_ms(latency.p99)),
        "err": Cell(str(errors), "error" if errors else "dim"),
        "thr": Cell(str(throttles), "warn" if throttles else "dim"),
        "trend": Cell(sparkline(trend), "spark"),
    }
    sort_values: dict[str, float | str] = {
        "model": name,
        "req": rates.requests_per_min,
        "in": rates.input_tokens_per_s,
        "out": rates.output_tokens_per_s,
        "p50": latency.p50 if latency.p50 is not None else -1.0,
        "p99": latency.p99 if latency.p99 is not None else -1.0,
        "err": errors,
        "thr": throttles,
    }
    return cells, sort_values


def group_row(
    index: GroupIndex, dimension: str, name: str, now: float, extras: ScreenExtras
) -> ModelRow:
    """A row of the grouped overview (an app, a caller, ...): the model rows' columns, from the
    group index. ``model_id`` holds the group's name (the row's key)."""
    rates = index.rates(dimension, name, now, RATE_WINDOW_S)
    latency = index.latency(dimension, name, now, LATENCY_WINDOW_S)
    recent = index.failures(dimension, name, now, LATENCY_WINDOW_S)
    errors, throttles = recent.errors, recent.throttles
    trend = index.minute_quantiles(dimension, name, now, 0.5, SPARK_POINTS)
    cells, sort_values = _usage_columns(name, rates, latency, errors, throttles, trend)
    cells["budget"] = Cell("", "dim")
    cells["acct_req"] = Cell("-", "account")
    spend: float | None = None
    unpriced = False
    if extras.cost is not None:
        priced = []
        for model_id, tally in index.model_tallies_between(
            dimension, name, now - SPEND_WINDOW_S, now
        ).items():
            cost = extras.cost(model_id, tally)
            if cost is None:
                unpriced = unpriced or tally.total_tokens > 0
            else:
                priced.append(cost)
        # Some models unpriced: the group's spend is unknown, not the sum of the rest.
        spend = None if unpriced or not priced else sum(priced)
        cells["spend"] = Cell(format_usd(spend), "dim" if spend is None else "")
        sort_values["spend"] = -1.0 if spend is None else spend
    return ModelRow(name, cells, sort_values, spend, unpriced, True)


def region_cell(regions: Sequence[str]) -> Cell:
    text = ",".join(regions)
    if len(text) > REGION.width:
        text = f"{len(regions)} regions"
    return Cell(text or "-", "account" if regions else "dim")


def cloudwatch_group_row(figures: GroupFigures, extras: ScreenExtras) -> ModelRow:
    """A row of the overview grouped by region or account (keys only CloudWatch knows; the
    usage record has no account): account-wide figures only, bedrock-mantle's beside
    AWS/Bedrock's and not added to them. ``model_id`` holds the group's name."""
    blank = Cell("-", "dim")
    cells = {column.key: blank for column in columns_for(extras) if column.key != "model"}
    cells["model"] = Cell(figures.name)
    cells["trend"] = Cell("", "spark")
    calls = figures.requests_per_min
    cells["acct_req"] = Cell("-" if calls is None else _rate(calls), "account")
    mantle = figures.mantle_requests_per_min
    extra = f" +{_rate(mantle)} mantle" if mantle is not None else ""
    cells["region"] = Cell(f"{figures.models} models{extra}", "account")
    sort_values: dict[str, float | str] = {
        "model": figures.name,
        "acct_req": -1.0 if calls is None else calls,
    }
    return ModelRow(figures.name, cells, sort_values, None, False, True)


def mantle_row(model_id: str, now: float, extras: ScreenExtras) -> ModelRow:
    """A bedrock-mantle model: account-wide figures only (the wrapper sees bedrock-runtime
    calls, so the local columns are empty), marked ``mantle``."""
    regional = regions_view(extras.cloudwatch)
    account = regional.mantle_requests_per_min(model_id, now) if regional is not None else None
    blank = Cell("-", "dim")
    cells = {key: blank for key in ("req", "in", "out", "p50", "p99", "err", "thr")}
    cells["model"] = Cell(model_id)  # the table adds the [mantle] mark
    cells["trend"] = Cell("", "spark")
    cells["acct_req"] = Cell("-" if account is None else _rate(account), "account")
    if extras.cost is not None:
        cells["spend"] = blank
    if extras.budgets is not None:
        cells["budget"] = Cell("", "dim")
    if regional is not None and regional.multi_region:
        cells["region"] = region_cell(regional.model_regions(model_id, mantle=True))
    sort_values: dict[str, float | str] = {
        "model": model_id,
        "acct_req": -1.0 if account is None else account,
    }
    return ModelRow(model_id, cells, sort_values, None, False, False, MANTLE_MARK)


def window_rates(store: Store, model_id: str | None, now: float) -> Rates:
    """Requests/min and tokens/s over the last ``RATE_WINDOW_S`` seconds: the same numbers as
    ``Store.rates``, summed from the per-second series (a few dict lookups per second instead of
    merging whole buckets, which matters at twenty models every second)."""
    end = math.ceil(now) - 1  # the buckets Store.rates sums: [now - window, now)
    sums = store.second_sums(model_id, end, (REQUESTS, INPUT, OUTPUT), RATE_WINDOW_S)
    return Rates(
        requests_per_min=sums[0] * 60.0 / RATE_WINDOW_S,
        input_tokens_per_s=sums[1] / RATE_WINDOW_S,
        output_tokens_per_s=sums[2] / RATE_WINDOW_S,
    )


def recent_failures(store: Store, model_id: str | None, now: float) -> tuple[int, int]:
    """Errors and throttles in the last ``LATENCY_WINDOW_S`` (whole minutes, the current one
    included, like the latency percentiles)."""
    client, server, throttles = store.minute_sums(
        model_id, now, (CLIENT_ERRORS, SERVER_ERRORS, THROTTLES), LATENCY_WINDOW_S // 60
    )
    return int(client + server), int(throttles)


def sort_rows(rows: list[ModelRow], key: str, reverse: bool) -> list[ModelRow]:
    """Numbers sort largest first unless ``reverse``; the model id sorts A-Z unless reversed."""
    if key == "model":
        return sorted(rows, key=lambda row: row.model_id, reverse=reverse)
    return sorted(
        rows,
        key=lambda row: (-_number(row.sort_values.get(key, 0.0)), row.model_id),
        reverse=reverse,
    )


def _number(value: float | str) -> float:
    return float(value) if not isinstance(value, str) else 0.0


def totals(
    rows: Sequence[ModelRow],
    latency: Percentiles,
    extras: ScreenExtras,
    budgets: Sequence[BudgetStatus] = (),
) -> Totals:
    """The totals strip, summed from the rows of every model (filtered out or not), so that no
    number is computed twice per refresh."""

    def total(key: str) -> float:
        return sum(float(row.sort_values.get(key, 0.0)) for row in rows)

    spend: float | None = None
    if extras.cost is not None:
        spend = sum(row.spend for row in rows if row.spend is not None)
    requests_per_min, input_tokens_per_s, output_tokens_per_s = (
        total("req"),
        total("in"),
        total("out"),
    )
    errors, throttles = int(total("err")), int(total("thr"))
    unpriced = sum(1 for row in rows if row.unpriced)
    return Totals(
        requests_per_min=requests_per_min,
        input_tokens_per_s=input_tokens_per_s,
        output_tokens_per_s=output_tokens_per_s,
        p50_ms=latency.p50,
        p99_ms=latency.p99,
        errors=errors,
        throttles=throttles,
        models=sum(1 for row in rows if row.local),
        spend_hour=spend,
        unpriced_models=unpriced,
        budget=tightest_budget(budgets, None) if extras.budgets is not None else None,
    )


def format_age(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m``, ``2h``, ``5d``; ``never`` when there was nothing."""
    if seconds is None or math.isnan(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "<1s"  # steady while records keep coming: the header is not repainted for it
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"

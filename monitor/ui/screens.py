"""The overview, the model drill-down and the help screen.

Screens do not poll: the app calls ``refresh_view(now)`` on the screen in front at each refresh
(and ``quick_update(now)`` when records arrive between refreshes). Hidden screens are not asked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input

from monitor.formatting import base_model_id, format_count, format_ms, format_usd, printable
from monitor.quotas import ModelQuotas
from monitor.store import (
    CLIENT_ERRORS,
    INPUT,
    OUTPUT,
    SERVER_ERRORS,
    THROTTLES,
)
from monitor.ui import keys
from monitor.ui.apps_panel import AppsPanel
from monitor.ui.hooks import BudgetStatus, CloudWatchState, FleetState, regions_view
from monitor.ui.overview_model import (
    CLOUDWATCH_GROUPINGS,
    LATENCY_WINDOW_S,
    RATE_WINDOW_S,
    ModelRow,
    SparkCache,
    cloudwatch_group_row,
    columns_for,
    format_age,
    gauge,
    group_row,
    mantle_row,
    model_row,
    recent_failures,
    sort_rows,
    totals,
)
from monitor.ui.widgets import Chart, ModelTable, TextPanel

if TYPE_CHECKING:
    from monitor.ui.app import BedrockTopApp

WINDOWS: tuple[tuple[str, int], ...] = (("5m", 300), ("15m", 900), ("1h", 3600), ("24h", 86400))
RECENT_ROWS = 30
QUANTILE_REFRESH_S = 10.0  # minute-tier latency charts of the long windows


def _shorten_path(path: str, width: int) -> str:
    home = str(Path.home())
    if path.startswith(home):
        path = "~" + path[len(home) :]
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def source_header(app: BedrockTopApp, now: float, width: int) -> Text:
    """The sources line(s): the log, CloudWatch, paused and refresh state."""
    state = app.feed.tailer.state  # read without the copy snapshot() makes: plain fields
    store = app.feed.store
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" bedrock-top ", style="bold reverse")
    if app.paused:
        text.append(" PAUSED ", style="bold reverse")
    text.append(" LOCAL ", style="bold")
    files = list(state.files) or list(state.waiting_for)
    shown = files[0] if files else ", ".join(state.patterns)
    more = f" +{len(files) - 1}" if len(files) > 1 else ""
    # Values that could hold a line break are escaped here; TextPanel escapes everything else.
    text.append(f"log {printable(_shorten_path(str(shown), max(16, width // 3)))}{more}")
    text.append(f" · {format_count(state.records)} records")
    rejected = state.rejected_total
    text.append(f" · {rejected} rejected", style="bold" if rejected else "")
    if state.waiting_for:
        text.append(" · waiting for file")
    if state.errors:
        path, problem = next(iter(state.errors.items()))
        more = f" (+{len(state.errors) - 1} more)" if len(state.errors) > 1 else ""
        shown_path = printable(_shorten_path(path, max(16, width // 4)))
        text.append(f" · cannot read {shown_path}: {printable(problem)}{more}", style="bold")
    progress = app.feed.history_progress()
    if progress is not None:
        text.append(" · " + history_text(*progress), style="bold")
    last = store.last_epoch
    text.append(f" · last {format_age(None if last is None else now - last)}")
    text.append(f" · every {app.interval:g}s")
    cloudwatch = app.extras.cloudwatch
    text.append("\n")
    if cloudwatch is None:
        text.append(" ACCOUNT ", style="bold")
        text.append("CloudWatch off", style="dim")
    elif (regional := regions_view(cloudwatch)) is not None and len(regional.region_states()) > 1:
        append_region_states(text, regional.region_states(), now)
        cw = cloudwatch.cloudwatch_state()
        if cw.cost_per_hour_usd is not None:
            text.append(f" · {format_usd(cw.cost_per_hour_usd)}/h total")
    else:
        cw = cloudwatch.cloudwatch_state()
        text.append(" ACCOUNT ", style="bold")
        text.append(printable(f"CloudWatch {cw.region}: {cw.state}"))
        if cw.last_good_epoch is not None:
            text.append(f" · last poll {format_age(now - cw.last_good_epoch)} ago")
        if cw.cost_per_hour_usd is not None:
            text.append(f" · {format_usd(cw.cost_per_hour_usd)}/h")
        if cw.message:
            text.append(f" · {printable(cw.message)}", style="bold")
    if app.extras.quotas is not None:
        quota_state = app.extras.quotas.state_text()
        text.append(" · quotas ")
        quiet = quota_state in ("ok", "starting")
        text.append(printable(quota_state), style="" if quiet else "bold")
    if app.extras.billing is not None:
        from monitor.ui.billing_panel import billing_header

        billing_header(app.extras.billing.billing_state(), text)
    fleet = app.extras.fleet
    if fleet is not None:
        text.append("\n")
        text.append(fleet_header(fleet.fleet_state(), now, width))
    return text


def fleet_header(state: FleetState, now: float, width: int) -> Text:
    """The fleet source's line: its log groups, state, what it costs (requests per hour, Live
    Tail minutes) and what it rejected."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" FLEET ", style="bold")
    groups = state.log_groups
    shown = _shorten_path(groups[0], max(16, width // 4)) if groups else "no log group"
    more = f" +{len(groups) - 1}" if len(groups) > 1 else ""
    text.append(f"logs {shown}{more}: {state.state}")
    if state.last_good_epoch is not None:
        text.append(f" · last poll {format_age(now - state.last_good_epoch)} ago")
    text.append(f" · {state.requests_per_hour:.0f} req/h")
    if state.live_tail:
        text.append(f" · live tail {state.live_tail_minutes:.1f} min", style="bold")
    else:
        text.append(" · live tail off (l)", style="dim")
    if state.rejected:
        text.append(f" · {state.rejected} rejected", style="bold")
    if state.message:
        text.append(f" · {printable(state.message)}", style="bold")
    return text


def history_text(records: int, bytes_done: int, bytes_total: int) -> str:
    """The history read behind the screen: a gauge, records read, bytes left."""
    fraction = bytes_done / bytes_total if bytes_total else 1.0
    left = max(0, bytes_total - bytes_done)
    return (
        f"history {gauge(fraction)} {format_count(records)} records read, "
        f"{format_count(left / 2**20)} MB left"
    )


def append_region_states(text: Text, states: Sequence[CloudWatchState], now: float) -> None:
    """Each region's state side by side: a fault in one region shows there only."""
    text.append(" ACCOUNT ", style="bold")
    text.append("CloudWatch ")
    for index, state in enumerate(states):
        text.append(printable(f"{' · ' if index else ''}{state.region}: "))
        text.append(printable(state.state), style="" if state.state == "ok" else "bold")
        if state.state != "ok" and state.last_good_epoch is not None:
            text.append(f" {format_age(now - state.last_good_epoch)}")
    problems = [f"{s.region}: {s.message}" for s in states if s.message and s.state != "ok"]
    if problems:
        text.append(f" · {printable(problems[0])}", style="bold")


class OverviewScreen(Screen[None]):
    """Every model, one row each, with totals above."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("overview")  # type: ignore[assignment]
    AUTO_FOCUS = "ModelTable"

    def __init__(self) -> None:
        super().__init__(id="overview")
        self.filter_text = ""
        # One per source: the same model id has different latencies in the local log and the
        # fleet's invocation logs.
        self._spark_caches = {"local": SparkCache(), "fleet": SparkCache()}
        self._shown_key: tuple[object, ...] | None = None
        # (source, model id) -> the key its row was computed for, and the row.
        self._rows: dict[tuple[str, str], tuple[tuple[object, ...], ModelRow]] = {}
        self._known_models: set[str] = set()
        self._visible: list[str] | None = None

    @property
    def bt(self) -> BedrockTopApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield TextPanel(id="sources")
        yield TextPanel(id="totals")
        if self.bt.extras.apps_cloudwatch is not None:
            yield AppsPanel(id="apps")
        if self.bt.extras.billing is not None:
            yield TextPanel(id="billing")
        yield ModelTable(columns_for(self.bt.extras), id="models")
        # No blinking cursor: nothing on screen moves unless the data does.
        field = Input(placeholder="filter models (enter: keep, esc: clear)", id="filter")
        field.cursor_blink = False
        yield field
        yield Footer()

    @property
    def table(self) -> ModelTable:
        return self.query_one(ModelTable)

    @property
    def _sparks(self) -> SparkCache:
        return self._spark_caches[self.bt.view_source]

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.table.set_sort(self.bt.sort_key, self.bt.sort_reverse)

    def on_screen_resume(self) -> None:
        self._shown_key = None
        self.refresh_view(self.bt.now())

    # -- refresh ------------------------------------------------------------------------------
    def quick_update(self, now: float) -> None:
        """Between refreshes: a new model gets its row at once; the rest waits for the tick."""
        if not self._known_models.issuperset(self.bt.feed.store.model_ids()):
            self.refresh_view(now)

    def refresh_view(self, now: float) -> None:
        app = self.bt
        store = app.view_store()
        groups = app.view_groups()
        dimension = app.group_by
        budgets: Sequence[BudgetStatus] = app.budget_statuses(now)
        quotas = app.quota_statuses(now)
        # Rates over the last minute slide every second while any model had a call in it;
        # after that every figure shown moves only when the minute turns (or the data does).
        last = store.last_epoch
        active = last is not None and last >= now - RATE_WINDOW_S - 1
        key = (
            store.version,
            groups.version,
            int(now) if active else _minute_edges(now),
            tuple(budgets),
            dict(quotas),
            self.filter_text,
            app.sort_key,
            app.sort_reverse,
            app.extras_version(),
            self.size.width,
            app.view_source,
            dimension,
        )
        self.query_one("#sources", TextPanel).show(source_header(app, now, self.size.width))
        if key == self._shown_key:
            return
        self._shown_key = key
        model_ids = store.model_ids()
        self._known_models = set(app.feed.store.model_ids())
        cloudwatch = app.extras.cloudwatch
        self.table.set_key_label(dimension)
        self.table.set_account_only(dimension in CLOUDWATCH_GROUPINGS)
        regional = regions_view(cloudwatch)
        if dimension in CLOUDWATCH_GROUPINGS:
            # Regions and accounts are CloudWatch's keys (the usage record has no account).
            figures = regional.group_figures(dimension, now) if regional is not None else []
            model_ids = [group.name for group in figures]
            every = [cloudwatch_group_row(group, app.extras) for group in figures]
        elif dimension != "model":
            model_ids = groups.group_names(dimension)
            every = [group_row(groups, dimension, n, now, app.extras) for n in model_ids]
        else:
            if cloudwatch is not None:
                # Models that only CloudWatch knows (other hosts, no wrapper here) get rows too.
                model_ids = sorted(set(model_ids).union(cloudwatch.account_model_ids()))
            every = [self._row(m, now, budgets, quotas) for m in model_ids]
            source = app.view_source
            cached = [m for s, m in self._rows if s == source]
            if len(cached) > len(model_ids):
                present = set(model_ids)
                self._rows = {
                    k: v for k, v in self._rows.items() if k[0] != source or k[1] in present
                }
                self._sparks.forget(present)
            if regional is not None:
                # bedrock-mantle traffic: rows of their own, never merged into AWS/Bedrock's.
                every += [self._mantle_row(m, now) for m in regional.mantle_model_ids()]
        needle = self.filter_text.lower()
        rows = sort_rows(
            [row for row in every if needle in row.model_id.lower()],
            app.sort_key,
            app.sort_reverse,
        )
        if cloudwatch is not None and dimension == "model":
            shown = [row.model_id for row in rows]
            if shown != self._visible:
                self._visible = shown
                cloudwatch.set_visible_models(shown)
        with app.batch_update():
            self.query_one("#totals", TextPanel).show(self._totals_text(now, every, budgets))
            if app.extras.apps_cloudwatch is not None:
                panel = self.query_one("#apps", AppsPanel)
                panel.update_from(app.extras.apps_cloudwatch, self.size.width)
            if app.extras.billing is not None:
                from monitor.ui.billing_panel import billing_text

                billing = app.extras.billing
                self.query_one("#billing", TextPanel).show(
                    billing_text(
                        billing.billing_panel(now), billing.billing_state(), self.size.width
                    )
                )
            table = self.table
            table.empty_text = (
                f"no model matches '{self.filter_text}'"
                if self.filter_text and model_ids
                else "waiting for records…"
            )
            table.set_rows(rows)

    def _row(
        self,
        model_id: str,
        now: float,
        budgets: Sequence[BudgetStatus],
        quotas: Mapping[str, ModelQuotas],
    ) -> ModelRow:
        """A model's row, computed again only when its figures can have moved: its data
        changed, the minute turned, or (while it had a call in the last minute) the second
        did. With hundreds of quiet models, a refresh costs what the busy ones cost."""
        app = self.bt
        store = app.view_store()
        version, newest = store.change_mark(model_id)
        key = (
            version,
            int(now) if newest >= now - RATE_WINDOW_S - 1 else _minute_edges(now),
            tuple(budgets),
            quotas.get(model_id),
            app.extras_version(),
        )
        cached = self._rows.get((app.view_source, model_id))
        if cached is not None and cached[0] == key:
            return cached[1]
        row = model_row(store, model_id, now, app.extras, self._sparks, budgets, quotas)
        self._rows[(app.view_source, model_id)] = (key, row)
        return row

    def _mantle_row(self, model_id: str, now: float) -> ModelRow:
        """A bedrock-mantle row, computed again only when CloudWatch's data changed (its
        figures are CloudWatch's alone: no second moves them)."""
        app = self.bt
        key: tuple[object, ...] = (app.extras_version(),)
        cached = self._rows.get(("mantle", model_id))
        if cached is not None and cached[0] == key:
            return cached[1]
        row = mantle_row(model_id, now, app.extras)
        self._rows[("mantle", model_id)] = (key, row)
        return row

    def _totals_text(
        self, now: float, rows: Sequence[ModelRow], budgets: Sequence[BudgetStatus]
    ) -> Text:
        app = self.bt
        latency = self._sparks.total_latency(app.view_store(), now)
        summary = totals(rows, latency, app.extras, budgets)
        rates = Text(no_wrap=True, overflow="ellipsis")
        rates.append(f" {app.view_source.upper()} ", style="bold")
        if app.view_source == "local" and app.feed.history is not None:
            rates.append("PARTIAL (history loading) ", style="bold reverse")
        rates.append(f"{summary.models} {app.group_by}s · ")
        rates.append(f"{_num(summary.requests_per_min)} req/min · ")
        rates.append(f"in {_num(summary.input_tokens_per_s)} tok/s · ")
        rates.append(f"out {_num(summary.output_tokens_per_s)} tok/s")
        figures = Text(no_wrap=True, overflow="ellipsis")
        figures.append(f"p50 {format_ms(summary.p50_ms)} p99 {format_ms(summary.p99_ms)} · ")
        figures.append(f"err {summary.errors}", style="bold" if summary.errors else "")
        figures.append(f" thr {summary.throttles} (5m)", style="bold" if summary.throttles else "")
        if app.extras.cost is not None:
            spend = format_usd(summary.spend_hour)
            figures.append(f" · spend 1h {spend}")
            if summary.unpriced_models:
                figures.append(f" ({summary.unpriced_models} unpriced)")
        if summary.budget is not None:
            budget = summary.budget
            figures.append(f" · {printable(budget.name)} {gauge(budget.fraction)}")
        if app.view_source == "fleet":
            legend = Text(
                " fleet = every caller's invocation logs in CloudWatch Logs, seconds late "
                "(f: local)",
                style="dim",
            )
        else:
            legend = Text(
                " local = this host's usage log, real time (rates over 1m, latency over 5m)",
                style="dim",
            )
        if app.extras.cloudwatch is not None:
            legend.append(" · acct = CloudWatch, all callers, per minute, minutes late")
        if len(rates) + 3 + len(figures) <= self.size.width:
            return Text.assemble(rates, " · ", figures, "\n", legend, no_wrap=True)
        # Too narrow for one line (80 columns): the figures take the legend's line, since
        # latency, errors and spend matter more than what the columns mean.
        return Text.assemble(rates, "\n ", figures, no_wrap=True, overflow="ellipsis")

    # -- actions ------------------------------------------------------------------------------
    def on_model_table_opened(self, message: ModelTable.Opened) -> None:
        self.bt.open_row(message.model_id, message.endpoint)

    def action_open_model(self) -> None:
        row = self.table.cursor_row
        if row is not None:
            self.bt.open_row(row.model_id, row.endpoint)

    def action_group_next(self) -> None:
        self.bt.group_next()

    def action_next_source(self) -> None:
        self.bt.next_source()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.value = self.filter_text
        field.focus()

    def on_input_changed(self, message: Input.Changed) -> None:
        self.filter_text = message.value.strip()
        self.refresh_view(self.bt.now())

    def on_input_submitted(self, message: Input.Submitted) -> None:
        field = self.query_one("#filter", Input)
        field.display = bool(self.filter_text)
        self.table.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.display = False
        self.filter_text = ""
        self.table.focus()
        self.refresh_view(self.bt.now())

    def on_key(self, event: object) -> None:
        # Escape inside the filter field clears it (the field would otherwise swallow it).
        key = getattr(event, "key", "")
        if key == "escape" and self.focused is self.query_one("#filter", Input):
            self.action_clear_filter()
            getattr(event, "stop")()  # noqa: B009

    def _sortable(self) -> list[str]:
        return [column.key for column in self.table.columns if column.sortable]

    def _sort_step(self, step: int) -> None:
        keys_ = self._sortable()
        app = self.bt
        index = keys_.index(app.sort_key) if app.sort_key in keys_ else 0
        app.sort_key = keys_[(index + step) % len(keys_)]
        self.table.set_sort(app.sort_key, app.sort_reverse)
        self.refresh_view(app.now())

    def action_sort_next(self) -> None:
        self._sort_step(1)

    def action_sort_previous(self) -> None:
        self._sort_step(-1)

    def action_reverse(self) -> None:
        app = self.bt
        app.sort_reverse = not app.sort_reverse
        self.table.set_sort(app.sort_key, app.sort_reverse)
        self.refresh_view(app.now())


def _minute_edges(now: float) -> tuple[int, int]:
    """What the per-minute figures depend on: the minute ``now`` is in, and the first minute
    a window ending at ``now`` reaches (one more when ``now`` is exactly on an edge)."""
    return int(now) // 60, math.ceil(now / 60)


def _num(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.1f}" if value < 10 else format_count(round(value))


class ModelScreen(Screen[None]):
    """One model: charts over a window, recent requests, CloudWatch and budgets."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("model")  # type: ignore[assignment]

    def __init__(self, model_id: str) -> None:
        super().__init__(id="model")
        self.model_id = model_id
        self._shown_key: tuple[object, ...] | None = None
        self._recent_shown: tuple[str, ...] = ()
        self._quantiles: dict[tuple[str, int, float, bool], tuple[float, list[float | None]]] = {}

    @property
    def bt(self) -> BedrockTopApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield TextPanel(id="model-title")
        with VerticalScroll(id="model-body"):
            with Grid(id="charts"):
                yield Chart("input tok/s", id="chart-in")
                yield Chart("output tok/s", id="chart-out")
                yield Chart("latency p50", id="chart-p50")
                yield Chart("latency p99", id="chart-p99")
                yield Chart("TTFT p50", id="chart-ttft")
                yield Chart("errors + throttles", id="chart-errors")
            with Vertical(id="panels"):
                yield TextPanel(id="cache", classes="panel")
                yield TextPanel(id="cloudwatch", classes="panel")
                yield TextPanel(id="quota", classes="panel")
                yield TextPanel(id="budgets", classes="panel")
            yield DataTable(id="recent", cursor_type="row", zebra_stripes=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#recent", DataTable)
        for label in (
            "time",
            "operation",
            "in",
            "out",
            "cache r/w",
            "latency",
            "TTFT",
            "status",
            "app",
        ):
            table.add_column(label, key=label)

    def on_screen_resume(self) -> None:
        self._shown_key = None
        self.refresh_view(self.bt.now())

    def quick_update(self, now: float) -> None:
        """Nothing between refreshes: the charts move at the refresh interval."""

    def show_model(self, model_id: str) -> None:
        self.model_id = model_id
        self._shown_key = None
        self._recent_shown = ()
        self.refresh_view(self.bt.now())

    def refresh_view(self, now: float) -> None:
        app = self.bt
        store = app.view_store()
        label, window = WINDOWS[app.window_index]
        key = (store.version, int(now), self.model_id, window, app.extras_version(), self.size)
        if key == self._shown_key:
            return
        self._shown_key = key
        with app.batch_update():
            self._title(now, label)
            self._charts(now, window)
            self._cache(now, window, label)
            self._cloudwatch(now, window)
            self._quota(now)
            self._budgets(now)
            self._recent()

    def _title(self, now: float, label: str) -> None:
        store = self.bt.view_store()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" MODEL ", style="bold reverse")
        text.append(f" {printable(self.model_id)}", style="bold")
        base = base_model_id(self.model_id)
        if base != self.model_id:
            text.append(f"  (base model {printable(base)})")
        rates = store.rates(self.model_id, now, RATE_WINDOW_S)
        latency = store.latency(self.model_id, now, LATENCY_WINDOW_S)
        text.append(f"\n {self.bt.view_source.upper()} ", style="bold")
        if self.bt.view_source == "local" and self.bt.feed.history is not None:
            text.append("PARTIAL (history loading) ", style="bold reverse")
        text.append(
            f"{_num(rates.requests_per_min)} req/min · in {_num(rates.input_tokens_per_s)} tok/s"
            f" · out {_num(rates.output_tokens_per_s)} tok/s · p50 {format_ms(latency.p50)}"
            f" · p99 {format_ms(latency.p99)} · window {label} (w)"
        )
        if self.bt.paused:
            text.append("  PAUSED", style="bold reverse")
        self.query_one("#model-title", TextPanel).show(text)

    def _series(self, now: float, window: int, index: int | tuple[int, ...]) -> list[float | None]:
        """Per-second values for windows up to 15 minutes, else per-minute values divided by 60
        (so both read as a rate per second)."""
        store = self.bt.view_store()
        indices = index if isinstance(index, tuple) else (index,)
        if window <= 900:
            parts = [store.second_series(self.model_id, now, i, window) for i in indices]
            scale = 1.0
        else:
            parts = [store.minute_series(self.model_id, now, i, window // 60) for i in indices]
            scale = 1 / 60
        return [sum(values) * scale for values in zip(*parts, strict=True)]

    def _quantile_series(
        self, now: float, window: int, q: float, ttft: bool = False
    ) -> list[float | None]:
        points = max(1, window // 60)
        key = (self.model_id, window, q, ttft)
        cached = self._quantiles.get(key)
        # Long windows are a quantile per minute for up to 1440 minutes: recomputed every few
        # seconds, not at every refresh.
        if cached is not None and points > 60 and now - cached[0] < QUANTILE_REFRESH_S:
            return cached[1]
        values = self.bt.view_store().minute_quantiles(self.model_id, now, q, points, ttft=ttft)
        self._quantiles[key] = (now, values)
        return values

    def _charts(self, now: float, window: int) -> None:
        def summary(values: Sequence[float | None], fmt: str = "rate") -> str:
            known = [v for v in values if v is not None]
            if not known:
                return "no data"
            last = next((v for v in reversed(values) if v is not None), None)
            peak = max(known)
            if fmt == "ms":
                return f"last {format_ms(last)} · max {format_ms(peak)}"
            return f"avg {_num(sum(known) / len(values))} · max {_num(peak)}"

        tokens_in = self._series(now, window, INPUT)
        tokens_out = self._series(now, window, OUTPUT)
        self.query_one("#chart-in", Chart).show(tokens_in, summary(tokens_in))
        self.query_one("#chart-out", Chart).show(tokens_out, summary(tokens_out))
        for chart_id, q, ttft in (
            ("#chart-p50", 0.5, False),
            ("#chart-p99", 0.99, False),
            ("#chart-ttft", 0.5, True),
        ):
            values = self._quantile_series(now, window, q, ttft)
            self.query_one(chart_id, Chart).show(values, summary(values, "ms"))
        failures = self._series(now, window, (CLIENT_ERRORS, SERVER_ERRORS, THROTTLES))
        tally = self.bt.view_store().tally_between(self.model_id, now - window, now)
        self.query_one("#chart-errors", Chart).show(
            failures,
            f"err {tally.errors} · thr {tally.throttles} in window",
        )

    def _cache(self, now: float, window: int, label: str) -> None:
        tally = self.bt.view_store().tally_between(self.model_id, now - window, now)
        total_input = (
            tally.input_tokens + tally.cache_read_input_tokens + tally.cache_write_input_tokens
        )
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"Prompt cache ({label}, local)\n", style="bold")
        if total_input == 0:
            text.append("no input tokens in this window", style="dim")
        else:
            read = tally.cache_read_input_tokens / total_input
            write = tally.cache_write_input_tokens / total_input
            text.append(f"read  {gauge(read)}  {format_count(tally.cache_read_input_tokens)} tok\n")
            text.append(
                f"write {gauge(write)}  {format_count(tally.cache_write_input_tokens)} tok\n"
            )
            text.append(f"of {format_count(total_input)} input tokens")
            if tally.estimated:
                text.append(f" · {tally.estimated} estimated", style="bold")
        self.query_one("#cache", TextPanel).show(text)

    def _cloudwatch(self, now: float, window: int) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("CloudWatch (account-wide, per minute)\n", style="bold")
        cloudwatch = self.bt.extras.cloudwatch
        if cloudwatch is None:
            text.append("CloudWatch is off", style="dim")
        else:
            points = max(5, min(window // 60, 60))
            for metric, name in (
                ("Invocations", "calls/min"),
                ("InputTokenCount", "in tok/min"),
                ("OutputTokenCount", "out tok/min"),
            ):
                series = cloudwatch.account_minute_series(self.model_id, metric, now, points)
                known = [v for v in series if v is not None]
                last = format_count(known[-1]) if known else "-"
                from monitor.ui.overview_model import sparkline

                text.append(f"{name:<12} {sparkline(series[-30:])} {last}\n")
            state = cloudwatch.cloudwatch_state()
            text.append(f"{state.region}: {state.state}", style="dim")
        self.query_one("#cloudwatch", TextPanel).show(text)

    def _quota(self, now: float) -> None:
        panel = self.query_one("#quota", TextPanel)
        view = self.bt.extras.quotas
        panel.display = view is not None
        if view is None:
            return
        text = Text(no_wrap=False, overflow="fold")
        text.append(f"Quotas (Service Quotas: {view.state_text()})\n", style="bold")
        entry = view.model_quotas(now).get(self.model_id)
        uses = [] if entry is None else [u for u in entry.uses.values() if u is not None]
        if not uses:
            text.append(
                "no quota matched this model (set one with [quotas] in the configuration)\n",
                style="dim",
            )
        for use in uses:
            limit = use.limit
            estimate = "~" if use.source == "local-estimate" else ""
            used = f"today {format_count(use.used_today or 0)}" if limit.measure == "tpd" else ""
            line = (
                f"{limit.measure} {limit.quota_code or 'config'} limit {format_count(limit.limit)}"
                f" · last min {estimate}{format_count(use.used_last_minute)}"
                f" · peak 5m {estimate}{format_count(use.used_peak_5m)}"
                + (f" · {used}" if used else "")
                + f" {gauge(use.fraction)} {use.source}\n"
            )
            style = ("", "", "bold", "bold reverse")[min(use.level, 3)]
            text.append(line, style=style)
        _errors, throttles = recent_failures(self.bt.feed.store, self.model_id, now)
        account = ""
        cloudwatch = self.bt.extras.cloudwatch
        if cloudwatch is not None:
            series = cloudwatch.account_minute_series(self.model_id, "InvocationThrottles", now, 5)
            account = f" · account {format_count(sum(v for v in series if v is not None))}"
        text.append(f"throttles 5m: local {throttles}{account}\n")
        text.append(view.reservation_hint(self.model_id), style="dim")
        panel.show(text)

    def _budgets(self, now: float) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("Budgets\n", style="bold")
        if self.bt.extras.budgets is None:
            text.append("no budgets configured", style="dim")
        else:
            statuses = [s for s in self.bt.budget_statuses(now) if s.applies_to(self.model_id)]
            if not statuses:
                text.append("no budget applies to this model", style="dim")
            for status in statuses:
                line = (
                    f"{status.name} ({status.period}, {status.source}) {gauge(status.fraction)}"
                    f" {status.used_text}/{status.limit_text}"
                )
                if status.projected_fraction is not None:
                    line += f" · projected {status.projected_fraction * 100:.0f}%"
                if status.exhausts_at is not None:
                    runs_out = time.strftime("%a %H:%M", time.localtime(status.exhausts_at))
                    line += f" · runs out {runs_out}"
                style = ("", "", "bold", "bold reverse")[min(status.level, 3)]
                text.append(printable(line) + "\n", style=style)
        self.query_one("#budgets", TextPanel).show(text)

    def _recent(self) -> None:
        records = self.bt.view_store().recent_requests(self.model_id, RECENT_ROWS)
        ids = tuple(record.request_id for record in records)
        if ids == self._recent_shown:
            return
        self._recent_shown = ids
        table = self.query_one("#recent", DataTable)
        table.clear()
        for record in records:
            cache = (
                f"{format_count(record.cache_read_input_tokens)}/{format_count(record.cache_write_input_tokens)}"
                if record.cache_read_input_tokens or record.cache_write_input_tokens
                else "-"
            )
            status = (
                record.status
                if record.error_code is None
                else f"{record.status} {record.error_code}"
            )
            cells = (
                record.ts.strftime("%H:%M:%S"),
                record.operation,
                format_count(record.input_tokens)
                + ("~" if record.token_source == "estimate" else ""),
                format_count(record.output_tokens),
                cache,
                format_ms(record.latency_ms),
                format_ms(record.ttft_ms),
                status,
                record.app or "",
            )
            # Text, not str: a DataTable reads a str cell as markup.
            table.add_row(*(Text(printable(cell)) for cell in cells))

    # -- actions ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.bt.pop_to_overview(self.model_id)

    def action_step(self, delta: int) -> None:
        self.bt.step_model(delta)

    def action_next_window(self) -> None:
        app = self.bt
        app.window_index = (app.window_index + 1) % len(WINDOWS)
        self.refresh_view(app.now())


class GroupScreen(Screen[None]):
    """One app or caller: its totals and rates, and the models it used."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("model")[:1]  # type: ignore[assignment]

    def __init__(self, dimension: str, name: str) -> None:
        super().__init__(id="group")
        self.dimension = dimension
        self.group_name = name
        self._shown_key: tuple[object, ...] | None = None

    @property
    def bt(self) -> BedrockTopApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield TextPanel(id="group-title")
        with VerticalScroll(id="group-body"):
            yield TextPanel(id="group-models", classes="panel")
        yield Footer()

    def on_screen_resume(self) -> None:
        self._shown_key = None
        self.refresh_view(self.bt.now())

    def quick_update(self, now: float) -> None:
        """Nothing between refreshes."""

    def refresh_view(self, now: float) -> None:
        app = self.bt
        groups = app.view_groups()
        key = (groups.version, int(now), self.size)
        if key == self._shown_key:
            return
        self._shown_key = key
        source = app.view_source.upper()
        rates = groups.rates(self.dimension, self.group_name, now, RATE_WINDOW_S)
        latency = groups.latency(self.dimension, self.group_name, now, LATENCY_WINDOW_S)
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(f" {self.dimension.upper()} ", style="bold reverse")
        title.append(f" {self.group_name}", style="bold")
        title.append(f"\n {source} ", style="bold")
        title.append(
            f"{_num(rates.requests_per_min)} req/min · in {_num(rates.input_tokens_per_s)} tok/s"
            f" · out {_num(rates.output_tokens_per_s)} tok/s · p50 {format_ms(latency.p50)}"
            f" · p99 {format_ms(latency.p99)}"
        )
        self.query_one("#group-title", TextPanel).show(title)
        cost = app.extras.cost
        body = Text(no_wrap=True, overflow="ellipsis")
        body.append(
            f"{'model':<48} {'req':>8} {'in tok':>10} {'out tok':>10} {'cache r':>9} "
            f"{'err':>5} {'thr':>5} {'cost':>9}\n",
            style="bold",
        )
        shares = groups.model_tallies(self.dimension, self.group_name)
        ordered = sorted(shares.items(), key=lambda item: (-item[1].total_tokens, item[0]))
        for model_id, tally in ordered:
            spent = cost(model_id, tally) if cost is not None else None
            body.append(
                f"{model_id[:48]:<48} {format_count(tally.requests):>8} "
                f"{format_count(tally.input_tokens):>10} {format_count(tally.output_tokens):>10} "
                f"{format_count(tally.cache_read_input_tokens):>9} {tally.errors:>5} "
                f"{tally.throttles:>5} {format_usd(spent) if cost is not None else '':>9}\n"
            )
        if not ordered:
            body.append("no calls in the report window", style="dim")
        body.append("\nsince the start of the report window (--since)", style="dim")
        self.query_one("#group-models", TextPanel).show(body)

    def action_back(self) -> None:
        self.bt.pop_screen()


class HelpScreen(ModalScreen[None]):
    """Every key, from the same table as the footer and the command palette."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "close", id="help-close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield TextPanel(id="help-text")

    def on_mount(self) -> None:
        app: BedrockTopApp = self.app  # type: ignore[assignment]
        text = Text()
        text.append("bedrock-top keys\n", style="bold")
        titles = {"app": "Everywhere", "overview": "Overview", "model": "Model detail"}
        for scope, title in titles.items():
            text.append(f"\n{title}\n", style="bold underline")
            for spec in keys.specs([scope]):
                text.append(f"  {app.key_text(spec):<14}", style="bold")
                text.append(f"{spec.help}  ")
                text.append(f"[{spec.id}]\n", style="dim")
        text.append(
            "\nKeys are remapped by id in the configuration file ([keys] table).\n"
            "Mouse: click a row to select it, click again to open it.",
            style="dim",
        )
        self.query_one("#help-text", TextPanel).show(text)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)

"""The live screen: the Textual app, its refresh loop, and ``run_app`` for the command line.

Refresh discipline: the log tailer runs in its own thread and wakes the app after each batch; the
app drains the batch into the store at once (cheap), repaints the one-line source header at most
``QUICK_UPDATE_S`` apart and adds rows for new models immediately, and recomputes the tables and
charts only at the refresh interval, only for the screen in front, and only when the store or the
clock second changed. When nothing has arrived for a while the refresh slows down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ClassVar

from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import BindingType
from textual.css.query import NoMatches
from textual.notifications import Notify, SeverityLevel
from textual.screen import Screen
from textual.timer import Timer

from monitor.feed import DAY_S, RECENT_FIRST_S, LocalFeed
from monitor.formatting import printable
from monitor.groups import GroupIndex
from monitor.quotas import ModelQuotas
from monitor.store import Store
from monitor.ui import keys
from monitor.ui.hooks import BudgetStatus, ScreenExtras, regions_view
from monitor.ui.overview_model import CLOUDWATCH_GROUPINGS
from monitor.ui.screens import GroupScreen, HelpScreen, ModelScreen, OverviewScreen
from monitor.ui.themes import DEFAULT_THEME, ThemeCatalog, load_themes

# What the overview's rows are, in the order the group key cycles through them.
GROUPINGS = ("model", "app", "caller")
INTERVAL_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
QUICK_UPDATE_S = 0.1
IDLE_AFTER_S = 300.0  # no record for this long: every window shown has gone quiet
IDLE_INTERVAL_S = 15.0
TERMINAL_GONE_GRACE_S = 3.0
MAX_NOTICES = 3


class BedrockTopApp(App[int]):
    """bedrock-top's live screen."""

    CSS_PATH = "bedrock_top.tcss"
    TITLE = "bedrock-top"
    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("app")  # type: ignore[assignment]

    def __init__(
        self,
        feed: LocalFeed,
        *,
        clock: Callable[[], float] = time.time,
        extras: ScreenExtras | None = None,
        interval: float = 1.0,
        theme: str | None = None,
        keymap: Mapping[str, str] | None = None,
        catalog: ThemeCatalog | None = None,
        follow: bool = True,
        watch_terminal: bool = False,
    ) -> None:
        """``feed``: the log source (``follow=False`` when the caller has already read it and
        nothing more will come, as in tests). ``clock`` gives "now" for every number shown."""
        # NO_COLOR means no colour at all: the terminal's own default colours, text styles only
        # (Textual alone would still paint the screen in shades of grey).
        super().__init__(ansi_color=True if "NO_COLOR" in os.environ else None)
        self.feed = feed
        self.clock = clock
        self.extras = extras or ScreenExtras()
        self.interval = interval
        self.paused = False
        self.sort_key = "req"
        self.sort_reverse = False
        self.window_index = 0
        # Which source the overview shows (local: this host's log; fleet: CloudWatch Logs) and
        # what its rows are (a model, an app, a caller).
        self.view_source = "local"
        self.group_by = "model"
        self.keymap = dict(keymap or {})
        self.catalog = catalog if catalog is not None else load_themes()
        self._follow = follow
        self._watch_terminal = watch_terminal
        self._requested_theme = theme
        self._tick_timer: Timer | None = None
        self._tick_delay = 0.0
        self._watch_timer: Timer | None = None
        self._sources_seen: tuple[object, ...] = ()
        self._quick_pending = False
        self._last_quick = 0.0
        self._wake_context: contextvars.Context | None = None
        self._return_code = 0
        self._overview: OverviewScreen | None = None
        self._budget_cache: tuple[float, list[BudgetStatus]] | None = None
        for entry in self.catalog.themes.values():
            self.register_theme(entry.theme)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notice passes the terminal boundary: its text names files, budgets and models
        that other people chose, so it is escaped and never read as markup."""
        super().notify(
            printable(message),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def _on_notify(self, event: Notify) -> None:
        """At most ``MAX_NOTICES`` on screen, the newest: a burst (twelve theme changes, several
        alarms at once) would otherwise stack over the header and the table's column names."""
        super()._on_notify(event)
        shown = list(self._notifications)
        for old in shown[:-MAX_NOTICES]:
            self._unnotify(old, refresh=False)
        if len(shown) > MAX_NOTICES:
            self._refresh_notifications()

    # -- start and stop -----------------------------------------------------------------------
    def on_mount(self) -> None:
        self._choose_theme()
        for problem in self.catalog.problems:
            self.notify(problem, title="theme file skipped", severity="warning", timeout=10)
        for notice in self.extras.notices:
            self.notify(notice, severity="warning", timeout=10)
        if self.keymap:
            unknown = sorted(set(self.keymap) - keys.key_ids())
            if unknown:
                self.notify(f"unknown key binding id(s): {', '.join(unknown)}", severity="warning")
            self.set_keymap(self.keymap)
        self._overview = OverviewScreen()
        self.push_screen(self._overview)
        self.feed.drain()
        self._arm_tick(0)
        loop = self._loop
        self._wake_context = contextvars.copy_context()
        if self._follow:
            self.feed.start(self._wake)
        if self.extras.cloudwatch is not None:
            # The poller lives in this event loop: its awaits never block the screen.
            self.run_worker(self.extras.cloudwatch.start(), name="cloudwatch", group="sources")
        if self.extras.fleet is not None:
            self.run_worker(self.extras.fleet.start(), name="fleet", group="sources")
        if self.extras.quotas is not None:
            self.run_worker(self.extras.quotas.start(), name="quotas", group="sources")
        if self.extras.apps_cloudwatch is not None:
            self.run_worker(
                self.extras.apps_cloudwatch.start(), name="apps-cloudwatch", group="sources"
            )
        if self.extras.billing is not None:
            self.run_worker(self.extras.billing.start(), name="billing", group="sources")
        if self._watch_terminal and loop is not None:
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, self._signalled, signum)
            threading.Thread(target=self._watch_stdin, name="bedrock-top-tty", daemon=True).start()

    def _choose_theme(self) -> None:
        wanted = self._requested_theme or os.environ.get("TEXTUAL_THEME") or DEFAULT_THEME
        if wanted in self.available_themes:
            self.theme = wanted
            return
        fallback = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = fallback
        self.notify(f"theme {wanted!r} not found; using {fallback}", severity="warning")

    def _signalled(self, signum: int) -> None:
        self._return_code = 128 + signum
        self.exit(self._return_code)

    def _watch_stdin(self) -> None:
        """Exit when the terminal goes away. A dropped SSH session can leave stdin at end of file
        without a SIGHUP, and Textual's input thread then spins; poll() reports the hang-up
        without reading (no events asked for: only hang-up and errors wake it)."""
        poller = select.poll()
        poller.register(0, 0)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            if any(
                mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events
            ):
                break
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._signalled, signal.SIGHUP)
        # If the exit cannot complete (writes to a dead terminal can block), leave anyway.
        time.sleep(TERMINAL_GONE_GRACE_S)
        os._exit(128 + signal.SIGHUP)

    async def on_unmount(self) -> None:
        self.feed.stop()
        if self.extras.cloudwatch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.extras.cloudwatch.stop(), timeout=2)
        if self.extras.quotas is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.extras.quotas.stop(), timeout=2)
        if self.extras.apps_cloudwatch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.extras.apps_cloudwatch.stop(), timeout=2)
        if self.extras.billing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.extras.billing.stop(), timeout=2)
        if self.extras.fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.extras.fleet.stop(), timeout=2)

    # -- time and data ------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def extras_version(self) -> int:
        cloudwatch = self.extras.cloudwatch
        apps = self.extras.apps_cloudwatch
        billing = self.extras.billing
        fleet = self.extras.fleet
        # Counters that only grow: their sum changes whenever any does.
        return (
            (0 if cloudwatch is None else cloudwatch.version)
            + (0 if apps is None else apps.version)
            + (0 if billing is None else billing.version)
            + (0 if fleet is None else fleet.version)
        )

    def view_store(self) -> Store:
        """The store of the source the overview shows."""
        fleet = self.extras.fleet
        if self.view_source == "fleet" and fleet is not None:
            return fleet.store
        return self.feed.store

    def view_groups(self) -> GroupIndex:
        fleet = self.extras.fleet
        if self.view_source == "fleet" and fleet is not None:
            return fleet.groups
        return self.feed.groups

    def budget_statuses(self, now: float) -> list[BudgetStatus]:
        if self.extras.budgets is None:
            return []
        cached = self._budget_cache
        if cached is None or cached[0] != now:
            cached = self._budget_cache = (now, list(self.extras.budgets.budget_statuses(now)))
        return cached[1]

    def quota_statuses(self, now: float) -> Mapping[str, ModelQuotas]:
        quotas = self.extras.quotas
        return {} if quotas is None else quotas.model_quotas(now)

    def _front(self) -> OverviewScreen | ModelScreen | GroupScreen | None:
        try:
            screen = self.screen
        except ScreenStackError:  # a refresh timer that fires while the app exits
            return None
        return screen if isinstance(screen, OverviewScreen | ModelScreen | GroupScreen) else None

    def _arm_tick(self, delay: float) -> None:
        if self._tick_timer is not None:
            self._tick_timer.stop()
        self._tick_delay = delay
        # Textual timers need a positive delay.
        self._tick_timer = self.set_timer(max(delay, 0.001), self._tick, name="refresh")

    def _tick(self) -> None:
        self.feed.drain()
        self.feed.finish_history()
        now = self.now()
        if not self.paused:
            front = self._front()
            if front is not None:
                # A refresh that fires while the app shuts down finds its widgets gone.
                with contextlib.suppress(NoMatches):
                    front.refresh_view(now)
        self._sound_alarms(now)
        last = self.feed.store.last_epoch
        fleet = self.extras.fleet
        if fleet is not None and fleet.store.last_epoch is not None:
            last = max(last or 0.0, fleet.store.last_epoch)
        # While the history is read behind the screen, its progress moves every refresh.
        idle = (last is None or now - last > IDLE_AFTER_S) and self.feed.history is None
        self._arm_tick(max(self.interval, IDLE_INTERVAL_S) if idle else self.interval)
        if idle:
            self._sources_seen = self._sources_mark()
            self._arm_watch()

    def _sources_mark(self) -> tuple[object, ...]:
        """What the AWS sources have brought so far: their data versions and states. Reading
        it costs a few attribute reads, so that the slowed idle refresh still shows a poll's
        new data (or a source failing) within one refresh interval."""
        extras = self.extras
        mark: list[object] = []
        for view in (extras.cloudwatch, extras.apps_cloudwatch, extras.fleet, extras.billing):
            if view is not None:
                mark.append(view.version)
        if extras.cloudwatch is not None:
            state = extras.cloudwatch.cloudwatch_state()
            mark += [state.state, state.last_good_epoch]
        if extras.apps_cloudwatch is not None:
            mark.append(extras.apps_cloudwatch.apps_state().state)
        if extras.fleet is not None:
            fleet_state = extras.fleet.fleet_state()
            mark += [fleet_state.state, fleet_state.last_good_epoch]
        if extras.quotas is not None:
            mark.append(extras.quotas.state_text())
        if extras.billing is not None:
            mark.append(extras.billing.billing_state().state)
        return tuple(mark)

    def _arm_watch(self) -> None:
        if self._watch_timer is not None:
            self._watch_timer.stop()
        self._watch_timer = None
        extras = self.extras
        if any(
            view is not None
            for view in (
                extras.cloudwatch,
                extras.apps_cloudwatch,
                extras.fleet,
                extras.quotas,
                extras.billing,
            )
        ):
            self._watch_timer = self.set_timer(self.interval, self._watch_sources, name="watch")

    def _watch_sources(self) -> None:
        """While the refresh is slowed for idleness: refresh at once when a source moved."""
        self._watch_timer = None
        if self._tick_delay <= self.interval:
            return  # refreshing at the normal pace again
        if self._sources_mark() != self._sources_seen:
            self._arm_tick(0)
        else:
            self._arm_watch()

    def _sound_alarms(self, now: float) -> None:
        """A budget or quota that crossed a threshold rings the bell once and says so, paused
        or not."""
        quotas = self.extras.quotas
        if quotas is not None:
            quotas.model_quotas(now)
            for quota_alarm in quotas.crossed():
                self.bell()
                self.notify(
                    quota_alarm.message,
                    title="quota reached" if quota_alarm.final else "quota above 80%",
                    severity="error" if quota_alarm.final else "warning",
                    timeout=15,
                )
        budgets = self.extras.budgets
        if budgets is None:
            return
        self.budget_statuses(now)
        for alarm in budgets.crossed():
            self.bell()
            self.notify(
                alarm.message,
                title="budget limit reached" if alarm.final else "budget threshold",
                severity="error" if alarm.final else "warning",
                timeout=15,
            )

    def _wake(self, new_model: bool = True) -> None:
        """Runs on the tailer's thread after each batch. Records of models already on screen
        wait for the next refresh, which drains them (at most ``interval`` away): waking the
        event loop for each batch would cost more than the refresh itself. A new model gets
        its row at once, and so does any record while the refresh is slowed down for
        idleness. The wake-up is a plain event-loop callback (not a Textual message or
        timer, which cost several times more), run in the app's context; one pending at a
        time is enough."""
        if not new_model and self._tick_delay <= self.interval:
            return
        loop, context = self._loop, self._wake_context
        if not self._quick_pending and loop is not None and context is not None:
            self._quick_pending = True
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._records_arrived, context=context)

    def _records_arrived(self) -> None:
        """On the event loop: a quick update, at most every ``QUICK_UPDATE_S``."""
        self._quick_pending = True
        wait = max(0.0, self._last_quick + QUICK_UPDATE_S - time.monotonic())
        if self._loop is not None:
            self._loop.call_later(wait, self._quick_update, context=self._wake_context)

    def _quick_update(self) -> None:
        self._quick_pending = False
        self._last_quick = time.monotonic()
        if not self.feed.drain():
            return
        if self._tick_delay > self.interval:
            # Waking from the slow idle refresh: refresh at the normal pace again.
            self._arm_tick(0)
        if self.paused:
            return
        front = self._front()
        if front is not None:
            front.quick_update(self.now())

    # -- navigation -----------------------------------------------------------------------------
    def open_row(self, name: str, endpoint: str = "runtime") -> None:
        """Open the overview's row: a model's drill-down, or an app's or caller's models. A
        region's or account's row goes back to the models (their figures are CloudWatch's,
        per model); a bedrock-mantle row has account-wide figures only."""
        if self.group_by in CLOUDWATCH_GROUPINGS:
            self.notify(f"overview by model (was: {self.group_by} {name})", timeout=3)
            self.group_by = "model"
            self._refresh_front()
        elif endpoint != "runtime":
            self.notify(
                f"{name}: bedrock-{endpoint} traffic has account-wide figures only "
                "(see the row and --once --json)",
                timeout=4,
            )
        elif self.group_by == "model":
            self.open_model(name)
        else:
            self.push_screen(GroupScreen(self.group_by, name))

    def groupings(self) -> tuple[str, ...]:
        """The overview's keys, in the order the group key cycles through them: region when
        several regions are polled, account when linked accounts are read."""
        regional = regions_view(self.extras.cloudwatch)
        return (*GROUPINGS, *(regional.group_keys() if regional is not None else ()))

    def group_next(self) -> None:
        """Cycle the overview's rows between models, apps, callers (regions, accounts)."""
        groupings = self.groupings()
        index = groupings.index(self.group_by) if self.group_by in groupings else -1
        self.group_by = groupings[(index + 1) % len(groupings)]
        self.notify(f"overview by {self.group_by}", timeout=2)
        self._refresh_front()

    def next_source(self) -> None:
        """Switch the overview between this host's log and the fleet (CloudWatch Logs)."""
        if self.extras.fleet is None:
            self.notify("the fleet view is off: it needs CloudWatch or --log-group", timeout=4)
            return
        self.view_source = "fleet" if self.view_source == "local" else "local"
        self.notify(f"showing {self.view_source}", timeout=2)
        self._refresh_front()

    def action_live_tail(self) -> None:
        fleet = self.extras.fleet
        if fleet is None:
            self.notify("the fleet view is off: it needs CloudWatch or --log-group", timeout=4)
            return
        on = not fleet.fleet_state().live_tail
        fleet.set_live_tail(on)
        self.notify("live tail on (billed per minute)" if on else "live tail off", timeout=3)

    def _refresh_front(self) -> None:
        front = self._front()
        if front is not None:
            front._shown_key = None
            front.refresh_view(self.now())

    def open_model(self, model_id: str) -> None:
        self.push_screen(ModelScreen(model_id))
        self.focus_cloudwatch(model_id)

    def focus_cloudwatch(self, model_id: str | None) -> None:
        """The model in the drill-down gets CloudWatch's fast schedule for every metric."""
        if self.extras.cloudwatch is not None:
            self.extras.cloudwatch.set_focus_model(model_id)

    def pop_to_overview(self, model_id: str) -> None:
        self.focus_cloudwatch(None)
        self.pop_screen()
        if self._overview is not None:
            self._overview.table.move_cursor_to_model(model_id)

    def step_model(self, delta: int) -> None:
        screen = self.screen
        if not isinstance(screen, ModelScreen) or self._overview is None:
            return
        order = [row.model_id for row in self._overview.table.rows if row.endpoint == "runtime"]
        if not order:
            return
        index = order.index(screen.model_id) if screen.model_id in order else 0
        model_id = order[(index + delta) % len(order)]
        self._overview.table.move_cursor_to_model(model_id)
        screen.show_model(model_id)
        self.focus_cloudwatch(model_id)

    # -- actions --------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.extras.cloudwatch is not None:
            self.extras.cloudwatch.set_paused(self.paused)
        self.notify("paused: sources keep collecting" if self.paused else "resumed", timeout=2)
        front = self._front()
        if front is not None:
            front._shown_key = None
            front.refresh_view(self.now())

    def _set_interval(self, step: int) -> None:
        steps = INTERVAL_STEPS
        current = min(range(len(steps)), key=lambda i: abs(steps[i] - self.interval))
        self.interval = steps[max(0, min(len(steps) - 1, current + step))]
        self.notify(f"refresh every {self.interval:g}s", timeout=2)
        self._arm_tick(0)

    def action_faster(self) -> None:
        self._set_interval(-1)

    def action_slower(self) -> None:
        self._set_interval(1)

    def action_next_theme(self) -> None:
        names = self.catalog.names() or [self.theme]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_edit_budget(self) -> None:
        budgets = self.extras.budgets
        if budgets is None:
            self.notify("no budgets configured: add [[budgets]] to the configuration file")
            return
        # The dialog (and the Textual widgets it uses) is imported when first opened: it is
        # not on the first frame's path.
        from monitor.ui.budget_dialog import BudgetDialog

        def saved(path: str | None) -> None:
            if path:
                self.notify(f"budget saved to {path}", timeout=4)
                self._budget_cache = None
                front = self._front()
                if front is not None:
                    front._shown_key = None
                    front.refresh_view(self.now())

        self.push_screen(BudgetDialog(budgets), saved)

    def action_redraw(self) -> None:
        front = self._front()
        if front is not None:
            front._shown_key = None
            front.refresh_view(self.now())
        self.refresh(repaint=True, layout=True)
        self.screen.refresh(repaint=True, layout=True)

    async def action_quit(self) -> None:
        self.exit(self._return_code)

    # -- key table ------------------------------------------------------------------------------
    def key_text(self, spec: keys.KeySpec) -> str:
        """The key(s) a binding has now, after remapping, as a person types them."""
        from textual.binding import Binding

        chosen = self.keymap.get(spec.id, spec.keys)
        shown = []
        for key in chosen.split(","):
            key = key.strip()
            display = spec.display if spec.display and chosen == spec.keys else None
            shown.append(display or self.get_key_display(Binding(key, "")))
            if display:
                break
        return " ".join(shown)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        scopes = ["app"]
        if isinstance(screen, OverviewScreen):
            scopes.append("overview")
        elif isinstance(screen, ModelScreen):
            scopes.append("model")
        for spec in keys.specs(scopes):
            if spec.action in ("command_palette",) or spec.id == "interrupt":
                continue
            target = screen if spec.scope != "app" else self
            yield SystemCommand(
                spec.help,
                f"key: {self.key_text(spec)}",
                _runner(target, spec.action),
            )


def _runner(target: App[int] | Screen[object], action: str) -> Callable[[], object]:
    async def run() -> None:
        await target.run_action(action)

    return run


def seeded_demo_feed(
    log_path: Path, now: float, *, models: int = 7, rate_per_s: float = 6.0, seed: int = 7
) -> LocalFeed:
    """A demo log written up to ``now`` and read into a feed whose clock stands still at
    ``now``: the same screen every time (tests, snapshots, the benchmark's warm-up)."""
    from monitor.sources.demo import DemoWorkload, DemoWriter

    workload = DemoWorkload(models=models, rate_per_s=rate_per_s, seed=seed)
    DemoWriter(log_path, workload).write_history(now)
    feed = LocalFeed([str(log_path)], since=now - 3600, start_epoch=now - DAY_S, clock=lambda: now)
    feed.catch_up()
    return feed


def run_app(args: argparse.Namespace) -> int:
    """Run the live screen until the person quits: the session (configuration, logs, demo),
    prices, budgets and CloudWatch, then the app. Exit status 2 for a broken configuration."""
    # Under `bedrock-top serve` the screen talks to the browser through textual-serve's driver
    # over pipes, not a terminal.
    served = "web_driver" in os.environ.get("TEXTUAL_DRIVER", "")
    terminal = sys.stdin.isatty() and sys.__stderr__ is not None and sys.__stderr__.isatty()
    if not (terminal or served):
        print(
            "bedrock-top: the live screen needs a terminal (stdin and stderr); "
            "use --once for a report",
            file=sys.stderr,
        )
        return 2
    from monitor.live import live_extras
    from monitor.session import (
        SessionError,
        fleet_wanted,
        open_session,
        quotas_wanted,
    )

    try:
        session = open_session(args, live=True)
    except SessionError as err:
        print(printable(f"bedrock-top: {err}"), file=sys.stderr)
        return 2
    # A bad [keys] table is a configuration error, like any other: a dead key or one taken
    # from quit would only show once someone needs it.
    bad_keys = keys.keymap_problems(session.config.keys)
    if bad_keys:
        session.close()
        where = session.config.path or "configuration"
        for problem in bad_keys:
            print(printable(f"bedrock-top: {where}: {problem}"), file=sys.stderr)
        return 2
    try:
        # The newest minutes now, for a first frame at once; the history behind it.
        session.feed.catch_up_recent(RECENT_FIRST_S)
        config = session.config
        from monitor.exporter import cloudwatch_sources_for

        source, apps_source = cloudwatch_sources_for(session, args)
        quota_source = None
        if quotas_wanted(args, config)[0]:
            from monitor.sources.service_quotas import ServiceQuotasSource
            from monitor.sources.service_quotas_regions import ServiceQuotasRegions

            sources = config.sources
            # Quotas are per region: one source for each region polled (found ones included).
            quota_source = ServiceQuotasRegions(
                list(sources.regions) or ([] if sources.all_regions else [None]),
                lambda region: ServiceQuotasSource(region, sources.profile, sources.endpoint_url),
                follow_found=sources.all_regions,
            )
        billing = None
        billing_source = session.open_billing()
        if billing_source is not None:
            from monitor.live_billing import LiveBilling

            billing = LiveBilling(session, billing_source, cloudwatch_on=source is not None)
        fleet = None
        if fleet_wanted(args, config)[0]:
            from monitor.sources.fleet_regions import FleetRegions

            # CloudWatch Logs is regional: one source per region polled, one fleet on screen.
            fleet = FleetRegions(
                list(config.sources.regions) or [None],
                config.sources.profile,
                config.sources.endpoint_url,
                log_groups=config.sources.log_groups,
                interval_s=config.sources.fleet_interval_s,
                live_tail=config.sources.live_tail,
                since=session.since,
            )
        app = BedrockTopApp(
            session.feed,
            extras=live_extras(session, source, apps_source, quota_source, billing, fleet),
            interval=args.interval or config.ui.refresh_s,
            # --theme, else the configuration's, else $TEXTUAL_THEME, else the default.
            theme=args.theme
            or (config.ui.theme if config.provenance["ui.theme"].kind != "default" else None),
            keymap=config.keys,
            watch_terminal=True,
        )
        from monitor.exporter import ExportError, announce, listen_address, screen_endpoint

        endpoint = None
        address = listen_address(session)
        if address is not None:
            # Textual's own event loop owns the store; scrapes are answered on it.
            # Every region's AWS/Bedrock series; the first region's quotas.
            first_quotas = next(iter(quota_source.sources.values()), None) if quota_source else None
            endpoint = screen_endpoint(
                session, source, address, lambda: app._loop, apps_source, first_quotas, fleet
            )
            try:
                announce(endpoint.start())
            except ExportError as err:
                print(f"bedrock-top: {err}", file=sys.stderr)
                return 2
        try:
            result = app.run()
        finally:
            if endpoint is not None:
                endpoint.stop()
    finally:
        session.close()
    return int(result or 0) if app.return_code in (None, 0) else int(app.return_code or 0)

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
from textual.screen import Screen
from textual.timer import Timer

from monitor.feed import DAY_S, LocalFeed
from monitor.quotas import ModelQuotas
from monitor.ui import keys
from monitor.ui.budget_dialog import BudgetDialog
from monitor.ui.hooks import BudgetStatus, ScreenExtras
from monitor.ui.screens import HelpScreen, ModelScreen, OverviewScreen
from monitor.ui.themes import DEFAULT_THEME, ThemeCatalog, load_themes

INTERVAL_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
QUICK_UPDATE_S = 0.1
IDLE_AFTER_S = 300.0  # no record for this long: every window shown has gone quiet
IDLE_INTERVAL_S = 15.0
TERMINAL_GONE_GRACE_S = 3.0


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
        super().__init__()
        self.feed = feed
        self.clock = clock
        self.extras = extras or ScreenExtras()
        self.interval = interval
        self.paused = False
        self.sort_key = "req"
        self.group_by = "model"  # model | region | account
        self.sort_reverse = False
        self.window_index = 0
        self.keymap = dict(keymap or {})
        self.catalog = catalog if catalog is not None else load_themes()
        self._follow = follow
        self._watch_terminal = watch_terminal
        self._requested_theme = theme
        self._tick_timer: Timer | None = None
        self._tick_delay = 0.0
        self._quick_pending = False
        self._last_quick = 0.0
        self._wake_context: contextvars.Context | None = None
        self._return_code = 0
        self._overview: OverviewScreen | None = None
        self._budget_cache: tuple[float, list[BudgetStatus]] | None = None
        for entry in self.catalog.themes.values():
            self.register_theme(entry.theme)

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
        if self.extras.quotas is not None:
            self.run_worker(self.extras.quotas.start(), name="quotas", group="sources")
        if self.extras.apps_cloudwatch is not None:
            self.run_worker(
                self.extras.apps_cloudwatch.start(), name="apps-cloudwatch", group="sources"
            )
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

    # -- time and data ------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def extras_version(self) -> int:
        cloudwatch = self.extras.cloudwatch
        apps = self.extras.apps_cloudwatch
        # Two counters that only grow: their sum changes whenever either does.
        return (0 if cloudwatch is None else cloudwatch.version) + (
            0 if apps is None else apps.version
        )

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

    def _front(self) -> OverviewScreen | ModelScreen | None:
        try:
            screen = self.screen
        except ScreenStackError:  # a refresh timer that fires while the app exits
            return None
        return screen if isinstance(screen, OverviewScreen | ModelScreen) else None

    def _arm_tick(self, delay: float) -> None:
        if self._tick_timer is not None:
            self._tick_timer.stop()
        self._tick_delay = delay
        # Textual timers need a positive delay.
        self._tick_timer = self.set_timer(max(delay, 0.001), self._tick, name="refresh")

    def _tick(self) -> None:
        self.feed.drain()
        now = self.now()
        if not self.paused:
            front = self._front()
            if front is not None:
                front.refresh_view(now)
        self._sound_alarms(now)
        last = self.feed.store.last_epoch
        idle = last is None or now - last > IDLE_AFTER_S
        self._arm_tick(max(self.interval, IDLE_INTERVAL_S) if idle else self.interval)

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
        order = [row.model_id for row in self._overview.table.rows]
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
    if not (sys.stdin.isatty() and sys.__stderr__ is not None and sys.__stderr__.isatty()):
        print(
            "bedrock-top: the live screen needs a terminal (stdin and stderr); "
            "use --once for a report",
            file=sys.stderr,
        )
        return 2
    from monitor.live import live_extras
    from monitor.session import SessionError, cloudwatch_wanted, open_session, quotas_wanted

    try:
        session = open_session(args, live=True)
    except SessionError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    try:
        session.feed.catch_up()
        config = session.config
        source = apps_source = None
        enabled, _why = cloudwatch_wanted(args, config)
        if enabled:
            from monitor.sources.app_metrics import AppMetricsSource
            from monitor.sources.aws import AwsTarget
            from monitor.sources.cloudwatch_regions import CloudWatchRegions

            source = CloudWatchRegions(
                list(config.sources.regions) or [None],
                all_regions=config.sources.all_regions,
                mantle=config.sources.mantle,
                linked_accounts=config.sources.linked_accounts,
                profile=config.sources.profile,
                endpoint_url=config.sources.endpoint_url,
                interval_s=config.sources.interval_s,
                models_from_config=config.models,
                period_starts=session.alarm_period_starts,
            )
            # Regions and accounts found later bring stores of their own: budgets ask each time.
            session.cloudwatch_stores_of = source.stores
            # Quotas are per region: they read the first region's figures.
            first = source.stores()
            session.cloudwatch_store = first[0] if first else None
            # The BedrockTop namespace is read in the first region polled.
            apps_region = config.sources.regions[0] if config.sources.regions else None
            apps_source = AppMetricsSource(
                AwsTarget(apps_region, config.sources.profile, config.sources.endpoint_url),
                interval_s=config.sources.app_metrics_interval_s,
            )
        quota_source = None
        if quotas_wanted(args, config)[0]:
            from monitor.sources.service_quotas import ServiceQuotasSource

            quota_source = ServiceQuotasSource(
                # Quotas are per region: the first region polled (the others are not read).
                config.sources.regions[0] if config.sources.regions else None,
                config.sources.profile,
                config.sources.endpoint_url,
            )
        app = BedrockTopApp(
            session.feed,
            extras=live_extras(session, source, apps_source, quota_source),
            interval=args.interval or config.ui.refresh_s,
            # --theme, else the configuration's, else $TEXTUAL_THEME, else the default.
            theme=args.theme
            or (config.ui.theme if config.provenance["ui.theme"].kind != "default" else None),
            keymap=config.keys,
            watch_terminal=True,
        )
        result = app.run()
    finally:
        session.close()
    return int(result or 0) if app.return_code in (None, 0) else int(app.return_code or 0)

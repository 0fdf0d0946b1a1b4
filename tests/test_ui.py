"""Pilot tests of the live screen: every key, the refresh path, and the optional panels."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from monitor.feed import LocalFeed
from monitor.formatting import format_count
from monitor.records import to_json_line
from monitor.store import Tally
from monitor.ui.app import INTERVAL_STEPS, BedrockTopApp, seeded_demo_feed
from monitor.ui.hooks import (
    BudgetAlarm,
    BudgetLimit,
    BudgetStatus,
    CloudWatchState,
    ScreenExtras,
)
from monitor.ui.screens import HelpScreen, ModelScreen, OverviewScreen
from monitor.ui.themes import load_themes
from monitor.ui.widgets import Chart, ModelTable, TextPanel
from tests.conftest import record, settle

NOW = 1_790_000_000.0  # 2026-09-21T13:33:20Z


@pytest.fixture
def demo_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BedrockTopApp:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=7, seed=11)
    return BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, catalog=load_themes(tmp_path / "no-themes")
    )


def table(app: BedrockTopApp) -> ModelTable:
    return app.screen.query_one(ModelTable)


def ids(app: BedrockTopApp) -> list[str]:
    return [row.model_id for row in table(app).rows]


async def test_overview_lists_every_model_with_local_numbers(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        store = demo_app.feed.store
        assert sorted(ids(demo_app)) == store.model_ids()
        assert len(store.model_ids()) == 7
        first = table(demo_app).rows[0]
        rates = store.rates(first.model_id, NOW, 60)
        assert first.sort_values["req"] == pytest.approx(rates.requests_per_min)
        # Sorted by requests per minute, busiest first.
        values = [row.sort_values["req"] for row in table(demo_app).rows]
        assert values == sorted(values, reverse=True)
        header = demo_app.screen.query_one("#sources", TextPanel).text.plain
        assert "usage.jsonl" in header and "rejected" in header and "CloudWatch off" in header
        totals = demo_app.screen.query_one("#totals", TextPanel).text.plain
        assert "LOCAL" in totals and "7 models" in totals


async def test_quit_with_q_and_ctrl_c(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test() as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert demo_app.return_code == 0
    feed = demo_app.feed
    again = BedrockTopApp(feed, clock=lambda: NOW, follow=False, catalog=demo_app.catalog)
    async with again.run_test() as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert again.return_code == 0 and not again.is_running


async def test_open_step_window_and_back(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        order = ids(demo_app)
        await pilot.press("down", "enter")
        await pilot.pause()
        screen = demo_app.screen
        assert isinstance(screen, ModelScreen) and screen.model_id == order[1]
        title = screen.query_one("#model-title", TextPanel).text.plain
        assert order[1] in title  # the full id, never shortened here
        await pilot.press("]")
        assert screen.model_id == order[2]
        await pilot.press("right")
        assert screen.model_id == order[3]
        await pilot.press("[", "left")
        assert screen.model_id == order[1]
        await pilot.press("left")
        assert screen.model_id == order[0]
        await pilot.press("left")  # wraps around
        assert screen.model_id == order[-1]
        windows = []
        for _ in range(4):
            windows.append(
                screen.query_one("#model-title", TextPanel).text.plain.split("window ")[1][:3]
            )
            await pilot.press("w")
            await pilot.pause()
        assert [w.strip() for w in windows] == ["5m", "15m", "1h", "24h"]
        recent = screen.query_one("#recent", DataTable)
        assert recent.row_count > 0
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(demo_app.screen, OverviewScreen)
        assert table(demo_app).cursor_model == order[-1]  # the cursor follows the model shown


async def test_drill_down_charts_match_store(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 48)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen = demo_app.screen
        assert isinstance(screen, ModelScreen)
        store = demo_app.feed.store
        tally = store.tally_between(screen.model_id, NOW - 300, NOW)
        errors = screen.query_one("#chart-errors", Chart).summary
        assert f"err {tally.errors} · thr {tally.throttles}" in errors
        cache = screen.query_one("#cache", TextPanel).text.plain
        assert "Prompt cache (5m, local)" in cache
        assert "CloudWatch is off" in screen.query_one("#cloudwatch", TextPanel).text.plain
        assert "no budgets configured" in screen.query_one("#budgets", TextPanel).text.plain


async def test_filter_and_clear(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("/")
        field = demo_app.screen.query_one("#filter", Input)
        assert field.display and field.has_focus
        await pilot.press(*"nova")
        await pilot.pause()
        assert ids(demo_app) and all("nova" in model for model in ids(demo_app))
        await pilot.press("enter")
        assert table(demo_app).has_focus
        assert all("nova" in model for model in ids(demo_app))
        await pilot.press("escape")
        await pilot.pause()
        assert len(ids(demo_app)) == 7
        await pilot.press("/", *"zzz", "escape")  # esc inside the field clears it too
        await pilot.pause()
        assert len(ids(demo_app)) == 7


async def test_sort_keys_and_reverse(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert demo_app.sort_key == "req"
        await pilot.press("s")
        assert demo_app.sort_key == "in"
        values = [row.sort_values["in"] for row in table(demo_app).rows]
        assert values == sorted(values, reverse=True)
        await pilot.press(">")
        assert demo_app.sort_key == "out"
        await pilot.press("<", "<")
        assert demo_app.sort_key == "req"
        await pilot.press("<")
        assert demo_app.sort_key == "model"
        assert ids(demo_app) == sorted(ids(demo_app))
        await pilot.press("<")  # from the first column to the last sortable one
        assert demo_app.sort_key == "thr"
        await pilot.press("s")  # and round again
        assert demo_app.sort_key == "model"
        await pilot.press("r")
        assert demo_app.sort_reverse
        assert ids(demo_app) == sorted(ids(demo_app), reverse=True)


async def test_pause_freezes_view_but_sources_keep_collecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clock = [NOW]
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=3, seed=5)
    feed.clock = lambda: clock[0]
    app = BedrockTopApp(
        feed, clock=lambda: clock[0], follow=False, interval=0.25, catalog=load_themes(tmp_path)
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("p")
        assert app.paused
        assert "PAUSED" in app.screen.query_one("#sources", TextPanel).text.plain
        before = [row.cells for row in table(app).rows]
        new = record(
            epoch=NOW + 0.5,
            request_id="paused-1",
            model_id="brand.new-model-v1:0",
            input_tokens=10,
            output_tokens=5,
            latency_ms=100.0,
        )
        with Path("usage.jsonl").open("ab") as log:
            log.write(to_json_line(new))
        clock[0] = NOW + 1
        feed.tailer.poll()
        # A refresh drains the batch into the store.
        await settle(pilot, lambda: "brand.new-model-v1:0" in app.feed.store, lambda: str(ids(app)))
        await pilot.pause(0.3)  # and one more refresh passes, which must not draw it
        assert [row.cells for row in table(app).rows] == before  # collected but not shown
        await pilot.press("p")
        await settle(pilot, lambda: "brand.new-model-v1:0" in ids(app), lambda: str(ids(app)))
        assert not app.paused


async def test_refresh_interval_keys(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test() as pilot:
        assert demo_app.interval == 1.0
        await pilot.press("+")
        assert demo_app.interval == 0.5
        await pilot.press("-", "-")
        assert demo_app.interval == 2.0
        for _ in range(10):
            await pilot.press("-")
        assert demo_app.interval == INTERVAL_STEPS[-1]


async def test_theme_cycle(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test() as pilot:
        assert demo_app.theme == "bedrock-dark"
        seen = []
        backgrounds = set()
        table = demo_app.screen.query_one(ModelTable)
        for _ in range(4):
            await pilot.press("t")
            await pilot.pause()
            seen.append(demo_app.theme)
            # The table's cached base style follows the theme: its lines are drawn in it.
            assert table.base_style == table.rich_style
            backgrounds.add(next(iter(table.render_line(1))).style.bgcolor)
        assert sorted(seen) == sorted(demo_app.catalog.names())
        assert len(backgrounds) > 1


async def test_help_lists_every_key_from_the_key_table(demo_app: BedrockTopApp) -> None:
    from monitor.ui.keys import KEYS

    async with demo_app.run_test(size=(120, 48)) as pilot:
        await pilot.press("?")
        await pilot.pause()
        assert isinstance(demo_app.screen, HelpScreen)
        text = demo_app.screen.query_one("#help-text", TextPanel).text.plain
        for spec in KEYS:
            assert spec.help in text and f"[{spec.id}]" in text
        await pilot.press("escape")
        assert isinstance(demo_app.screen, OverviewScreen)


async def test_keymap_remaps_by_id_and_help_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=3, seed=5)
    app = BedrockTopApp(
        feed,
        clock=lambda: NOW,
        follow=False,
        keymap={"pause": "f5", "quit": "x"},
        catalog=load_themes(tmp_path),
    )
    async with app.run_test(size=(120, 48)) as pilot:
        await pilot.press("p")
        assert not app.paused
        await pilot.press("f5")
        assert app.paused
        await pilot.press("?")
        await pilot.pause()
        text = app.screen.query_one("#help-text", TextPanel).text.plain
        assert "F5" in text.upper()
        await pilot.press("escape", "x")
        await pilot.pause()
    assert not app.is_running


async def test_command_palette_runs_key_table_commands(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Pause or resume")

        def found() -> int:
            commands = demo_app.screen.query("CommandList")
            return commands.first().option_count if commands else 0

        await settle(pilot, found, lambda: str(demo_app.screen))  # the search is asynchronous
        await pilot.press("enter")
        await settle(pilot, lambda: demo_app.paused, lambda: str(demo_app.screen))


async def test_redraw_key_repaints(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test() as pilot:
        await pilot.pause()
        screen = demo_app.screen
        assert isinstance(screen, OverviewScreen)
        assert screen._shown_key is not None
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert screen._shown_key is not None  # recomputed after the forced redraw
        assert len(ids(demo_app)) == 7


async def test_columns_drop_in_order_when_narrow(demo_app: BedrockTopApp) -> None:
    async with demo_app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        wide = [column.key for column in table(demo_app).columns]
        assert "trend" in wide and "thr" in wide
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        narrow = [column.key for column in table(demo_app).columns]
        assert "trend" not in narrow and narrow[:2] == ["model", "req"]
        await pilot.resize_terminal(50, 20)
        await pilot.pause()
        tiny = [column.key for column in table(demo_app).columns]
        assert tiny[:2] == ["model", "req"] and len(tiny) < len(narrow)


async def test_new_model_row_appears_before_the_next_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=2, seed=5)
    app = BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, interval=30.0, catalog=load_themes(tmp_path)
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        fresh = record(
            epoch=NOW - 0.2,
            request_id="new-1",
            model_id="us.example.fresh-model-v1:0",
            input_tokens=1,
            output_tokens=1,
            latency_ms=50.0,
        )
        with Path("usage.jsonl").open("ab") as log:
            log.write(to_json_line(fresh))
        feed.tailer.poll()
        waker = threading.Thread(target=app._wake)  # as the tailer's thread does after a batch
        waker.start()
        waker.join()
        # Long before the next refresh (30 s away).
        await settle(
            pilot, lambda: "us.example.fresh-model-v1:0" in ids(app), lambda: str(ids(app)), 5.0
        )


class _Budgets:
    def __init__(self) -> None:
        self.alarms = [BudgetAlarm("haiku daily", "haiku daily: 91% of its day budget", False)]

    def crossed(self) -> Sequence[BudgetAlarm]:
        alarms, self.alarms = self.alarms, []
        return alarms

    def limits(self) -> Sequence[BudgetLimit]:
        return [BudgetLimit("all models", "usd", 100.0), BudgetLimit("haiku daily", "usd", 5.0)]

    def save_limit(self, name: str, value: float) -> str:
        raise OSError("read-only file system")

    def budget_statuses(self, now: float) -> Sequence[BudgetStatus]:
        return [
            BudgetStatus("all models", "month", 0.42, "$42.00", "$100.00"),
            BudgetStatus(
                "haiku daily",
                "day",
                0.91,
                "$4.55",
                "$5.00",
                models=("anthropic.claude-3-haiku-20240307-v1:0",),
                projected_fraction=1.3,
                exhausts_at=NOW + 3600,
            ),
        ]


class _CloudWatch:
    version = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def start(self) -> None:
        self.calls.append(("start", None))

    async def stop(self) -> None:
        self.calls.append(("stop", None))

    def set_paused(self, paused: bool) -> None:
        self.calls.append(("paused", paused))

    def set_visible_models(self, model_ids: Sequence[str] | None) -> None:
        self.calls.append(("visible", None if model_ids is None else tuple(model_ids)))

    def set_focus_model(self, model_id: str | None) -> None:
        self.calls.append(("focus", model_id))

    def cloudwatch_state(self) -> CloudWatchState:
        return CloudWatchState("us-east-1", "ok", NOW - 42, 0.36)

    def account_model_ids(self) -> Sequence[str]:
        # The second model has no traffic in the local log: CloudWatch alone knows it.
        return ["anthropic.claude-3-haiku-20240307-v1:0", "eu.other-host.model-v1:0"]

    def account_minute_series(
        self, model_id: str, metric: str, now: float, points: int
    ) -> list[float | None]:
        return [float(i) for i in range(points)]

    def account_requests_per_min(self, model_id: str, now: float) -> float | None:
        return 321.0 if model_id.startswith("anthropic.") else None


async def test_prices_budgets_and_cloudwatch_add_columns_and_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=4, seed=5)

    def cost(model_id: str, tally: Tally) -> float | None:
        if "nova" in model_id:
            return None  # unknown price
        return tally.input_tokens * 1e-6

    cloudwatch = _CloudWatch()
    extras = ScreenExtras(cost=cost, budgets=_Budgets(), cloudwatch=cloudwatch)
    app = BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, extras=extras, catalog=load_themes(tmp_path)
    )
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.pause()
        assert ("start", None) in cloudwatch.calls
        assert "eu.other-host.model-v1:0" in ids(app)
        visible = [value for name, value in cloudwatch.calls if name == "visible"]
        assert visible and set(visible[-1]) == set(ids(app))
        # The threshold crossed rings the bell once and says which budget.
        assert bells == [1]
        assert any("haiku daily: 91%" in str(n.message) for n in app._notifications)
        keys_shown = [column.key for column in table(app).columns]
        assert {"spend", "budget", "acct_req"} <= set(keys_shown)
        rows = {row.model_id: row for row in table(app).rows}
        haiku = rows["anthropic.claude-3-haiku-20240307-v1:0"]
        assert haiku.cells["acct_req"].text == "321"
        assert "91%" in haiku.cells["budget"].text  # the tightest budget that applies
        assert haiku.cells["budget"].style == "gauge-warn"
        nova = rows["amazon.nova-lite-v1:0"]
        assert nova.cells["spend"].text == "unpriced"
        assert "42%" in nova.cells["budget"].text
        header = app.screen.query_one("#sources", TextPanel).text.plain
        assert "CloudWatch us-east-1: ok" in header and "$0.36/h" in header
        totals = app.screen.query_one("#totals", TextPanel).text.plain
        assert "1 unpriced" in totals and "acct = CloudWatch" in totals
        table(app).move_cursor_to_model(haiku.model_id)
        await pilot.press("enter")
        await pilot.pause()
        budgets = app.screen.query_one("#budgets", TextPanel).text.plain
        assert "haiku daily" in budgets and "all models" in budgets and "projected 130%" in budgets
        assert "calls/min" in app.screen.query_one("#cloudwatch", TextPanel).text.plain
        assert ("focus", haiku.model_id) in cloudwatch.calls
        await pilot.press("p")
        assert ("paused", True) in cloudwatch.calls
        await pilot.press("escape")
        await pilot.pause()
        assert ("focus", None) in cloudwatch.calls
        # A save that fails says why and keeps the dialog open.
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        message = app.screen.query_one("#budget-message").render()
        assert "not saved: read-only file system" in str(message)
        await pilot.press("escape")
    assert ("stop", None) in cloudwatch.calls
    assert bells == [1]  # once, not at every refresh


async def test_rejected_lines_are_counted_in_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("usage.jsonl").write_text("not json\n" + json.dumps({"v": 1}) + "\n")
    feed = LocalFeed(["usage.jsonl"], since=NOW - 3600, clock=lambda: NOW)
    feed.catch_up()
    app = BedrockTopApp(feed, clock=lambda: NOW, follow=False, catalog=load_themes(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        header = app.screen.query_one("#sources", TextPanel).text.plain
        assert "2 rejected" in header and "last never" in header
        assert table(app).rows == []


async def test_unknown_theme_falls_back_with_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=2, seed=5)
    app = BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, theme="no-such-theme", catalog=load_themes(tmp_path)
    )
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == "bedrock-dark"
        assert any("no-such-theme" in str(n.message) for n in app._notifications)


async def test_first_frame_then_history_behind_it(tmp_path: Path) -> None:
    """The screen opens on the newest minutes, says its numbers are partial and shows the
    history's progress, and when the history is merged shows the numbers of the whole log."""
    from tests.test_report_equality import NOW as CORPUS_NOW
    from tests.test_report_equality import write_corpus

    write_corpus(tmp_path)
    pattern = str(tmp_path / "usage-*.jsonl")
    feed = LocalFeed(
        [pattern], since=CORPUS_NOW - 3600, start_epoch=CORPUS_NOW - 86400, clock=lambda: CORPUS_NOW
    )
    feed.catch_up_recent(600, history_min_bytes=0)
    history = feed.history
    assert history is not None
    gate = threading.Event()
    arrived = history.ready
    history.ready = lambda: gate.is_set() and arrived()  # type: ignore[method-assign]
    app = BedrockTopApp(
        feed, clock=lambda: CORPUS_NOW, follow=False, interval=0.25, catalog=load_themes(tmp_path)
    )

    def panels() -> str:
        return "\n".join(
            app.screen.query_one(f"#{name}", TextPanel).text.plain for name in ("sources", "totals")
        )

    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot, lambda: "PARTIAL" in panels() and "MB left" in panels(), panels)
        recent_records = feed.tailer.state.records
        gate.set()
        await settle(pilot, lambda: "PARTIAL" not in panels(), panels)
        assert "MB left" not in panels()
        whole = LocalFeed(
            [pattern],
            since=CORPUS_NOW - 3600,
            start_epoch=CORPUS_NOW - 86400,
            clock=lambda: CORPUS_NOW,
        )
        whole.catch_up()
        assert feed.tailer.state.records == whole.tailer.state.records > recent_records
        assert f"{format_count(whole.tailer.state.records)} records" in panels()
        assert feed.store.since_tally() == whole.store.since_tally()
        assert sorted(ids(app)) == whole.store.model_ids()
        rates = {row.model_id: row.sort_values["req"] for row in table(app).rows}
        assert rates == {
            model: whole.store.rates(model, CORPUS_NOW, 60).requests_per_min
            for model in whole.store.model_ids()
        }

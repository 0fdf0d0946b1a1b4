"""The screen survives its own notices and a small terminal: a burst of notices never covers
the header, the totals or the table's column names, and at 80x24 the key figures stay."""

from __future__ import annotations

import time
from pathlib import Path

from textual.widgets._toast import Toast

from monitor.store import Tally
from monitor.ui.app import BedrockTopApp, seeded_demo_feed
from monitor.ui.hooks import ScreenExtras
from monitor.ui.themes import load_themes
from monitor.ui.widgets import ModelTable, TextPanel


def demo_app(tmp_path: Path) -> BedrockTopApp:
    now = time.time()
    feed = seeded_demo_feed(tmp_path / "usage.jsonl", now)

    def cost(model_id: str, tally: Tally) -> float | None:
        return None if "llama" in model_id else tally.input_tokens * 1e-6

    return BedrockTopApp(
        feed,
        clock=lambda: now,
        follow=False,
        catalog=load_themes(tmp_path),
        extras=ScreenExtras(cost=cost),
    )


async def test_a_burst_of_notices_leaves_the_table_header_visible(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        for index in range(12):
            app.notify(f"notice {index}", timeout=30)
        await pilot.pause(0.5)
        await pilot.pause()
        table = app.screen.query_one(ModelTable)
        column_names = table.region.y  # the table's first line
        toasts = [toast for toast in app.screen.query(Toast) if toast.region.height]
        assert toasts
        assert all(toast.region.y > column_names for toast in toasts), [t.region for t in toasts]
        assert "req/m" in table.render_line(0).text


async def test_key_figures_stay_at_80x24(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = app.screen.query_one("#totals", TextPanel).text.plain
        lines = shown.splitlines()
        assert len(lines) == 2
        assert all(len(line) <= 80 for line in lines), lines
        for figure in ("req/min", "p50", "p99", "err", "thr", "spend"):
            assert figure in shown, shown

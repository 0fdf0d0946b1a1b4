"""The billing panel on screen: snapshots at 80x24 and 160x48 (a seeded workload, a frozen clock,
a fixed bill), and what the panel says when the bill cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.ui.app import BedrockTopApp, seeded_demo_feed
from monitor.ui.hooks import (
    BillingLine,
    BillingPanelData,
    BillingState,
    ScreenExtras,
)
from monitor.ui.themes import load_themes

NOW = 1_790_000_000.0
SIZES = [(80, 24), (160, 48)]


class FixedBill:
    """A bill that does not change, as the panel reads it (the live source is exercised end to
    end in tests/test_billing_source.py)."""

    def __init__(self, panel: BillingPanelData | None, state: BillingState) -> None:
        self.panel = panel
        self.state = state
        self.version = 1
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def billing_state(self) -> BillingState:
        return self.state

    def billing_panel(self, now: float) -> BillingPanelData | None:
        return self.panel


BILL = BillingPanelData(
    month_to_date_usd=43.01,
    through="2026-12-02",
    first_day="2026-12-01",
    lines=[
        BillingLine("anthropic.claude-3-haiku-20240307-v1:0", 1.55, 0.0004, 1.2),
        BillingLine("meta.llama3-1-70b-instruct-v1:0", 1.08, 0.0018, None),
        BillingLine("unmatched", 40.375),
    ],
    local_usd=0.0022,
    cloudwatch_usd=1.2,
    unmatched_usage_types=2,
    estimated=True,
    learned_models=1,
)
OK_STATE = BillingState("ok", cache_age_s=7200.0, cost_per_day_usd=0.08)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The header shows the log's path: a relative one keeps the snapshots the same every run.
    monkeypatch.chdir(tmp_path)


async def overview_shown(app: BedrockTopApp, pilot: object, timeout: float = 20.0) -> None:
    """Wait (on a loaded machine too) until the overview is on screen with its first frame."""
    import time

    from monitor.ui.screens import OverviewScreen

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            screen = app.screen
        except Exception:  # no screen pushed yet
            screen = None
        if isinstance(screen, OverviewScreen) and screen.query_one("#sources").text.plain:  # type: ignore[attr-defined]
            return
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    raise AssertionError("the overview never appeared")


def app_with(tmp_path: Path, bill: FixedBill) -> BedrockTopApp:
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=7, seed=11)
    return BedrockTopApp(
        feed,
        clock=lambda: NOW,
        follow=False,
        catalog=load_themes(tmp_path / "no-themes"),
        extras=ScreenExtras(cost=lambda model_id, tally: None, billing=bill),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_billing_panel(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_with(tmp_path, FixedBill(BILL, OK_STATE)), terminal_size=size)


async def test_the_panel_shows_the_bill_beside_the_estimates(tmp_path: Path) -> None:
    bill = FixedBill(BILL, OK_STATE)
    app = app_with(tmp_path, bill)
    async with app.run_test(size=(160, 48)) as pilot:
        await overview_shown(app, pilot)
        text = app.screen.query_one("#billing").text.plain  # type: ignore[attr-defined]
        header = app.screen.query_one("#sources").text.plain  # type: ignore[attr-defined]
        assert bill.started
    assert "month to date $43.01" in text
    assert "Dec 1-2" in text and "still estimated" in text
    assert "local $0.0022 (this host)" in text and "acct $1.20 (CloudWatch)" in text
    assert "bill - acct $41.81" in text
    assert "unmatched (2 usage types)" in text and "billed $40.38" in text
    assert "BILL ok · bill 2h old · refresh $0.08/day" in header


async def test_without_access_the_panel_and_header_say_so(tmp_path: Path) -> None:
    state = BillingState(
        "access-denied", "access denied: the credentials need ce:GetCostAndUsage", None, 0.04
    )
    app = app_with(tmp_path, FixedBill(None, state))
    async with app.run_test(size=(160, 48)) as pilot:
        await overview_shown(app, pilot)
        text = app.screen.query_one("#billing").text.plain  # type: ignore[attr-defined]
        header = app.screen.query_one("#sources").text.plain  # type: ignore[attr-defined]
        rows = app.screen.query_one("#models").rows  # type: ignore[attr-defined]
    assert "Cost Explorer: access-denied" in text and "ce:GetCostAndUsage" in text
    assert "BILL access-denied" in header
    assert len(rows) == 7  # everything else keeps working


async def test_without_billing_there_is_no_panel(tmp_path: Path) -> None:
    feed = seeded_demo_feed(tmp_path / "usage.jsonl", NOW, models=3, seed=11)
    app = BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, catalog=load_themes(tmp_path / "no-themes")
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await overview_shown(app, pilot)
        assert not app.screen.query("#billing")
        assert "BILL" not in app.screen.query_one("#sources").text.plain  # type: ignore[attr-defined]

"""The fleet view on the live screen: Pilot for the overview grouped by app and caller and the
drill-down of a caller; and the real program in tmux against moto's CloudWatch Logs."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from monitor.live import LiveFleet
from monitor.sources.fleet import FleetSource
from monitor.ui.app import BedrockTopApp, seeded_demo_feed
from monitor.ui.hooks import ScreenExtras
from monitor.ui.screens import GroupScreen, OverviewScreen
from monitor.ui.widgets import TextPanel
from tests.fleet_events import GROUP, assumed_role, invocation_event, message, put_events
from tests.moto_process import moto_url_of_module
from tests.test_tmux import Tmux

NOW = 1_796_000_000.0
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
CALLERS = {
    assumed_role("support-bot", "i-1"): ("support-bot", HAIKU, 12),
    assumed_role("etl-runner", "lambda-3"): ("etl", NOVA, 7),
    "arn:aws:iam::123456789012:user/alice": ("notebook", HAIKU, 3),
}


def fleet_events(now: float) -> list[tuple[float, str]]:
    events = []
    step = 0
    for arn, (app, model, count) in CALLERS.items():
        for _ in range(count):
            step += 1
            epoch = now - 50 + step
            events.append(
                (
                    epoch,
                    message(
                        invocation_event(
                            epoch,
                            caller_arn=arn,
                            app=app,
                            model_id=model,
                            input_tokens=1000,
                            output_tokens=100,
                        )
                    ),
                )
            )
    return events


@pytest.fixture
def fleet_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BedrockTopApp:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=3, seed=5)
    source = FleetSource(enabled=False, since=NOW - 3600, clock=lambda: NOW)
    source.ingest_events(
        None,
        [{"message": text, "timestamp": int(epoch * 1000)} for epoch, text in fleet_events(NOW)],
        NOW,
    )
    return BedrockTopApp(
        feed,
        clock=lambda: NOW,
        follow=False,
        extras=ScreenExtras(fleet=LiveFleet(source)),
    )


async def test_fleet_view_grouped_by_caller_and_a_callers_models(
    fleet_app: BedrockTopApp,
) -> None:
    async with fleet_app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        overview = fleet_app.screen
        assert isinstance(overview, OverviewScreen)
        local_rows = [row.model_id for row in overview.table.rows]
        await pilot.press("f")
        await pilot.pause()
        assert fleet_app.view_source == "fleet"
        assert sorted(row.model_id for row in overview.table.rows) == sorted([HAIKU, NOVA])
        assert local_rows != [row.model_id for row in overview.table.rows]
        totals = overview.query_one("#totals", TextPanel).text.plain
        assert "FLEET" in totals and "every caller" in totals
        await pilot.press("g")  # by app
        await pilot.pause()
        assert sorted(row.model_id for row in overview.table.rows) == [
            "etl",
            "notebook",
            "support-bot",
        ]
        await pilot.press("g")  # by caller
        await pilot.pause()
        rows = {row.model_id: row for row in overview.table.rows}
        assert set(rows) == {"support-bot/i-1", "etl-runner/lambda-3", "user/alice"}
        # 12 calls in the last minute: 12 req/min; 12,000 input tokens over 60 s: 200 tok/s.
        assert rows["support-bot/i-1"].sort_values["req"] == pytest.approx(12)
        assert rows["support-bot/i-1"].sort_values["in"] == pytest.approx(200)
        header = overview.table.columns[0].label
        assert header == "caller"
        overview.table.move_cursor_to_model("etl-runner/lambda-3")
        await pilot.press("enter")
        await pilot.pause()
        screen = fleet_app.screen
        assert isinstance(screen, GroupScreen)
        body = screen.query_one("#group-models", TextPanel).text.plain
        assert NOVA in body and HAIKU not in body
        assert "7,000" in body or "7.0k" in body
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(fleet_app.screen, OverviewScreen)
        await pilot.press("g")  # back to models
        await pilot.pause()
        assert fleet_app.group_by == "model"


# -- the real program in tmux ---------------------------------------------------------------------


@pytest.fixture
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_fleet_view_grouped_by_caller(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1")
    put_events(logs, GROUP, "2026/12/01/[$LATEST]f00", fleet_events(time.time()))
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    command = " ".join(
        [
            "env",
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            shlex.quote(sys.executable),
            "-m monitor --demo --demo-models 2",
            f"--endpoint-url {moto_url} --region us-east-1 --log-group {shlex.quote(GROUP)}",
        ]
    )
    session = Tmux(140, 40, command)
    try:
        first = session.wait_for(lambda s: "FLEET" in s and "req/h" in s, timeout=30)
        assert "logs" in first
        session.wait_for(lambda s: "last poll" in s.split("FLEET", 1)[1], timeout=30)
        session.keys("f")
        session.wait_for(lambda s: "every caller" in s and "claude-3-haiku" in s, timeout=15)
        session.keys("g", "g")
        screen = session.wait_for(
            lambda s: "support-bot/i-1" in s and "user/alice" in s and "caller" in s, timeout=15
        )
        assert "etl-runner/lam" in screen, screen  # cut to the column where the pane is narrow
        session.keys("q")
        deadline = time.monotonic() + 10
        while not session.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session.marker.read_text().strip() == "0"
    finally:
        session.close()

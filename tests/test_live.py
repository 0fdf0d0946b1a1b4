"""The live screen wired to a real session: budgets from a real configuration file (the edit
dialog saves it back), threshold alarms and the on_threshold command, and CloudWatch polled from
moto on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.cli import parse_args
from monitor.config import load_config
from monitor.live import LiveBudgets, live_extras
from monitor.session import open_session
from monitor.sources.cloudwatch import CloudWatchSource
from monitor.ui.app import BedrockTopApp
from monitor.ui.themes import load_themes
from tests.conftest import record, write_lines
from tests.moto_process import moto_url_of_module, reset_moto

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
M = 1_000_000


def config_text(on_threshold: Path) -> str:
    return f"""
timezone = "UTC"
on_threshold = ["sh", "-c", "env | grep BEDROCK_TOP_ >> {on_threshold}"]
[sources]
cloudwatch = false
[[budgets]]
name = "haiku daily"
models = ["anthropic.claude-3-haiku-*"]
period = "day"
limit_usd = 10.0
warn_at = [0.5, 0.8, 1.0]
"""


@pytest.fixture
def session_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    log = tmp_path / "usage.jsonl"
    alarms = tmp_path / "alarms.txt"
    config = tmp_path / "config.toml"
    config.write_text(config_text(alarms))
    now = time.time()
    # 24M input tokens of Claude 3 Haiku at $0.25/M: $6.00 of a $10 day, within the last minute
    # (and in today's UTC day unless the test runs in the first minute after midnight).
    first = max(now - 50, now - (now % 86400) + 1)
    write_lines(
        log,
        *(
            record(epoch=first + i, model_id=HAIKU, input_tokens=4 * M, output_tokens=0)
            for i in range(6)
        ),
    )
    return log, config, alarms


def open_live(log: Path, config: Path) -> Any:
    args = parse_args(["--config", str(config), "--log", str(log), "--no-cloudwatch"])
    session = open_session(args, live=True)
    session.feed.catch_up()
    return session


def test_thresholds_fire_once_per_period_and_run_the_command(
    session_files: tuple[Path, Path, Path],
) -> None:
    log, config, alarms_file = session_files
    session = open_live(log, config)
    try:
        budgets = LiveBudgets(session, every_s=0)
        now = time.time()
        shown = budgets.budget_statuses(now)
        assert [s.name for s in shown] == ["haiku daily"]
        assert shown[0].fraction == pytest.approx(0.6)
        assert shown[0].used_text == "$6.00" and shown[0].limit_text == "$10.00"
        alarms = budgets.crossed()
        assert [a.message for a in alarms] == [
            "haiku daily: 60% of its day budget ($6.00 of $10.00)"
        ]
        budgets.budget_statuses(now + 1)
        assert budgets.crossed() == []  # the same threshold never fires twice in a period
        # The command runs in the background: wait for what it writes, not for the file.
        deadline = time.monotonic() + 20
        written = ""
        while "BEDROCK_TOP_THRESHOLD=" not in written and time.monotonic() < deadline:
            time.sleep(0.05)
            written = alarms_file.read_text() if alarms_file.exists() else ""
        assert "BEDROCK_TOP_BUDGET=haiku daily" in written
        assert "BEDROCK_TOP_THRESHOLD=0.5" in written
    finally:
        session.close()


async def test_edit_dialog_saves_a_limit_that_loads_back(
    session_files: tuple[Path, Path, Path],
) -> None:
    log, config, _alarms = session_files
    session = open_live(log, config)
    now = time.time()
    app = BedrockTopApp(
        session.feed,
        clock=lambda: now,
        follow=False,
        extras=live_extras(session, None),
        catalog=load_themes(config.parent / "no-themes"),
    )
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("b")
            await pilot.pause()
            await pilot.press("enter")  # choose the (only) budget; the field holds its limit
            field = app.screen.query_one("#budget-value")
            assert field.value == "10"  # type: ignore[attr-defined]
            field.value = "$12.5"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await pilot.pause()
            row = app.screen.query_one("#models").rows[0]  # type: ignore[attr-defined]
            assert row.model_id == HAIKU
            assert "48%" in row.cells["budget"].text  # $6.00 of the new $12.50
    finally:
        session.close()
    reloaded = load_config(config)
    assert [(b.name, b.limit_usd) for b in reloaded.budgets] == [("haiku daily", 12.5)]
    assert reloaded.on_threshold is not None  # the rest of the file survived the save


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


async def test_cloudwatch_live_on_screen_beside_the_log(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reset_moto(moto_url)  # the module's other tests seeded this server too
    now = time.time()
    cw = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")
    import datetime as dt

    minute = dt.datetime.fromtimestamp(int(now // 60) * 60 - 180, tz=dt.UTC)
    for name, value in (("Invocations", 7), ("InputTokenCount", 700), ("OutputTokenCount", 70)):
        cw.put_metric_data(
            Namespace="AWS/Bedrock",
            MetricData=[
                {
                    "MetricName": name,
                    "Value": value,
                    "Timestamp": minute,
                    "Dimensions": [{"Name": "ModelId", "Value": "eu.remote.model-v1:0"}],
                }
            ],
        )
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(epoch=now - 5, model_id=HAIKU))
    args = parse_args(["--log", str(log), "--endpoint-url", moto_url, "--region", "us-east-1"])
    session = open_session(args, live=True)
    session.feed.catch_up()
    source = CloudWatchSource(region="us-east-1", endpoint_url=moto_url, interval_s=10)
    app = BedrockTopApp(
        session.feed,
        extras=live_extras(session, source),
        follow=False,
        catalog=load_themes(tmp_path / "no-themes"),
    )
    try:
        async with app.run_test(size=(160, 30)) as pilot:
            deadline = time.monotonic() + 30
            header = ""
            while time.monotonic() < deadline:
                await pilot.pause(0.2)
                header = app.screen.query_one("#sources").text.plain  # type: ignore[attr-defined]
                if "us-east-1: ok" in header and "eu.remote.model-v1:0" in json.dumps(
                    [row.model_id for row in app.screen.query_one("#models").rows]  # type: ignore[attr-defined]
                ):
                    break
            assert "CloudWatch us-east-1: ok" in header, (header, source.state)
            assert "/h" in header  # what the polling costs per hour
            rows = {row.model_id: row for row in app.screen.query_one("#models").rows}  # type: ignore[attr-defined]
            assert set(rows) == {HAIKU, "eu.remote.model-v1:0"}
    finally:
        session.close()

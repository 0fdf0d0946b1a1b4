"""Per-app account-wide numbers: the wrapper's EMF blocks, shipped into a real CloudWatch API on
loopback (moto's server), read back by the BedrockTop source, shown in the report."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from monitor.app_metrics_store import AppMetricsStore, AppTotals, apps_report
from monitor.records import UsageRecord, parse_line
from monitor.sources.app_metrics import QUERIES_PER_PAIR, AppMetricsSource
from monitor.sources.aws import ACCESS_DENIED, OK, STALE, AwsTarget
from monitor.wrapper import instrument
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    converse_reply,
    error_reply,
    invoke_reply,
    throttle_reply,
)
from tests.emf_spec import extract_metric_data
from tests.test_cloudwatch_source import FaultProxy, aws_env, cw, moto_url
from tests.test_tmux import Tmux, needs_tmux

__all__ = ["aws_env", "cw", "moto_url"]  # fixtures shared with the CloudWatch source's tests

ROOT = Path(__file__).resolve().parents[1]
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA = "amazon.nova-lite-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 9, "messages": []})


# -- the store (pure) ----------------------------------------------------------------------------


def test_store_replaces_revised_minutes_and_adds_models_of_an_app() -> None:
    store = AppMetricsStore(retention_minutes=60)
    base = 1_800_000_000.0
    store.merge("api", "m1", "Requests", "Sum", [(base, 3), (base + 60, 4)])
    store.merge("api", "m1", "Requests", "Sum", [(base + 60, 5)])  # revised, not added
    store.merge("api", "m2", "Requests", "Sum", [(base + 70, 2)])
    store.merge("api", "m1", "Latency", "Average", [(base, 100.0), (base + 60, 200.0)])
    store.merge("api", "m1", "Latency", "SampleCount", [(base, 1), (base + 60, 3)])
    store.merge("etl", "m1", "InputTokens", "Sum", [(base, 1000)])
    assert store.apps() == ["api", "etl"]
    assert store.models_of("api") == ["m1", "m2"]
    totals = store.totals("api", base, base + 120)
    assert totals.requests == 3 + 5 + 2
    assert totals.latency_avg_ms == pytest.approx((100 * 1 + 200 * 3) / 4)
    assert store.totals("api", base, base + 120, model_id="m2").requests == 2
    rates = store.rates("api", 120)  # up to the newest minute held (base + 60)
    assert rates.as_of == base + 120
    assert rates.requests_per_min == pytest.approx(10 / 2)
    assert store.rates("etl", 120).input_tokens_per_min == pytest.approx(500)
    version = store.version
    assert store.merge("api", "m1", "Requests", "Sum", [(base, 3)]) == 0
    assert store.version == version  # nothing changed, nothing to redraw


def test_store_memory_is_bounded() -> None:
    store = AppMetricsStore(retention_minutes=5, max_series=3)
    for index in range(10):
        store.merge(f"app{index}", "m", "Requests", "Sum", [(60.0 * i, 1) for i in range(1000)])
    assert len(store.apps()) == 3 and store.dropped_series == 7
    assert store.totals("app0", 0, 60_000).requests == 5  # the ring keeps the last 5 minutes


def test_apps_report_prices_each_model_and_leaves_unknown_prices_unpriced() -> None:
    totals = {
        "api": {
            "m1": AppTotals(requests=2, input_tokens=1000, output_tokens=100),
            "mystery": AppTotals(requests=1, input_tokens=10, output_tokens=1),
        }
    }
    prices = {"m1": 0.5}
    (entry,) = apps_report(totals, 600, lambda model, _t: prices.get(model))
    assert (entry["app"], entry["source"], entry["namespace"]) == (
        "api",
        "cloudwatch",
        "BedrockTop",
    )
    assert (entry["requests"], entry["input_tokens"], entry["cost_usd"]) == (3, 1010, 0.5)
    assert entry["unpriced_models"] == ["mystery"]
    assert [m["cost_usd"] for m in entry["models"]] == [0.5, None]
    assert entry["rates"] == {
        "requests_per_min": 0.3,
        "input_tokens_per_min": 101.0,
        "output_tokens_per_min": 10.1,
        "window_s": 600,
    }


# -- from the wrapper, through CloudWatch, to the source -----------------------------------------


@pytest.fixture
def bedrock_env(monkeypatch: pytest.MonkeyPatch, server: BedrockServer) -> None:
    server.reset()
    for key in ("BEDROCK_TOP_EMF", "BEDROCK_TOP_LOG", "BEDROCK_TOP_APP", "BEDROCK_TOP_TAGS"):
        monkeypatch.delenv(key, raising=False)


def emit_fleet(server: BedrockServer, log: Path) -> list[bytes]:
    """Two apps' calls through the real wrapper with EMF on; returns the log's lines."""
    config = Config(retries={"total_max_attempts": 1})
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TEST_AWS_ENV.items():
            patch.setenv(key, value)
        clients = {
            app: instrument(
                boto3.client(
                    "bedrock-runtime",
                    region_name="us-east-1",
                    endpoint_url=server.endpoint_url,
                    config=config,
                ),
                log=log,
                app=app,
                emf=True,
            )
            for app in ("search-api", "batch-etl")
        }
        server.script(
            converse_reply(input_tokens=100, output_tokens=20, latency_ms=80),
            converse_reply(input_tokens=300, output_tokens=40, cache_read=500),
            throttle_reply(),
            invoke_reply(input_tokens=11, output_tokens=7),
            error_reply(400, "ValidationException"),
            converse_reply(input_tokens=2000, output_tokens=900, cache_write=64),
            converse_reply(input_tokens=1500, output_tokens=700),
        )
        search, batch = clients["search-api"], clients["batch-etl"]
        search.converse(modelId=SONNET, messages=MESSAGES)
        search.converse(modelId=SONNET, messages=MESSAGES)
        with pytest.raises(botocore.exceptions.ClientError):
            search.converse(modelId=SONNET, messages=MESSAGES)
        search.invoke_model(modelId=NOVA, body=BODY)["body"].read()
        with pytest.raises(botocore.exceptions.ClientError):
            search.invoke_model(modelId=NOVA, body=BODY)
        batch.converse(modelId=SONNET, messages=MESSAGES)
        batch.converse(modelId=NOVA, messages=MESSAGES)
    return [line for line in log.read_bytes().splitlines() if line.strip()]


def ship(cw: Any, lines: list[bytes]) -> None:
    """What CloudWatch Logs does with each EMF event (moto does not do it itself)."""
    for line in lines:
        for namespace, data in extract_metric_data(line):
            cw.put_metric_data(Namespace=namespace, MetricData=data)


def hand_sums(records: list[UsageRecord]) -> dict[str, dict[str, Any]]:
    sums: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        app = sums[r.app or ""]
        app["requests"] += 1
        app["input_tokens"] += r.input_tokens
        app["output_tokens"] += r.output_tokens
        app["cache_read_input_tokens"] += r.cache_read_input_tokens
        app["cache_write_input_tokens"] += r.cache_write_input_tokens
        app["errors"] += r.status in ("client_error", "server_error")
        app["throttles"] += r.status == "throttled"
        if r.status == "ok":
            app["latency_total"] += r.latency_ms
            app["latency_n"] += 1
    return sums


def source_for(url: str, **kwargs: Any) -> AppMetricsSource:
    return AppMetricsSource(
        AwsTarget("us-east-1", None, url), max_attempts=1, read_timeout_s=3.0, **kwargs
    )


async def test_per_app_totals_from_emf_equal_the_records_sums(
    cw: Any, moto_url: str, server: BedrockServer, bedrock_env: None, tmp_path: Path
) -> None:
    lines = emit_fleet(server, tmp_path / "usage.jsonl")
    records = [parse_line(line) for line in lines]
    ship(cw, lines)
    # AWS/Bedrock data of other callers is another namespace: never mixed in.
    cw.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": [{"Name": "ModelId", "Value": SONNET}]}
            | {"Value": 999.0}
        ],
    )
    source = source_for(moto_url)
    try:
        await source.poll_once()
        assert source.health.status == OK, source.health.message
        store = source.store
        assert store.apps() == ["batch-etl", "search-api"]
        assert store.models_of("search-api") == [NOVA, SONNET]
        now = time.time()
        expected = hand_sums(records)
        for app in ("search-api", "batch-etl"):
            totals = store.totals(app, now - 3600, now + 120)
            want = expected[app]
            assert totals.requests == want["requests"]
            assert totals.input_tokens == want["input_tokens"]
            assert totals.output_tokens == want["output_tokens"]
            assert totals.cache_read_input_tokens == want["cache_read_input_tokens"]
            assert totals.cache_write_input_tokens == want["cache_write_input_tokens"]
            assert totals.errors == want["errors"]
            assert totals.throttles == want["throttles"]
            assert totals.latency_samples == want["latency_n"]
            assert totals.latency_avg_ms == pytest.approx(
                want["latency_total"] / want["latency_n"], rel=1e-6
            )
        assert expected["search-api"]["throttles"] == 1 and expected["search-api"]["errors"] == 1
        # What it costs: 9 metrics per app/model pair per poll, counted and projected.
        health = source.health
        assert source.metrics_requested == 4 * QUERIES_PER_PAIR  # 2 apps x 2 models
        assert health.cost_per_hour_usd == pytest.approx(4 * 9 * 12 * 0.01 / 1000)
        # A second poll asks again only for the minutes CloudWatch may still revise.
        await source.poll_once(now=now + 300)
        assert store.totals("search-api", now - 3600, now + 120).requests == 5

        report = await source.window_report(now - 3600, now + 60)
        by_pair = {pair: t for pair, t in report.items()}
        assert by_pair[("search-api", SONNET)].requests == 3
        assert by_pair[("batch-etl", NOVA)].output_tokens == 700
    finally:
        await source.stop()


async def test_no_bedrocktop_metrics_costs_only_a_listing(cw: Any, moto_url: str) -> None:
    source = source_for(moto_url)
    try:
        await source.poll_once()
        health = source.health
        assert health.status == OK
        assert "no BedrockTop metrics" in health.message and "BEDROCK_TOP_EMF=1" in health.message
        assert (source.calls, source.list_calls, health.cost_per_hour_usd) == (0, 1, 0.0)
    finally:
        await source.stop()


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(moto_url)
    yield fault_proxy
    fault_proxy.close()


async def test_throttling_and_access_denied_keep_the_data_and_recover(
    cw: Any, proxy: FaultProxy, server: BedrockServer, bedrock_env: None, tmp_path: Path
) -> None:
    ship(cw, emit_fleet(server, tmp_path / "usage.jsonl"))
    source = source_for(proxy.url)
    try:
        await source.poll_once()
        assert source.health.status == OK
        now = time.time()
        before = source.store.totals("search-api", now - 3600, now + 120)

        proxy.fail_next("throttle")
        await source.poll_once(now=now + 300)
        health = source.health
        assert health.status == STALE and "throttled" in health.message
        assert health.stale_since == now + 300 and health.last_error
        assert source.effective_interval_s() > source.schedule.interval_s  # backs off
        assert source.store.totals("search-api", now - 3600, now + 120) == before

        proxy.mode = "access-denied"
        await source.poll_once(now=now + 900)
        health = source.health
        assert health.status == ACCESS_DENIED
        assert "cloudwatch:ListMetrics and cloudwatch:GetMetricData" in health.message

        proxy.mode = None
        await source.poll_once(now=now + 1500)
        health = source.health
        assert (health.status, health.stale_since) == (OK, None)
        assert source.effective_interval_s() == source.schedule.interval_s
    finally:
        await source.stop()


def test_once_json_has_apps_cloudwatch(
    cw: Any, moto_url: str, server: BedrockServer, bedrock_env: None, tmp_path: Path
) -> None:
    lines = emit_fleet(server, tmp_path / "usage.jsonl")
    ship(cw, lines)
    # moto cuts GetMetricData's EndTime (the report's clock reading) to the whole second, so a
    # datapoint from the same second as the report would fall outside it: start the report in
    # the next second. (Real CloudWatch takes longer than that to make a datapoint readable.)
    newest = max(json.loads(line)["_aws"]["Timestamp"] for line in lines) / 1000
    time.sleep(max(0.0, math.floor(newest) + 1.05 - time.time()))
    (tmp_path / "config.toml").write_text("# defaults\n")
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        BEDROCK_TOP_CONFIG=str(tmp_path / "config.toml"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "--once",
            "--json",
            "--since",
            "1h",
            "--region",
            "us-east-1",
            "--endpoint-url",
            moto_url,
            "--log",
            str(tmp_path / "other-host.jsonl"),  # this host's log: empty
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    state = report["sources"]["apps_cloudwatch"]
    assert (state["state"], state["namespace"], state["pairs"]) == ("ok", "BedrockTop", 4)
    apps = {entry["app"]: entry for entry in report["apps_cloudwatch"]}
    assert list(apps) == ["batch-etl", "search-api"]  # busiest first
    expected = hand_sums([parse_line(line) for line in lines])
    for app, entry in apps.items():
        assert entry["source"] == "cloudwatch"
        for field in ("requests", "input_tokens", "output_tokens", "errors", "throttles"):
            assert entry[field] == expected[app][field], (app, field)
        assert entry["rates"]["window_s"] == 3600
        assert entry["rates"]["requests_per_min"] == round(expected[app]["requests"] / 60, 3)
    assert [m["model_id"] for m in apps["search-api"]["models"]] == [SONNET, NOVA]
    # Priced with the built-in prices (Sonnet 4.5 is known); never added to local numbers.
    assert apps["search-api"]["cost_usd"] is not None
    assert report["totals"]["local"]["requests"] == 0


# -- on the screen -------------------------------------------------------------------------------


async def test_overview_shows_per_app_rates_polled_from_bedrocktop(
    cw: Any, moto_url: str, server: BedrockServer, bedrock_env: None, tmp_path: Path
) -> None:
    from monitor.feed import LocalFeed
    from monitor.live import LiveAppMetrics
    from monitor.ui.app import BedrockTopApp
    from monitor.ui.hooks import ScreenExtras
    from monitor.ui.themes import load_themes
    from monitor.ui.widgets import TextPanel

    lines = emit_fleet(server, tmp_path / "fleet.jsonl")
    ship(cw, lines)
    now = time.time()
    local = tmp_path / "this-host.jsonl"
    local.write_bytes(b"")
    feed = LocalFeed([str(local)], since=now - 3600, start_epoch=now - 86400, clock=time.time)
    feed.catch_up()
    view = LiveAppMetrics(source_for(moto_url))
    app = BedrockTopApp(
        feed,
        follow=False,
        extras=ScreenExtras(apps_cloudwatch=view),
        catalog=load_themes(tmp_path / "no-themes"),
    )
    async with app.run_test(size=(150, 40)) as pilot:
        panel = app.screen.query_one("#apps", TextPanel)
        # The first poll runs in the app's loop; an idle screen refreshes every 15 s.
        deadline = time.monotonic() + 60
        while "batch-etl" not in panel.text.plain:
            assert time.monotonic() < deadline, panel.text.plain
            await pilot.pause(0.1)
        await pilot.pause(1.2)  # the next refresh draws the panel with its layout
        assert panel.display
        shown = panel.text.plain.splitlines()
        assert shown[0].startswith(" APPS acct BedrockTop per minute")
        expected = hand_sums([parse_line(line) for line in lines])
        rows = {line.split()[0]: line for line in shown[1:]}
        assert list(rows) == ["batch-etl", "search-api"]  # busiest (tokens) first
        for name, row in rows.items():
            want = expected[name]
            # Per minute over the last 5 minutes of data: all of these calls fall inside.
            assert re.search(rf" {want['requests'] / 5:.1f} req ", row), row
            assert re.search(rf" {format_rate(want['input_tokens'] / 5)} in ", row), row
            assert re.search(rf" {format_rate(want['output_tokens'] / 5)} out ", row), row
            assert f"err {int(want['errors'])} thr {int(want['throttles'])}" in row
        assert "2 models" in rows["search-api"]
        # The local rows stay this host's own: nothing from BedrockTop is added to them.
        assert "0 models" in app.screen.query_one("#totals", TextPanel).text.plain
    await view.stop()


def format_rate(value: float) -> str:
    from monitor.formatting import format_count

    return f"{value:.1f}" if value < 10 else format_count(round(value))


@needs_tmux
def test_the_real_program_in_tmux_shows_per_app_rates(
    cw: Any, moto_url: str, server: BedrockServer, bedrock_env: None, tmp_path: Path
) -> None:
    ship(cw, emit_fleet(server, tmp_path / "fleet.jsonl"))
    (tmp_path / "config.toml").write_text("# defaults\n")
    local = tmp_path / "this-host.jsonl"
    local.write_bytes(b"")
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "BEDROCK_TOP_CONFIG": str(tmp_path / "config.toml"),
    }
    command = " ".join(
        [
            "env",
            *(f"{key}={shlex.quote(value)}" for key, value in settings.items()),
            shlex.quote(sys.executable),
            "-m monitor --region us-east-1",
            f"--endpoint-url {moto_url} --log {shlex.quote(str(local))}",
        ]
    )
    session = Tmux(150, 40, command)
    try:
        screen = session.wait_for(lambda text: "search-api" in text, timeout=60)
        apps = [line for line in screen.splitlines() if " req " in line and " in " in line]
        assert any(line.lstrip().startswith("batch-etl") for line in apps), screen
        assert any("search-api" in line and "err 1 thr 1" in line for line in apps), screen
        assert "APPS acct BedrockTop per minute" in screen
        session.keys("q")
        session.wait_for(lambda _: session.marker.exists(), timeout=15)
    finally:
        session.close()


def test_once_without_a_region_does_not_try_bedrocktop_again(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("# defaults\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
    }
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        BEDROCK_TOP_CONFIG=str(tmp_path / "config.toml"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--json", "--log", str(tmp_path / "u.jsonl")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sources"]["cloudwatch"]["state"] == "error"
    state = report["sources"]["apps_cloudwatch"]
    assert state["state"] == "disabled" and state["message"].startswith("not polled: CloudWatch")
    assert "no AWS region" in state["message"] and state["calls"] == state["list_calls"] == 0
    assert report["apps_cloudwatch"] == []

"""Several regions, the bedrock-mantle namespace and linked accounts, against moto's CloudWatch on
loopback. moto keeps regions apart by the region a request is signed for, so two regions are
seeded with two clients; a proxy of the tests' own sits between bedrock-top and moto to fail one
region, and to play a monitoring account (moto ignores IncludeLinkedAccounts and AccountId)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.sources.aws import ERROR, OK, STALE
from monitor.sources.cloudwatch import MANTLE_NAMESPACE, NAMESPACE, Schedule
from monitor.sources.cloudwatch_regions import (
    CloudWatchRegions,
    bedrock_regions,
    parse_regions,
    regions_report,
)
from tests.moto_process import moto_url_of_module, reset_moto

REPO = Path(__file__).resolve().parent.parent
EAST, WEST, EMPTY = "us-east-1", "eu-west-1", "ap-southeast-2"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
GPT = "openai.gpt-oss-120b"
FAST = Schedule(revise_s=600, backfill_s=3600, percentile_retry_s=900)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", EAST)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


@pytest.fixture
def seed(moto_url: str, aws_env: None) -> Any:
    """Reset moto, then return ``put(region, namespace, model, metric, minutes_ago, value)``."""
    reset_moto(moto_url)
    clients: dict[str, Any] = {}
    now = time.time()

    def put(
        region: str,
        model: str,
        metric: str,
        minutes_ago: int,
        value: float,
        namespace: str = NAMESPACE,
        dimensions: list[dict[str, str]] | None = None,
    ) -> None:
        client = clients.get(region)
        if client is None:
            client = clients[region] = boto3.client(
                "cloudwatch", endpoint_url=moto_url, region_name=region
            )
        minute = (int(now // 60) - minutes_ago) * 60 + 15
        client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": dimensions or [{"Name": "ModelId", "Value": model}],
                    "Timestamp": dt.datetime.fromtimestamp(minute, tz=dt.UTC),
                    "Value": value,
                }
            ],
        )

    return put


def seed_two_regions(put: Any) -> dict[str, dict[str, Counter[str]]]:
    """Traffic of two models in two regions (one model in one region only); returns
    region -> model -> metric -> sum."""
    expected: dict[str, dict[str, Counter[str]]] = {}
    traffic = {
        EAST: {SONNET: (5, 1000, 200), HAIKU: (2, 300, 40)},
        WEST: {SONNET: (3, 700, 90)},
    }
    for region, models in traffic.items():
        for model, (calls, tokens_in, tokens_out) in models.items():
            sums = expected.setdefault(region, {}).setdefault(model, Counter())
            for minutes_ago in (20, 8):
                for metric, value in (
                    ("Invocations", calls),
                    ("InputTokenCount", tokens_in + minutes_ago),
                    ("OutputTokenCount", tokens_out),
                    ("InvocationLatency", 400.0 if region == EAST else 900.0),
                ):
                    put(region, model, metric, minutes_ago, value)
                    sums[metric] += value
    return expected


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def once_json(args: list[str]) -> dict[str, Any]:
    completed = run_cli(["--once", "--json", *args])
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def test_export_publishes_every_region_with_a_region_label(
    seed: Any, moto_url: str, tmp_path: Path
) -> None:
    """``bedrock-top export`` with two regions: each region's AWS/Bedrock counters carry its
    ``region`` label and equal that region's seeded sums; each region has its own up gauge."""
    from tests.test_exporter import Exporter, counter

    expected = seed_two_regions(seed)
    flags = ["--endpoint-url", moto_url, "--region", f"{EAST},{WEST}", "--no-quotas"]
    flags += ["--no-fleet", "--log", str(tmp_path / "none.jsonl")]
    exporter = Exporter(tmp_path, *flags, "--prometheus", "0", env={**os.environ})
    requests = "bedrock_top_requests"

    def polled(families: dict[str, Any]) -> bool:
        up = families.get("bedrock_top_source_up")
        ups = {s.labels["source"]: s.value for s in up.samples} if up else {}
        return all(
            ups.get(f"cloudwatch:{region}") == 1
            and counter(families, requests, source="cloudwatch", region=region)
            == sum(models[m]["Invocations"] for m in models)
            for region, models in expected.items()
        )

    try:
        families = exporter.wait_for(polled, timeout=60)
        for region, models in expected.items():
            for model, sums in models.items():
                labels = {"source": "cloudwatch", "region": region, "model_id": model}
                assert counter(families, requests, **labels) == sums["Invocations"]
                tokens = counter(families, "bedrock_top_input_tokens", **labels)
                assert tokens == sums["InputTokenCount"]
        assert counter(families, requests, source="cloudwatch", region=WEST, model_id=HAIKU) == 0
        up = {s.labels["source"]: s.value for s in families["bedrock_top_source_up"].samples}
        assert up[f"cloudwatch:{EAST}"] == 1 and up[f"cloudwatch:{WEST}"] == 1
        assert "cloudwatch" not in up  # no series of the regions merged into one
    finally:
        assert exporter.stop() == 0


# -- parsing -------------------------------------------------------------------------------------


def test_region_lists_are_parsed_and_bad_names_are_named() -> None:
    assert parse_regions("us-east-1, eu-west-1,us-east-1") == [EAST, WEST]
    assert parse_regions(["us-gov-west-1"]) == ["us-gov-west-1"]
    with pytest.raises(ValueError, match="'us_east_1' is not an AWS region name"):
        parse_regions("us-east-1,us_east_1")
    completed = run_cli(["--once", "--region", "us-east-1,nowhere", "--no-cloudwatch"])
    assert completed.returncode == 2
    assert "--region: 'nowhere' is not an AWS region name" in completed.stderr


def test_botocore_lists_the_bedrock_regions() -> None:
    regions = bedrock_regions()
    assert EAST in regions and WEST in regions
    assert all(parse_regions([region]) == [region] for region in regions)


# -- several regions -----------------------------------------------------------------------------


def test_once_json_two_regions_reports_each_region_and_their_sums(
    seed: Any, moto_url: str, tmp_path: Path
) -> None:
    expected = seed_two_regions(seed)
    report = once_json(
        [
            "--endpoint-url",
            moto_url,
            "--region",
            f"{EAST},{WEST}",
            "--log",
            str(tmp_path / "none.jsonl"),
        ]
    )
    state = report["sources"]["cloudwatch"]
    assert state["state"] == OK and state["region"] == f"{EAST},{WEST}"
    assert set(state["regions"]) == {EAST, WEST}
    assert all(part["state"] == OK for part in state["regions"].values())
    assert state["calls"] == sum(part["calls"] for part in state["regions"].values())
    rows = {(m["model_id"], m.get("endpoint")): m["cloudwatch"] for m in report["models"]}
    assert set(rows) == {(SONNET, None), (HAIKU, None)}
    sonnet = rows[(SONNET, None)]
    assert set(sonnet["regions"]) == {EAST, WEST}
    for region in (EAST, WEST):
        part = sonnet["regions"][region]
        assert part["requests"] == expected[region][SONNET]["Invocations"]
        assert part["input_tokens"] == expected[region][SONNET]["InputTokenCount"]
        assert part["output_tokens"] == expected[region][SONNET]["OutputTokenCount"]
    # Numbers of the same source add up; the average is weighted by each region's calls.
    both = [expected[r][SONNET] for r in (EAST, WEST)]
    assert sonnet["requests"] == sum(c["Invocations"] for c in both)
    assert sonnet["input_tokens"] == sum(c["InputTokenCount"] for c in both)
    assert sonnet["latency_ms"]["avg"] == pytest.approx((10 * 400 + 6 * 900) / 16, abs=0.01)
    assert sonnet["latency_ms"]["max"] == 900
    haiku = rows[(HAIKU, None)]
    assert set(haiku["regions"]) == {EAST}
    assert haiku["requests"] == expected[EAST][HAIKU]["Invocations"]
    every = sum(c["Invocations"] for models in expected.values() for c in models.values())
    assert report["totals"]["cloudwatch"]["requests"] == every
    assert report["totals"]["local"]["requests"] == 0


def test_one_region_keeps_the_report_fields_it_always_had(seed: Any, moto_url: str) -> None:
    expected = seed_two_regions(seed)
    models, mantle, state, _stores = regions_report(
        [EAST], None, moto_url, time.time() - 3600, time.time(), max_attempts=2
    )
    assert set(state) == {
        "region",
        "state",
        "message",
        "calls",
        "metrics_requested",
        "estimated_cost_usd",
        "percentiles",
    }
    assert state["region"] == EAST and state["state"] == OK
    assert mantle == {}
    sonnet = models[SONNET]
    assert sonnet["requests"] == expected[EAST][SONNET]["Invocations"]
    # With one region the percentile fields stay as CloudWatch gave them (moto: none).
    assert set(sonnet["latency_ms"]) == {"p50", "p90", "p99", "avg", "max"}
    # One region: the object a single-region report always had, no ``regions`` in it.
    assert "regions" not in sonnet


def test_a_region_without_bedrock_metrics_is_polled_and_adds_nothing(
    seed: Any, moto_url: str
) -> None:
    seed_two_regions(seed)
    models, _, state, _ = regions_report(
        [EAST, EMPTY], None, moto_url, time.time() - 3600, time.time(), max_attempts=2
    )
    assert state["regions"][EMPTY]["state"] == OK
    assert state["regions"][EMPTY]["metrics_requested"] == 0  # nothing to ask: costs nothing
    assert all(set(obj["regions"]) == {EAST} for obj in models.values())


def test_all_regions_finds_the_regions_that_have_metrics(seed: Any, moto_url: str) -> None:
    expected = seed_two_regions(seed)
    seed(EMPTY, "", "Inferences", 3, 4, MANTLE_NAMESPACE, [{"Name": "Model", "Value": GPT}])
    candidates = [EAST, WEST, EMPTY, "us-west-2", "eu-central-1"]
    models, mantle, state, _ = regions_report(
        [None],
        None,
        moto_url,
        time.time() - 3600,
        time.time(),
        all_regions=True,
        max_attempts=2,
        candidate_regions=lambda: candidates,
    )
    # The mantle-only region counts: its traffic is invisible in AWS/Bedrock.
    assert set(state["regions"]) == {EAST, WEST, EMPTY}
    assert state["scan_list_calls"] == 2 * len(candidates)  # one per region and namespace
    assert models[SONNET]["requests"] == sum(
        expected[r][SONNET]["Invocations"] for r in (EAST, WEST)
    )
    assert mantle[GPT]["regions"][EMPTY]["requests"] == 4


# -- bedrock-mantle ------------------------------------------------------------------------------


def test_mantle_traffic_has_rows_of_its_own(seed: Any, moto_url: str, tmp_path: Path) -> None:
    seed_two_regions(seed)
    model = [{"Name": "Model", "Value": GPT}]
    per_project = [{"Name": "Model", "Value": GPT}, {"Name": "Project", "Value": "proj_a"}]
    for minutes_ago in (15, 4):
        for metric, value in (
            ("Inferences", 6),
            ("TotalInputTokens", 1200),
            ("TotalOutputTokens", 300),
            ("InferenceClientErrors", 1),
        ):
            seed(EAST, GPT, metric, minutes_ago, value, MANTLE_NAMESPACE, model)
            # The same traffic per project: read once, at the Model level, never twice.
            seed(EAST, GPT, metric, minutes_ago, value, MANTLE_NAMESPACE, per_project)
        # Per-inference token counts are for percentiles; their sums would count tokens again.
        seed(EAST, GPT, "InputTokens", minutes_ago, 200, MANTLE_NAMESPACE, per_project)
    # A mantle model that shares its id with AWS/Bedrock traffic is still its own row.
    seed(WEST, SONNET, "Inferences", 5, 9, MANTLE_NAMESPACE, [{"Name": "Model", "Value": SONNET}])
    report = once_json(
        [
            "--endpoint-url",
            moto_url,
            "--region",
            f"{EAST},{WEST}",
            "--log",
            str(tmp_path / "none.jsonl"),
        ]
    )
    rows = {(m["model_id"], m.get("endpoint")): m for m in report["models"]}
    gpt = rows[(GPT, "mantle")]
    assert gpt["local"] is None
    assert gpt["cloudwatch"]["requests"] == 12
    assert gpt["cloudwatch"]["input_tokens"] == 2400
    assert gpt["cloudwatch"]["output_tokens"] == 600
    assert gpt["cloudwatch"]["errors"] == 2
    assert set(gpt["cloudwatch"]["regions"]) == {EAST}
    assert rows[(SONNET, "mantle")]["cloudwatch"]["requests"] == 9
    # AWS/Bedrock's numbers are untouched by mantle traffic, and the totals stay apart.
    assert rows[(SONNET, None)]["cloudwatch"]["requests"] == 16
    assert report["totals"]["mantle"]["requests"] == 21
    assert report["totals"]["cloudwatch"]["requests"] == 16 + 4
    table = run_cli(
        ["--once", "--endpoint-url", moto_url, "--region", f"{EAST},{WEST}", "--log", "x"]
    )
    assert "MODEL (mantle: account-wide)" in table.stdout
    assert f"  {WEST}" in table.stdout  # per-region lines under a model seen in both


# -- a proxy that fails a region and plays a monitoring account -----------------------------------

SCOPE = re.compile(r"(Credential=[^/]+/\d{8}/)([a-z0-9-]+)(/)")


class RegionProxy:
    """Forwards to moto. ``failing``: regions whose requests get HTTP 503. ``accounts``: a
    monitoring account's linked accounts, each kept in a moto region of its own (its metrics
    are seeded there): ListMetrics with IncludeLinkedAccounts merges them and names each
    metric's OwningAccount, OwningAccount and AccountId route the request to that account."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.failing: set[str] = set()
        self.accounts: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (region, target, body)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, operation: str) -> list[dict[str, Any]]:
        return [body for _, target, body in self.requests if target.endswith(operation)]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        target = handler.headers.get("X-Amz-Target", "")
        body = json.loads(raw or b"{}")
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        match = SCOPE.search(headers.get("Authorization", ""))
        region = match.group(2) if match else ""
        with self._lock:
            self.requests.append((region, target, json.loads(raw or b"{}")))
            failing = region in self.failing
        if failing:
            self._send(handler, 503, json.dumps({"__type": "ServiceUnavailable"}).encode())
            return
        if target.endswith("ListMetrics") and body.pop("IncludeLinkedAccounts", False):
            owner = body.pop("OwningAccount", None)
            merged: dict[str, Any] = {"Metrics": [], "OwningAccounts": []}
            for account, home in self.accounts.items():
                if owner is not None and account != owner:
                    continue
                _, payload = self._forward(handler.path, headers, body, home)
                metrics = json.loads(payload).get("Metrics", [])
                merged["Metrics"] += metrics
                merged["OwningAccounts"] += [account] * len(metrics)
            self._send(handler, 200, json.dumps(merged).encode())
            return
        queries = body.get("MetricDataQueries") or []
        accounts = {query.pop("AccountId", None) for query in queries}
        if accounts and accounts != {None}:
            assert len(accounts) == 1, "one source asks for one account"
            region = self.accounts[str(accounts.pop())]
        status, payload = self._forward(handler.path, headers, body, region)
        self._send(handler, status, payload)

    def _forward(
        self, path: str, headers: dict[str, str], body: dict[str, Any], region: str
    ) -> tuple[int, bytes]:
        raw = json.dumps(body).encode()
        headers = dict(headers, **{"Content-Length": str(len(raw))})
        # moto keeps regions apart by the signing region: re-address the request there.
        headers["Authorization"] = SCOPE.sub(rf"\g<1>{region}\g<3>", headers["Authorization"])
        conn = http.client.HTTPConnection(self.upstream, timeout=20)
        conn.request("POST", path, body=raw, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/x-amz-json-1.0")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[RegionProxy]:
    running = RegionProxy(moto_url)
    yield running
    running.close()


async def test_a_failing_region_goes_stale_alone_and_recovers(
    seed: Any, proxy: RegionProxy
) -> None:
    seed_two_regions(seed)
    group = CloudWatchRegions(
        [EAST, WEST],
        endpoint_url=proxy.url,
        schedule=FAST,
        max_attempts=1,
        connect_timeout_s=1.0,
        read_timeout_s=2.0,
    )
    try:
        await group.start()
        await group.poll_once()
        states = {state.region: state for state in group.region_states()}
        assert states[EAST].status == OK and states[WEST].status == OK
        now = time.time()
        west_store = next(s.store for s in group.runtime_sources() if s.region == WEST)
        assert west_store.sum(SONNET, "Invocations", now - 3600, now + 60) == 6
        proxy.failing.add(WEST)
        seed(EAST, HAIKU, "Invocations", 1, 7)
        await group.poll_once()
        states = {state.region: state for state in group.region_states()}
        assert states[WEST].status == STALE
        assert "ServiceUnavailable" in states[WEST].message or "503" in states[WEST].message
        assert states[EAST].status == OK
        east_store = next(s.store for s in group.runtime_sources() if s.region == EAST)
        assert east_store.sum(HAIKU, "Invocations", now - 3600, now + 60) == 4 + 7
        # The stale region keeps what it had.
        assert west_store.sum(SONNET, "Invocations", now - 3600, now + 60) == 6
        proxy.failing.clear()
        seed(WEST, SONNET, "Invocations", 1, 5)
        await group.poll_once()
        states = {state.region: state for state in group.region_states()}
        assert states[WEST].status == OK
        assert west_store.sum(SONNET, "Invocations", now - 3600, now + 60) == 11
    finally:
        await group.stop()


async def test_a_region_that_never_answered_is_an_error_there_only(
    seed: Any, proxy: RegionProxy
) -> None:
    seed_two_regions(seed)
    proxy.failing.add(WEST)
    group = CloudWatchRegions(
        [EAST, WEST], endpoint_url=proxy.url, schedule=FAST, max_attempts=1, read_timeout_s=2.0
    )
    try:
        await group.start()
        await group.poll_once()
        states = {state.region: state for state in group.region_states()}
        assert states[WEST].status == ERROR and states[EAST].status == OK
        report = group.report_state()
        assert report["state"] == ERROR and report["message"].startswith(f"{WEST}: ")
        assert report["regions"][EAST]["state"] == OK
    finally:
        await group.stop()


# -- linked accounts ------------------------------------------------------------------------------

SOURCE_A, SOURCE_B = "111111111111", "222222222222"


def test_linked_accounts_are_listed_queried_by_account_and_grouped(
    seed: Any, proxy: RegionProxy
) -> None:
    # Each source account's metrics live in a moto region of their own behind the proxy.
    proxy.accounts = {SOURCE_A: "us-west-1", SOURCE_B: "us-west-2"}
    for minutes_ago in (12, 3):
        seed("us-west-1", SONNET, "Invocations", minutes_ago, 4)
        seed("us-west-1", SONNET, "InputTokenCount", minutes_ago, 100)
        seed("us-west-2", SONNET, "Invocations", minutes_ago, 10)
        seed("us-west-2", SONNET, "InputTokenCount", minutes_ago, 50)
        seed("us-west-2", HAIKU, "Invocations", minutes_ago, 1)
    models, _, state, _ = regions_report(
        [EAST],
        None,
        proxy.url,
        time.time() - 3600,
        time.time(),
        mantle=False,
        linked_accounts=True,
        max_attempts=1,
    )
    listings = proxy.bodies("ListMetrics")
    assert any(b.get("IncludeLinkedAccounts") and "OwningAccount" not in b for b in listings)
    assert {b.get("OwningAccount") for b in listings} >= {SOURCE_A, SOURCE_B}
    data_calls = proxy.bodies("GetMetricData")
    assert data_calls
    queries = [q for body in data_calls for q in body["MetricDataQueries"]]
    assert {q.get("AccountId") for q in queries} == {SOURCE_A, SOURCE_B}
    sonnet = models[SONNET]
    assert sonnet["accounts"][SOURCE_A]["requests"] == 8
    assert sonnet["accounts"][SOURCE_B]["requests"] == 20
    assert sonnet["accounts"][SOURCE_B]["input_tokens"] == 100
    assert sonnet["requests"] == 28 and sonnet["regions"][EAST]["requests"] == 28
    assert set(models[HAIKU]["accounts"]) == {SOURCE_B}
    assert state["regions"][EAST]["accounts"] == [SOURCE_A, SOURCE_B]


async def test_live_sources_follow_linked_accounts(seed: Any, proxy: RegionProxy) -> None:
    proxy.accounts = {SOURCE_A: "us-west-1"}
    seed("us-west-1", HAIKU, "Invocations", 2, 3)
    group = CloudWatchRegions(
        [EAST], endpoint_url=proxy.url, mantle=False, linked_accounts=True, max_attempts=1
    )
    try:
        await group.start()
        assert [scope.account_id for scope in group.sources] == [SOURCE_A]
        await asyncio.wait_for(group.poll_once(), timeout=20)
        store = group.stores()[0]
        now = time.time()
        assert store.sum(HAIKU, "Invocations", now - 600, now + 60) == 3
    finally:
        await group.stop()


# -- the live screen -----------------------------------------------------------------------------


async def test_screen_shows_a_failing_region_there_only(
    seed: Any, proxy: RegionProxy, tmp_path: Path
) -> None:
    from monitor.feed import LocalFeed
    from monitor.live import LiveCloudWatch
    from monitor.ui.app import BedrockTopApp
    from monitor.ui.hooks import ScreenExtras
    from monitor.ui.themes import load_themes
    from tests.conftest import record, write_lines

    seed_two_regions(seed)
    proxy.failing.add(WEST)
    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(epoch=now - 5, model_id=HAIKU))
    feed = LocalFeed([str(log)], since=now - 3600, start_epoch=now - 86400)
    feed.catch_up()
    group = CloudWatchRegions(
        [EAST, WEST], endpoint_url=proxy.url, schedule=FAST, max_attempts=1, read_timeout_s=2.0
    )
    app = BedrockTopApp(
        feed,
        extras=ScreenExtras(cloudwatch=LiveCloudWatch(group)),
        follow=False,
        catalog=load_themes(tmp_path / "no-themes"),
    )
    try:
        async with app.run_test(size=(200, 30)) as pilot:
            header = rows = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await pilot.pause(0.2)
                header = app.screen.query_one("#sources").text.plain  # type: ignore[attr-defined]
                table = app.screen.query_one("#models")
                rows = json.dumps([(r.model_id, r.cells.get("region").text) for r in table.rows])  # type: ignore[attr-defined,union-attr]
                if f"{EAST}: ok" in header and f"{WEST}: error" in header and SONNET in rows:
                    break
            assert f"{EAST}: ok" in header and f"{WEST}: error" in header, header
            assert "ServiceUnavailable" in header  # what went wrong, and where
            # Only the healthy region's figures are on screen; the model row says where from.
            sonnet = next(r for r in app.screen.query_one("#models").rows if r.model_id == SONNET)  # type: ignore[attr-defined]
            assert sonnet.cells["region"].text == EAST
            assert sonnet.cells["acct_req"].text == "5.0"
    finally:
        feed.stop()


# -- configuration -------------------------------------------------------------------------------


def test_regions_from_the_file_and_the_flag_that_overrides_them(tmp_path: Path) -> None:
    from monitor.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text(
        '[sources]\nregions = ["us-east-1", "eu-west-1"]\nall_regions = false\n'
        "mantle = false\nlinked_accounts = true\n"
    )
    config = load_config(path, env={})
    assert config.sources.regions == (EAST, WEST)
    assert config.sources.mantle is False and config.sources.linked_accounts is True
    flagged = load_config(
        path, env={}, cli_overrides={"sources.region": "ap-south-1", "sources.all_regions": True}
    )
    assert flagged.sources.regions == ("ap-south-1",) and flagged.sources.all_regions is True
    path.write_text('[sources]\nregion = "us-east-1,eu-west-1"\n')
    assert load_config(path, env={}).sources.regions == (EAST, WEST)
    path.write_text('[sources]\n\nregions = ["us-east-1", "Europe"]\n')
    with pytest.raises(ConfigError) as failure:
        load_config(path, env={})
    message = str(failure.value)
    assert "sources.regions" in message and "line 3" in message and "'Europe'" in message


def test_all_regions_without_credentials_says_so_once(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, moto_url: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    models, mantle, state, _ = regions_report(
        [None],
        None,
        moto_url,
        time.time() - 3600,
        time.time(),
        all_regions=True,
        candidate_regions=lambda: [EAST, WEST],
    )
    assert models == {} and mantle == {}
    assert state["state"] == "no-credentials"
    assert state["message"].count("no AWS credentials") == 1
    assert f"({EAST}, {WEST})" in state["message"]


async def test_overview_groups_by_region(seed: Any, moto_url: str, tmp_path: Path) -> None:
    from monitor.feed import LocalFeed
    from monitor.live import LiveCloudWatch
    from monitor.ui.app import IDLE_INTERVAL_S, BedrockTopApp
    from monitor.ui.hooks import ScreenExtras
    from monitor.ui.themes import load_themes

    seed_two_regions(seed)
    seed(WEST, GPT, "Inferences", 2, 4, MANTLE_NAMESPACE, [{"Name": "Model", "Value": GPT}])
    now = time.time()
    feed = LocalFeed([str(tmp_path / "none.jsonl")], since=now - 3600, start_epoch=now - 86400)
    group = CloudWatchRegions([EAST, WEST], endpoint_url=moto_url, schedule=FAST, max_attempts=2)
    app = BedrockTopApp(
        feed,
        extras=ScreenExtras(cloudwatch=LiveCloudWatch(group)),
        follow=False,
        catalog=load_themes(tmp_path / "no-themes"),
    )
    try:
        async with app.run_test(size=(200, 30)) as pilot:
            table: Any = app.screen.query_one("#models")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(table.rows) < 3:
                await pilot.pause(0.2)
            assert {row.key for row in table.rows} == {SONNET, HAIKU, f"mantle:{GPT}"}

            def sonnet_calls() -> str:
                row = next(r for r in table.rows if r.key == SONNET)
                return row.cells["acct_req"].text

            while time.monotonic() < deadline and sonnet_calls() != "8.0":
                await pilot.pause(0.2)
            assert sonnet_calls() == "8.0"  # each region's newest minute: 5 east + 3 west
            # New data in one region reaches the cached row within a refresh interval, even
            # while the idle log has slowed the full refresh to every IDLE_INTERVAL_S.
            assert app._tick_delay >= IDLE_INTERVAL_S
            seed(WEST, SONNET, "Invocations", 2, 13)
            await group.poll_once()
            changed = time.monotonic() + app.interval + 4
            while time.monotonic() < changed and sonnet_calls() != "18":
                await pilot.pause(0.1)
            assert sonnet_calls() == "18"
            # g cycles model -> app -> caller -> region (offered with several regions).
            assert app.groupings() == ("model", "app", "caller", "region")
            await pilot.press("g", "g", "g")
            await pilot.pause(0.3)
            assert app.group_by == "region"
            assert table.columns[0].label == "region"
            # Their figures are account-wide only: the local columns make room for them.
            assert [column.key for column in table.columns] == ["model", "acct_req", "region"]
            rows = {row.model_id: row for row in table.rows}
            assert set(rows) == {EAST, WEST}
            # Each model's newest minute in the region, added up; mantle beside, not added.
            assert rows[EAST].cells["acct_req"].text == "7.0"  # sonnet 5 + haiku 2
            assert rows[WEST].cells["acct_req"].text == "13"
            assert rows[WEST].cells["region"].text == "1 models +4.0 mantle"
            await pilot.press("g")  # no linked accounts: back to models
            await pilot.pause(0.3)
            assert len(table.rows) == 3
            assert "req" in [column.key for column in table.columns]
    finally:
        feed.stop()


# -- quotas and the fleet follow the regions ------------------------------------------------------

HAIKU_TPM = "On-demand model inference tokens per minute for Anthropic Claude 3 Haiku"


def test_once_reads_each_regions_quotas_against_its_own_usage(
    seed: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.quotas_server import Quota, QuotasServer

    # The newest complete minute: 9,000 of 10,000 in the east, 3,000 of 100,000 in the west.
    seed(EAST, HAIKU, "EstimatedTPMQuotaUsage", 1, 9000)
    seed(WEST, HAIKU, "EstimatedTPMQuotaUsage", 1, 3000)
    seed(EAST, HAIKU, "Invocations", 1, 9)
    seed(WEST, HAIKU, "Invocations", 1, 3)
    with QuotasServer() as quotas:
        quotas.serve(applied=[Quota("L-8CE99163", HAIKU_TPM, 10_000)], region=EAST)
        quotas.serve(applied=[Quota("L-8CE99163", HAIKU_TPM, 100_000)], region=WEST)
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", quotas.endpoint_url)
        log = tmp_path / "none.jsonl"
        report = once_json(["--region", f"{EAST},{WEST}", "--no-fleet", "--log", str(log)])
        assert quotas.requests_in(EAST) and quotas.requests_in(WEST)
    state = report["sources"]["service_quotas"]
    assert state["state"] == OK, state
    assert {region: part["state"] for region, part in state["regions"].items()} == {
        EAST: OK,
        WEST: OK,
    }
    haiku = next(m for m in report["models"] if m["model_id"] == HAIKU)
    regions = haiku["quota"]["regions"]
    assert set(regions) == {EAST, WEST}
    east, west = regions[EAST]["tpm"], regions[WEST]["tpm"]
    assert (east["limit"], east["used_peak_5m"], east["source"]) == (10_000, 9000, "cloudwatch")
    assert (west["limit"], west["used_peak_5m"], west["source"]) == (100_000, 3000, "cloudwatch")
    # Limits of different regions never add up: the model shows the region throttled first.
    assert haiku["quota"]["tpm"] == east


def test_one_region_keeps_the_quota_object_it_always_had(
    seed: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.quotas_server import Quota, QuotasServer

    seed(EAST, HAIKU, "EstimatedTPMQuotaUsage", 1, 9000)
    with QuotasServer() as quotas:
        quotas.serve(applied=[Quota("L-8CE99163", HAIKU_TPM, 10_000)])
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", quotas.endpoint_url)
        log = tmp_path / "none.jsonl"
        report = once_json(["--region", EAST, "--no-fleet", "--log", str(log)])
    assert "regions" not in report["sources"]["service_quotas"]
    assert report["sources"]["service_quotas"]["region"] == EAST
    haiku = next(m for m in report["models"] if m["model_id"] == HAIKU)
    assert set(haiku["quota"]) == {"tpm", "rpm", "tpd"}
    assert haiku["quota"]["tpm"]["used_peak_5m"] == 9000


async def test_the_fleet_reads_each_regions_logging_group_into_one_store(
    moto_url: str, aws_env: None
) -> None:
    from monitor.sources.fleet_regions import FleetRegions
    from tests.fleet_events import invocation_event, message, put_events, turn_on_invocation_logging

    reset_moto(moto_url)
    logs = {r: boto3.client("logs", endpoint_url=moto_url, region_name=r) for r in (EAST, WEST)}
    groups = {EAST: "/bedrock/east", WEST: "/bedrock/west"}
    for region, group in groups.items():
        bedrock = boto3.client("bedrock", endpoint_url=moto_url, region_name=region)
        turn_on_invocation_logging(bedrock, group)
    now = time.time()

    def events(region: str, count: int, start: float) -> list[tuple[float, str]]:
        return [
            (start + i, message(invocation_event(start + i, region=region, input_tokens=100)))
            for i in range(count)
        ]

    put_events(logs[EAST], groups[EAST], "s", events(EAST, 3, now - 90))
    put_events(logs[WEST], groups[WEST], "s", events(WEST, 2, now - 80))
    fleet = FleetRegions([EAST, WEST], endpoint_url=moto_url, since=now - 3600, clock=lambda: now)
    try:
        await fleet.poll_once(now)
        assert fleet.health().status == OK, fleet.health().message
        assert sorted(fleet.log_groups) == sorted(groups.values())
        # One fleet: both regions' calls in one store, each record carrying its region.
        assert fleet.store.since_tally().requests == 5
        regions = Counter(r.region for r in fleet.store.recent_requests(None, 10))
        assert regions == Counter({EAST: 3, WEST: 2})
        snapshot = fleet.snapshot()
        assert set(snapshot["regions"]) == {EAST, WEST} and snapshot["requests"] >= 4
        # The west's group goes away: the west is stale, the east keeps updating.
        logs[WEST].delete_log_group(logGroupName=groups[WEST])
        put_events(logs[EAST], groups[EAST], "s", events(EAST, 4, now + 5))
        await fleet.poll_once(now + 20)
        states = {source.region: source.health().status for source in fleet.sources}
        assert states == {EAST: OK, WEST: STALE}
        assert fleet.health().status == STALE and WEST in fleet.health().message
        assert fleet.store.since_tally().requests == 9
        # It comes back: the region recovers by itself.
        put_events(logs[WEST], groups[WEST], "s", events(WEST, 1, now + 30))
        await fleet.poll_once(now + 40)
        await fleet.poll_once(now + 41)
        assert fleet.health().status == OK, fleet.health().message
        assert fleet.store.since_tally().requests == 10
    finally:
        await fleet.stop()


async def test_logging_off_in_two_regions_names_each_region_once(
    moto_url: str, aws_env: None
) -> None:
    from monitor.sources.aws import DISABLED
    from monitor.sources.fleet_regions import FleetRegions

    reset_moto(moto_url)
    now = time.time()
    fleet = FleetRegions([EAST, WEST], endpoint_url=moto_url, since=now - 3600, clock=lambda: now)
    try:
        await fleet.poll_once(now)
        health = fleet.health()
        assert health.status == DISABLED, health.message
        for region in (EAST, WEST):
            assert health.message.count(region) == 1, health.message
            assert f"logging is off in {region}" in health.message
    finally:
        await fleet.stop()

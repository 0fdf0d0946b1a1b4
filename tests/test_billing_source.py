"""The billing source against a real Cost Explorer API on loopback (moto's server, results seeded
through its ``/moto-api/static/ce/cost-and-usage-results`` endpoint), with a small proxy of our
own that counts requests and can answer as AWS does when access is denied."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.billing import UNMATCHED, UsageTypeMap, summarize
from monitor.sources.aws import ACCESS_DENIED, NO_CREDENTIALS, OK, AwsTarget
from monitor.sources.billing import CACHE_VERSION, BillingSource, month_range, read_cache
from tests.conftest import record, write_lines
from tests.moto_process import moto_url_of_module

ROOT = Path(__file__).resolve().parents[1]
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Dummy credentials, no real AWS files, and a cache directory of the test's own."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # Cost Explorer is us-east-1 anyway
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("BEDROCK_TOP_CACHE_DIR", str(cache))
    return cache


def moto_post(moto_url: str, path: str, body: dict[str, Any] | None = None) -> int:
    conn = http.client.HTTPConnection(moto_url.removeprefix("http://"), timeout=10)
    conn.request("POST", path, body=json.dumps(body or {}), headers={"Content-Type": "text/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def group(usage_type: str, usd: float, quantity: float, unit: str = "Tokens") -> dict[str, Any]:
    return {
        "Keys": [usage_type],
        "Metrics": {
            "UnblendedCost": {"Amount": f"{usd:.10f}", "Unit": "USD"},
            "UsageQuantity": {"Amount": f"{quantity:.4f}", "Unit": unit},
        },
    }


def day_result(day: date, groups: list[dict[str, Any]], estimated: bool = True) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Total": {},
        "Groups": groups,
        "Estimated": estimated,
    }


def month_days(now: float) -> list[date]:
    start, end = month_range(now)
    first, last = date.fromisoformat(start), date.fromisoformat(end) - timedelta(days=1)
    return sorted({first, last})


def seed_bill(moto_url: str, now: float) -> float:
    """Two pages over the month's first and last day: several token kinds and models, one
    usage type nothing matches. Returns the sum of every cost seeded."""
    assert moto_post(moto_url, "/moto-api/reset") == 200
    days = month_days(now)
    first_page = [
        day_result(
            days[0],
            [
                group("USE1-Llama3.1-70B-Instruct-input-tokens", 0.54, 750_000),
                group("USE1-Llama3.1-70B-Instruct-output-tokens", 0.216, 300_000),
                group("USE1-Claude3Haiku-input-tokens", 0.25, 1_000_000),
            ],
            estimated=False,
        )
    ]
    second_page = [
        day_result(
            days[-1],
            [
                group("USE1-Claude3Haiku-output-tokens", 1.25, 1_000_000),
                group("USE1-Claude3Haiku-cache-read-input-token-count", 0.05, 2_000_000),
                group("USE1-Claude4.5Sonnet-cache-write-input-token-count", 0.375, 100_000),
                group("USE1-Llama3.1-70B-Instruct-input-tokens", 0.324, 450_000),
                group("USE1-ProvisionedThroughput-ModelUnits", 40.0, 2, "Hours"),
            ],
        )
    ]
    results = [
        {"ResultsByTime": first_page, "NextPageToken": "page-2", "DimensionValueAttributes": []},
        {"ResultsByTime": second_page, "DimensionValueAttributes": []},
    ]
    assert moto_post(moto_url, "/moto-api/static/ce/cost-and-usage-results", {"results": results})
    return 0.54 + 0.216 + 0.25 + 1.25 + 0.05 + 0.375 + 0.324 + 40.0


class CountingProxy:
    """Forwards to moto and counts GetCostAndUsage requests; ``deny`` answers as AWS does for
    credentials without ce:GetCostAndUsage (or an account without Cost Explorer)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.deny = False
        self.bodies: list[dict[str, Any]] = []
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

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.bodies)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        if handler.headers.get("X-Amz-Target", "").endswith("GetCostAndUsage"):
            with self._lock:
                self.bodies.append(json.loads(raw or b"{}"))
        if self.deny:
            payload = json.dumps(
                {
                    "__type": "AccessDeniedException",
                    "Message": "User not enabled for cost explorer access",
                }
            ).encode()
            status = 400
        else:
            conn = http.client.HTTPConnection(self.upstream, timeout=20)
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            conn.request("POST", handler.path, body=raw, headers=headers)
            answer = conn.getresponse()
            status, payload = answer.status, answer.read()
            conn.close()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/x-amz-json-1.1")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(moto_url: str) -> Iterator[CountingProxy]:
    counting = CountingProxy(moto_url)
    yield counting
    counting.close()


def source(proxy: CountingProxy, cache: Path, now: float = NOW, **kwargs: Any) -> BillingSource:
    return BillingSource(
        target=AwsTarget(endpoint_url=proxy.url),
        cache_dir=cache,
        clock=lambda: now,
        max_attempts=1,
        **kwargs,
    )


# -- the tests ------------------------------------------------------------------------------------


async def test_every_page_is_read_and_the_sum_equals_the_seeded_bill(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    seeded = seed_bill(moto_url, NOW)
    billing = source(proxy, aws_env)
    data = await billing.refresh()
    assert data is not None and proxy.requests == 2 and data.pages == 2
    # The second request carried the first page's token; both asked for the same query.
    first, second = proxy.bodies
    assert "NextPageToken" not in first and second["NextPageToken"] == "page-2"
    assert first["TimePeriod"] == {"Start": "2026-12-01", "End": "2026-12-04"}
    assert first["Granularity"] == "DAILY"
    assert first["GroupBy"] == [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}]
    assert first["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Bedrock"]}}
    assert sorted(first["Metrics"]) == ["UnblendedCost", "UsageQuantity"]
    summary = summarize(data, UsageTypeMap([HAIKU3, LLAMA, SONNET]))
    assert summary.month_to_date_usd == pytest.approx(seeded)
    assert summary.through == "2026-12-03"
    assert summary.by_model[LLAMA] == pytest.approx(0.54 + 0.216 + 0.324)
    assert summary.by_model[HAIKU3] == pytest.approx(0.25 + 1.25 + 0.05)
    assert summary.by_model[SONNET] == pytest.approx(0.375)
    assert summary.by_model[UNMATCHED] == pytest.approx(40.0)
    assert data.estimated_days == ("2026-12-03",)
    health = billing.health()
    assert health.status == OK and health.region == "us-east-1"
    # Two pages every 6 hours: 8 requests a day.
    assert billing.cost_per_day_usd() == pytest.approx(0.08)


async def test_a_second_run_reads_the_cache_and_sends_no_request(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    seeded = seed_bill(moto_url, NOW)
    first = await source(proxy, aws_env).refresh()
    assert proxy.requests == 2
    later = source(proxy, aws_env, now=NOW + 5 * 3600)
    again = await later.refresh()
    assert proxy.requests == 2, "a fresh cache must not cost a request"
    assert again == first and later.requests == 0
    assert later.cache_age_s() == pytest.approx(5 * 3600)
    assert sum(row.usd for row in again.rows) == pytest.approx(seeded)
    cached = json.loads(later.cache_path.read_text())
    assert cached["version"] == CACHE_VERSION


async def test_the_cache_expires_after_the_refresh_interval_and_with_the_month(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    seed_bill(moto_url, NOW)
    await source(proxy, aws_env, refresh_h=2).refresh()
    assert proxy.requests == 2
    await source(proxy, aws_env, now=NOW + 2 * 3600 - 1, refresh_h=2).refresh()
    assert proxy.requests == 2
    expired = source(proxy, aws_env, now=NOW + 2 * 3600 + 1, refresh_h=2)
    await expired.refresh()
    # The same query again (moto answers it as before): both pages.
    assert proxy.requests == 4 and expired.data is not None
    assert expired.data.fetched_at == NOW + 2 * 3600 + 1
    # A refresh interval below one hour is raised to one hour.
    assert source(proxy, aws_env, refresh_h=0.1).refresh_h == 1.0
    # A new month needs a new query whatever the cache's age.
    next_month = datetime(2027, 1, 1, 0, 30, tzinfo=UTC).timestamp()
    await source(proxy, aws_env, now=next_month, refresh_h=24).refresh()
    assert proxy.bodies[-1]["TimePeriod"] == {"Start": "2027-01-01", "End": "2027-01-02"}


async def test_a_corrupt_cache_is_ignored_with_a_notice(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    seeded = seed_bill(moto_url, NOW)
    billing = source(proxy, aws_env)
    billing.cache_path.parent.mkdir(parents=True)
    billing.cache_path.write_text('{"version": 1, "data": {"rows": [["2026-12-01", 3')
    data = await billing.refresh()
    assert [notice for notice in billing.notices if "corrupt" in notice]
    assert str(billing.cache_path) in billing.notices[0]
    assert data is not None and sum(r.usd for r in data.rows) == pytest.approx(seeded)
    # ... and replaced by a good one.
    assert read_cache(billing.cache_path) == (data, None)
    billing.cache_path.write_text(json.dumps({"version": 1, "data": {"rows": [["x"]]}}))
    assert read_cache(billing.cache_path)[0] is None


async def test_access_denied_is_a_state_and_the_last_bill_stays(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    proxy.deny = True
    billing = source(proxy, aws_env)
    assert await billing.refresh() is None
    health = billing.health()
    assert health.status == ACCESS_DENIED
    assert "ce:GetCostAndUsage" in health.message and "not enabled" in health.message
    # Asked again at the refresh interval, not in a loop (each request is billed).
    assert billing.next_refresh_in() == pytest.approx(6 * 3600)
    # With a bill cached earlier, the bill stays on screen, with its age.
    proxy.deny = False
    seed_bill(moto_url, NOW)
    await source(proxy, aws_env, now=NOW - 7 * 3600).refresh()
    proxy.deny = True
    denied = source(proxy, aws_env)
    data = await denied.refresh()
    assert data is not None and denied.health().status == ACCESS_DENIED
    assert "showing the bill fetched 7.0h ago" in denied.health().message


async def test_without_credentials_the_state_says_so(
    proxy: CountingProxy, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    billing = source(proxy, aws_env)
    assert await billing.refresh() is None
    assert billing.health().status == NO_CREDENTIALS and proxy.requests == 0


async def test_the_live_loop_refreshes_once_and_sleeps_until_the_cache_expires(
    moto_url: str, proxy: CountingProxy, aws_env: Path
) -> None:
    import asyncio

    seed_bill(moto_url, NOW)
    billing = source(proxy, aws_env)
    billing.run_in_background()
    deadline = time.monotonic() + 20
    while billing.data is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert billing.data is not None
    assert billing.next_refresh_in() == pytest.approx(6 * 3600)
    await billing.stop()
    assert proxy.requests == 2


# -- the real program -----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
    )


def cli_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.toml"
    if not config.exists():
        config.write_text("# no settings\n")
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "BEDROCK_TOP_CACHE_DIR": str(tmp_path / "cache"),
        "BEDROCK_TOP_CONFIG": str(tmp_path / "config.toml"),
    }


@pytest.fixture
def usage_log(tmp_path: Path) -> Path:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_lines(
        log,
        record(epoch=now - 30, model_id=LLAMA, input_tokens=2000, output_tokens=500),
        record(epoch=now - 20, model_id=HAIKU3, input_tokens=1000, output_tokens=100),
        record(epoch=now - 10, model_id="mistral.mistral-large-2407-v1:0", input_tokens=10),
    )
    return log


def test_once_json_reports_the_bill_and_prices_a_model_from_it(
    moto_url: str, proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    now = time.time()
    seeded = seed_bill(moto_url, now)
    env = cli_env(tmp_path)
    (tmp_path / "config.toml").write_text(
        '[billing.usage_types]\n"USE1-ProvisionedThroughput-ModelUnits" = "my.provisioned"\n'
    )
    args = ("--once", "--json", "--billing", "--no-cloudwatch", "--endpoint-url", proxy.url)
    result = run_cli(*args, "--log", str(usage_log), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    billing = report["billing"]
    assert billing["month_to_date_usd"] == pytest.approx(seeded)
    assert billing["through"] == month_days(now)[-1].isoformat()
    assert billing["by_model"][LLAMA] == pytest.approx(0.54 + 0.216 + 0.324)
    # The configured usage type goes to its model; Sonnet's cache writes name a model no source
    # has seen (not in the log, not configured): listed as unmatched, not dropped.
    assert billing["by_model"]["my.provisioned"] == pytest.approx(40.0)
    assert billing["by_model"]["unmatched"] == pytest.approx(0.375)
    unmatched = [e["usage_type"] for e in billing["usage_types"] if e["model_id"] is None]
    assert unmatched == ["USE1-Claude4.5Sonnet-cache-write-input-token-count"]
    kinds = {entry["usage_type"]: entry["kind"] for entry in billing["usage_types"]}
    assert kinds["USE1-Claude3Haiku-cache-read-input-token-count"] == "cache_read"
    assert kinds["USE1-ProvisionedThroughput-ModelUnits"] == "other"
    assert sum(entry["usd"] for entry in billing["usage_types"]) == pytest.approx(seeded)
    # Llama has no built-in price: priced from the bill at (0.54 + 0.324) / 1.2M and 0.216 / 0.3M.
    models = {entry["model_id"]: entry for entry in report["models"]}
    assert models[LLAMA]["local"]["cost_usd"] == pytest.approx((2000 * 0.72 + 500 * 0.72) / 1e6)
    assert billing["learned_prices"][LLAMA]["as_of"] == billing["through"]
    # Claude 3 Haiku keeps its built-in price; an unknown model stays unpriced, never $0.
    assert models[HAIKU3]["local"]["cost_usd"] == pytest.approx((1000 * 0.25 + 100 * 1.25) / 1e6)
    assert models["mistral.mistral-large-2407-v1:0"]["local"]["cost_usd"] is None
    state = report["sources"]["billing"]
    assert state["state"] == "ok" and state["requests"] == 2
    assert state["refresh_cost_per_day_usd"] == pytest.approx(0.08)
    # The estimate for the same days sits beside the bill, never added to it.
    assert billing["estimates"]["local"]["usd"] >= 0
    assert billing["estimates"]["days"] == [month_days(now)[0].isoformat(), billing["through"]]
    # The second run reads the cache: no request at all.
    again = run_cli(*args, "--log", str(usage_log), env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sources"]["billing"]["requests"] == 0
    table = run_cli(*args[2:], "--once", "--log", str(usage_log), env=env)
    assert table.returncode == 0, table.stderr
    assert f"billed month to date ${seeded:,.2f} through {billing['through']}" in table.stdout
    assert "billing: Cost Explorer — ok" in table.stdout
    assert proxy.requests == 2


def test_once_json_without_access_reports_the_state_and_keeps_the_rest(
    proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    proxy.deny = True
    args = ("--once", "--json", "--billing", "--no-cloudwatch", "--endpoint-url", proxy.url)
    result = run_cli(*args, "--log", str(usage_log), env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["billing"] is None
    assert report["sources"]["billing"]["state"] == "access-denied"
    assert "ce:GetCostAndUsage" in report["sources"]["billing"]["message"]
    assert report["totals"]["local"]["requests"] == 3


def test_billing_is_off_unless_asked_for(
    proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    args = ("--once", "--json", "--no-cloudwatch", "--endpoint-url", proxy.url)
    report = json.loads(run_cli(*args, "--log", str(usage_log), env=cli_env(tmp_path)).stdout)
    assert "billing" not in report and "billing" not in report["sources"]
    assert proxy.requests == 0


def test_prices_lists_the_price_in_force_and_where_it_came_from(
    moto_url: str, proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    seed_bill(moto_url, time.time())
    env = cli_env(tmp_path)
    (tmp_path / "config.toml").write_text(
        f'models = ["{SONNET}"]\n'
        '[pricing."anthropic.claude-3-haiku-20240307-v1:0"]\n'
        "input_per_mtok = 0.2\noutput_per_mtok = 1.0\n"
    )
    base = ("prices", "--billing", "--endpoint-url", proxy.url, "--log", str(usage_log))
    result = run_cli(*base, "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["model_id"]: row for row in json.loads(result.stdout)["models"]}
    assert rows[LLAMA]["origin"] == "learned" and rows[LLAMA]["source"].startswith(
        "learned from billing 20"
    )
    assert rows[LLAMA]["input_per_mtok"] == pytest.approx(0.72)
    assert rows[HAIKU3]["origin"] == "config" and rows[HAIKU3]["input_per_mtok"] == 0.2
    assert rows[SONNET]["origin"] == "built-in"  # configured, and in the bill
    assert rows["mistral.mistral-large-2407-v1:0"]["origin"] == "unpriced"
    table = run_cli(*base, env=env)
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith(LLAMA))
    assert "learned from billing" in line and "0.72" in line


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_screen_shows_the_bill_beside_the_estimate_in_a_real_terminal(
    moto_url: str, proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    from tests.test_tmux import Tmux

    seeded = seed_bill(moto_url, time.time())
    env = cli_env(tmp_path)
    (tmp_path / "config.toml").write_text(
        '[[budgets]]\nname = "on the bill"\nperiod = "month"\nlimit_usd = 100.0\n'
        'source = "billing"\n'
    )
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    command = (
        f"env {exports} {shlex.quote(sys.executable)} -m monitor --billing --no-cloudwatch"
        f" --endpoint-url {proxy.url} --log {shlex.quote(str(usage_log))}"
    )
    session = Tmux(160, 40, command)
    try:

        def llama_row(text: str) -> str:
            rows = [line for line in text.splitlines() if "llama3-1-70b" in line]
            return next((line for line in rows if "billed" not in line), "")

        # Whatever width the tmux server gives the window, these are on screen. Llama has no
        # built-in price: its row is priced from the bill, and the budget on the bill (billed
        # through yesterday plus the estimate since) gets its gauge once it is evaluated.
        screen = session.wait_for(
            lambda text: "month to date" in text and "%" in llama_row(text), timeout=30
        )
        assert f"month to date ${seeded:,.2f}" in screen
        assert "estimates for the same days: local" in screen
        assert "BILL ok" in screen
        assert "unmatched (2 usage types)" in screen
        assert "unpriced" not in llama_row(screen) and "$0.0018" in llama_row(screen)
        session.keys("q")
        session.wait_for(lambda text: "month to date" not in text, timeout=10)
    finally:
        session.close()
    assert proxy.requests == 2


async def test_the_live_bill_is_read_as_models_with_cloudwatch_beside_it(
    moto_url: str, proxy: CountingProxy, aws_env: Path, tmp_path: Path, usage_log: Path
) -> None:
    import asyncio

    import boto3

    from monitor.cli import parse_args
    from monitor.live_billing import LiveBilling
    from monitor.session import open_session

    now = time.time()
    seed_bill(moto_url, now)
    # CloudWatch saw 1M input and 0.25M output tokens of Llama on the bill's last day.
    # (In the region the session resolves: aws_env's eu-west-1. The bill is us-east-1's.)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="eu-west-1")
    for metric, value in (("InputTokenCount", 1_000_000), ("OutputTokenCount", 250_000)):
        cloudwatch.put_metric_data(
            Namespace="AWS/Bedrock",
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": "ModelId", "Value": LLAMA}],
                    "Timestamp": datetime.fromtimestamp(now - 120, UTC),
                    "Value": value,
                }
            ],
        )
    config = tmp_path / "config.toml"
    config.write_text(
        '[[budgets]]\nname = "llama on the bill"\nmodels = ["meta.*"]\nperiod = "month"\n'
        'limit_usd = 10.0\nsource = "billing"\n'
    )
    args = parse_args(
        ["--billing", "--endpoint-url", proxy.url, "--log", str(usage_log), "--config", str(config)]
    )
    session = open_session(args, now=now)
    try:
        session.feed.catch_up()
        source = session.open_billing()
        assert source is not None
        live = LiveBilling(session, source, cloudwatch_on=True)
        await live.start()
        deadline = time.monotonic() + 30
        panel = None
        while time.monotonic() < deadline:
            panel = live.billing_panel(time.time())
            if panel is not None and panel.cloudwatch_usd is not None:
                break
            await asyncio.sleep(0.1)
        assert panel is not None and panel.cloudwatch_usd is not None
        lines = {line.name: line for line in panel.lines}
        # CloudWatch's tokens priced at the learned $0.72/M: (1M + 0.25M) x 0.72 / 1M.
        assert lines[LLAMA].cloudwatch_usd == pytest.approx(0.9)
        assert lines[LLAMA].billed_usd == pytest.approx(1.08)
        assert lines[LLAMA].local_usd == pytest.approx((2000 + 500) * 0.72 / 1e6)
        assert lines["unmatched"].billed_usd == pytest.approx(40.375)
        assert live.billing_state().state == "ok"
        price = session.price_book.price_for(LLAMA)
        assert price is not None and price.origin == "learned"
        [budget] = session.budget_statuses(time.time())
        assert budget.source == "billing" and budget.estimate_source == "local"
        await live.stop()
    finally:
        session.close()
    assert proxy.requests == 2


def test_once_json_puts_cloudwatchs_estimate_for_the_bills_days_beside_it(
    moto_url: str, proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    import boto3

    now = time.time()
    seeded = seed_bill(moto_url, now)
    cloudwatch = boto3.client(
        "cloudwatch",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    cloudwatch.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "ModelId", "Value": LLAMA}],
                "Timestamp": datetime.fromtimestamp(now - 120, UTC),
                "Value": value,
            }
            for metric, value in (("InputTokenCount", 1_000_000), ("OutputTokenCount", 250_000))
        ],
    )
    args = ("--once", "--json", "--billing", "--endpoint-url", proxy.url, "--log", str(usage_log))
    result = run_cli(*args, env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    estimates = json.loads(result.stdout)["billing"]["estimates"]
    cloud = estimates["cloudwatch"]
    assert cloud["by_model"][LLAMA] == pytest.approx(0.9)  # 1.25M tokens at the learned $0.72/M
    assert cloud["difference_usd"] == pytest.approx(seeded - 0.9)
    assert estimates["local"]["by_model"][LLAMA] == pytest.approx(2500 * 0.72 / 1e6)


def test_with_several_regions_cloudwatchs_estimate_covers_them_all(
    moto_url: str, proxy: CountingProxy, tmp_path: Path, usage_log: Path
) -> None:
    import boto3

    now = time.time()
    seeded = seed_bill(moto_url, now)
    # The bill is the account's: the same 1.25M tokens, split over two regions.
    for region in ("us-east-1", "eu-west-1"):
        cloudwatch = boto3.client(
            "cloudwatch",
            endpoint_url=moto_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        cloudwatch.put_metric_data(
            Namespace="AWS/Bedrock",
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": "ModelId", "Value": LLAMA}],
                    "Timestamp": datetime.fromtimestamp(now - 120, UTC),
                    "Value": value,
                }
                for metric, value in (("InputTokenCount", 500_000), ("OutputTokenCount", 125_000))
            ],
        )
    args = ("--once", "--json", "--billing", "--endpoint-url", proxy.url, "--log", str(usage_log))
    result = run_cli(*args, "--region", "us-east-1,eu-west-1", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    cloud = json.loads(result.stdout)["billing"]["estimates"]["cloudwatch"]
    assert cloud["by_model"][LLAMA] == pytest.approx(0.9)  # both regions, at the learned $0.72/M
    assert cloud["difference_usd"] == pytest.approx(seeded - 0.9)

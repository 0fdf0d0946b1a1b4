"""The CloudWatch poller against a real CloudWatch API on loopback (moto's server), with a fault
proxy of our own between the aiobotocore client and moto."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.cloudwatch_store import (
    CACHE_READ,
    INPUT_TOKENS,
    INVOCATIONS,
    LATENCY,
    OUTPUT_TOKENS,
    SUM,
)
from monitor.sources.cloudwatch import (
    ACCESS_DENIED,
    ERROR,
    NO_CREDENTIALS,
    OK,
    PCT_FALLBACK,
    PCT_SUPPORTED,
    STALE,
    CloudWatchSource,
    Schedule,
    cloudwatch_report,
)
from tests.moto_process import moto_url_of_module, reset_moto

MODELS = [
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-haiku-4-5-20251001-v1:0",
    "amazon.nova-lite-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
]
FAST = Schedule(revise_s=600, backfill_s=3600, percentile_retry_s=900)


# -- a real CloudWatch API on loopback -----------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials; no real AWS files; no instance-metadata lookups off this machine."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def cw(moto_url: str, aws_env: None) -> Any:
    """A boto3 client to seed moto; moto's state is reset for every test."""
    reset_moto(moto_url)
    return boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")


def minute_start(offset_minutes: int, now: float) -> dt.datetime:
    base = int(now // 60) * 60 + 60 * offset_minutes
    return dt.datetime.fromtimestamp(base, tz=dt.UTC)


def put(cw: Any, model: str, metric: str, minute: dt.datetime, value: float) -> None:
    cw.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "ModelId", "Value": model}],
                "Timestamp": minute + dt.timedelta(seconds=20),
                "Value": value,
            }
        ],
    )


def seed_usage(cw: Any, now: float) -> dict[str, dict[str, float]]:
    """A few minutes of traffic for each model; returns the expected sums."""
    expected: dict[str, dict[str, float]] = {}
    for index, model in enumerate(MODELS):
        totals = expected.setdefault(model, Counter())
        for minute in (-20, -12, -5):
            requests = 3 + index
            values = {
                INVOCATIONS: requests,
                INPUT_TOKENS: 1000 * (index + 1) + minute,
                OUTPUT_TOKENS: 200 * (index + 1),
                LATENCY: 100.0 * (index + 1),
                "InvocationThrottles": 1,
            }
            # The two spellings of the cache metrics, as seen in the wild.
            cache_name = "CacheReadInputTokenCount" if index % 2 else "CacheReadInputTokens"
            values[cache_name] = 50
            data = [
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "ModelId", "Value": model}],
                    "Timestamp": minute_start(minute, now) + dt.timedelta(seconds=10),
                    "Value": value,
                }
                for name, value in values.items()
            ]
            cw.put_metric_data(Namespace="AWS/Bedrock", MetricData=data)
            for name, value in values.items():
                totals[CACHE_READ if name.startswith("CacheRead") else name] += value
    return expected


# -- a fault-injection proxy between the client and moto ---------------------------------------


class FaultProxy:
    """HTTP reverse proxy on 127.0.0.1 that forwards to moto, or injects a fault per request.

    ``fail_next`` queues one-off faults; ``mode`` applies to every request until cleared. Faults:
    throttle (400 Throttling), 500, access-denied, drop (close without answering), delay (sleep
    ``delay_s`` then forward), paginate (split GetMetricData answers into two NextToken pages),
    partial (mark the first result InternalError and add a message), percentiles (answer queries
    for p50/p90/p99 with made-up values, as real CloudWatch would, instead of moto's HTTP 500).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.queue: deque[str] = deque()
        self.mode: str | None = None
        self.delay_s = 0.0
        self.requests: list[tuple[str, dict[str, Any], str]] = []  # (target, body, fault)
        self._pages: dict[str, bytes] = {}
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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, *faults: str) -> None:
        with self._lock:
            self.queue.extend(faults)

    def targets(self, fault: str | None = None) -> list[str]:
        return [t for t, _, f in self.requests if fault is None or f == fault]

    def metric_data_bodies(self) -> list[dict[str, Any]]:
        return [b for t, b, f in self.requests if t.endswith("GetMetricData") and f == "pass"]

    def _next_fault(self) -> str:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
            return self.mode or "pass"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0"))
        raw = handler.rfile.read(length)
        target = handler.headers.get("X-Amz-Target", "")
        body = json.loads(raw or b"{}")
        fault = self._next_fault()
        wants_percentiles = any(
            q.get("MetricStat", {}).get("Stat", "").startswith("p")
            for q in body.get("MetricDataQueries", [])
        )
        if fault in ("paginate", "partial") and not target.endswith("GetMetricData"):
            fault = "pass"
        if fault == "percentiles" and not wants_percentiles:
            fault = "pass"
        with self._lock:
            self.requests.append((target, dict(body), fault))
        if fault == "drop":
            handler.close_connection = True
            return
        if fault == "throttle":
            self._reply(
                handler,
                400,
                {"__type": "Throttling", "message": "Rate exceeded"},
                query_error="Throttling;Sender",
            )
            return
        if fault == "500":
            self._reply(handler, 500, {"__type": "InternalFailure", "message": "injected"})
            return
        if fault == "access-denied":
            self._reply(
                handler,
                400,
                {"__type": "AccessDenied", "message": "not authorized"},
                query_error="AccessDenied;Sender",
            )
            return
        if fault == "percentiles":
            self._reply(handler, 200, _fake_percentiles(body))
            return
        if fault == "delay":
            time.sleep(self.delay_s)
        token = body.pop("NextToken", None)
        if fault == "paginate" and token in self._pages:
            self._send(handler, 200, self._pages.pop(token))
            return
        status, payload = self._forward(handler, json.dumps(body).encode())
        if fault in ("paginate", "partial") and status == 200:
            answer = json.loads(payload)
            results = answer.get("MetricDataResults", [])
            if fault == "paginate" and len(results) > 1:
                half = len(results) // 2
                token = f"page-{len(self.requests)}"
                self._pages[token] = json.dumps({"MetricDataResults": results[half:]}).encode()
                answer = {"MetricDataResults": results[:half], "NextToken": token}
            elif fault == "partial" and results:
                results[0]["StatusCode"] = "InternalError"
                answer["Messages"] = [{"Code": "MaxQueryTimeRangeExceed", "Value": "injected"}]
            payload = json.dumps(answer).encode()
        self._send(handler, status, payload)

    def _forward(self, handler: BaseHTTPRequestHandler, raw: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=20)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host",)}
        headers["Content-Length"] = str(len(raw))
        conn.request("POST", handler.path, body=raw, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        query_error: str | None = None,
    ) -> None:
        extra = {"x-amzn-query-error": query_error} if query_error else {}
        self._send(handler, status, json.dumps(body).encode(), extra)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        extra: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/x-amz-json-1.0")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


def _fake_percentiles(body: dict[str, Any]) -> dict[str, Any]:
    start = float(body["StartTime"])
    results = []
    for query in body["MetricDataQueries"]:
        stat = query["MetricStat"]["Stat"]
        value = {"p50": 100.0, "p90": 300.0, "p99": 900.0}.get(stat, 1.0)
        minute = (int(start) // 60 + 1) * 60
        results.append(
            {"Id": query["Id"], "Timestamps": [minute], "Values": [value], "StatusCode": "Complete"}
        )
    return {"MetricDataResults": results}


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(moto_url)
    yield fault_proxy
    fault_proxy.close()


def make_source(url: str, **kwargs: Any) -> CloudWatchSource:
    options: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint_url": url,
        "schedule": FAST,
        "max_attempts": 2,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 2.0,
    }
    options.update(kwargs)
    return CloudWatchSource(**options)


# -- the tests ------------------------------------------------------------------------------------


async def test_sums_per_model_equal_the_seeded_data(cw: Any, moto_url: str) -> None:
    now = time.time()
    expected = seed_usage(cw, now)
    source = make_source(moto_url)
    try:
        await source.poll_once(now)
        state = source.state
        assert state.status == OK, state.message
        assert sorted(source.store.model_ids()) == sorted(MODELS)
        for model in MODELS:
            totals = source.store.totals(model, now - 3600, now + 60)
            assert totals.requests == expected[model][INVOCATIONS]
            assert totals.input_tokens == expected[model][INPUT_TOKENS]
            assert totals.output_tokens == expected[model][OUTPUT_TOKENS]
            assert totals.cache_read_input_tokens == expected[model][CACHE_READ]
            assert totals.throttles == expected[model]["InvocationThrottles"]
            assert totals.latency_ms.avg == pytest.approx(expected[model][LATENCY] / 3)
        # moto refuses percentile statistics: average and maximum remain, and the state says so.
        assert state.percentiles == PCT_FALLBACK
        assert "average and maximum" in state.percentiles_message
        assert state.calls >= 1 and state.metrics_requested > 0
        assert state.cost_usd == pytest.approx(state.metrics_requested * 0.01 / 1000)
        assert state.projected_cost_per_month_usd == pytest.approx(
            state.projected_cost_per_hour_usd * 730
        )
    finally:
        await source.stop()


async def test_more_than_500_queries_are_split_across_calls(cw: Any, proxy: FaultProxy) -> None:
    now = time.time()
    minute = minute_start(-3, now)
    metrics = [
        INVOCATIONS, INPUT_TOKENS, OUTPUT_TOKENS, "CacheReadInputTokens", "CacheWriteInputTokens",
        "InvocationClientErrors", "InvocationServerErrors", "InvocationThrottles",
        "OutputImageCount", "EstimatedTPMQuotaUsage", LATENCY, "TimeToFirstToken",
    ]  # fmt: skip
    models = [f"us.anthropic.model-{i:02d}-v1:0" for i in range(40)]
    data = [
        {
            "MetricName": metric,
            "Dimensions": [{"Name": "ModelId", "Value": model}],
            "Timestamp": minute,
            "Value": 1.0,
        }
        for model in models
        for metric in metrics
    ]
    for offset in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/Bedrock", MetricData=data[offset : offset + 500])
    # moto answers a 500-query call by scanning every datapoint per query: seconds on a busy
    # machine. This test is about splitting, not timeouts: the default read timeout.
    source = make_source(proxy.url, read_timeout_s=20.0)
    try:
        await source.poll_once(now)
        assert source.state.status == OK, source.state.message
        minute_calls = [
            b for b in proxy.metric_data_bodies()
            if all(q["MetricStat"]["Period"] == 60 for q in b["MetricDataQueries"])
            and not any(q["MetricStat"]["Stat"].startswith("p") for q in b["MetricDataQueries"])
        ]  # fmt: skip
        sizes = [len(b["MetricDataQueries"]) for b in minute_calls]
        # 40 models x 15 queries (12 metrics; latency and TTFT with several statistics).
        assert sum(sizes) == 600 and len(sizes) == 2 and max(sizes) <= 500
        for body in minute_calls:
            assert all(q["Id"][0].islower() for q in body["MetricDataQueries"])
        for model in models:
            assert source.store.sum(model, INVOCATIONS, now - 600, now + 60) == 1
            assert source.store.sum(model, "EstimatedTPMQuotaUsage", now - 600, now + 60) == 1
    finally:
        await source.stop()


async def test_revised_minutes_replace_rather_than_add(cw: Any, moto_url: str) -> None:
    now = time.time()
    model = MODELS[0]
    minute = minute_start(-4, now)
    put(cw, model, INVOCATIONS, minute, 5)
    source = make_source(moto_url)
    try:
        await source.poll_once(now)
        assert source.store.value(model, INVOCATIONS, SUM, minute.timestamp()) == 5
        # CloudWatch revises the minute (late datapoints arrive); the next poll sees 5 + 3.
        put(cw, model, INVOCATIONS, minute, 3)
        await source.poll_once(now + 60)
        assert source.store.value(model, INVOCATIONS, SUM, minute.timestamp()) == 8
        assert source.store.sum(model, INVOCATIONS, now - 3600, now + 120) == 8
    finally:
        await source.stop()


async def test_percentiles_are_tried_again_and_used_when_the_endpoint_gives_them(
    cw: Any, proxy: FaultProxy
) -> None:
    now = time.time()
    model = MODELS[0]
    put(cw, model, INVOCATIONS, minute_start(-2, now), 4)
    put(cw, model, LATENCY, minute_start(-2, now), 250)
    source = make_source(proxy.url)
    try:
        await source.poll_once(now)
        assert source.state.percentiles == PCT_FALLBACK
        refused = len([b for t, b, f in proxy.requests if f == "pass" and _has_pct(b)])
        assert refused == 1
        # Not asked again before the retry time (a refused query is not worth paying for).
        await source.poll_once(now + 60)
        assert len([b for t, b, f in proxy.requests if _has_pct(b)]) == 1
        # After the retry time the endpoint (here: the proxy) answers percentiles.
        proxy.mode = "percentiles"
        source.set_focus_model(model)
        await source.poll_once(now + FAST.percentile_retry_s + 60)
        assert source.state.percentiles == PCT_SUPPORTED
        series = source.store.points(model, LATENCY, "p99", now - 7200, now + 7200)
        assert series and series[0][1] == 900.0
        assert source.store.latency_minute(model, LATENCY, series[0][0]).p50 == 100.0
    finally:
        await source.stop()


def _has_pct(body: dict[str, Any]) -> bool:
    return any(q["MetricStat"]["Stat"].startswith("p") for q in body.get("MetricDataQueries", []))


async def test_throttling_is_retried_by_botocore(cw: Any, proxy: FaultProxy) -> None:
    now = time.time()
    put(cw, MODELS[1], INVOCATIONS, minute_start(-2, now), 6)
    source = make_source(proxy.url, max_attempts=3)
    try:
        proxy.fail_next("throttle", "throttle")
        await source.poll_once(now)
        assert source.state.status == OK, source.state.message
        assert len(proxy.targets("throttle")) == 2
        assert source.store.sum(MODELS[1], INVOCATIONS, now - 600, now + 60) == 6
    finally:
        await source.stop()


@pytest.mark.parametrize("fault", ["500", "drop", "delay", "throttle"])
async def test_faults_mark_the_source_stale_keep_values_and_recover(
    cw: Any, proxy: FaultProxy, fault: str
) -> None:
    now = time.time()
    model = MODELS[2]
    put(cw, model, INVOCATIONS, minute_start(-3, now), 9)
    source = make_source(proxy.url, read_timeout_s=0.5)
    try:
        await source.poll_once(now)
        assert source.state.status == OK
        proxy.delay_s = 1.5
        proxy.mode = fault
        clock_after = now + 60
        await source.poll_once(clock_after)
        state = source.state
        assert state.status == STALE, state.message
        assert "last good data 60 s ago" in state.message
        assert state.age_s is not None and state.age_s >= 0
        assert source.effective_interval_s() >= FAST.interval_s
        # The last values stay on screen.
        assert source.store.sum(model, INVOCATIONS, now - 600, now + 60) == 9
        # The endpoint heals: the next poll recovers by itself, and sees new data.
        proxy.mode = None
        put(cw, model, INVOCATIONS, minute_start(-1, now), 2)
        await source.poll_once(now + 120)
        assert source.state.status == OK, source.state.message
        assert source.store.sum(model, INVOCATIONS, now - 600, now + 60) == 11
    finally:
        await source.stop()


async def test_pagination_and_per_query_problems(cw: Any, proxy: FaultProxy) -> None:
    now = time.time()
    expected = seed_usage(cw, now)
    source = make_source(proxy.url)
    try:
        proxy.mode = "paginate"
        await source.poll_once(now)
        assert source.state.status == OK, source.state.message
        second_pages = [b for _, b, f in proxy.requests if f == "paginate" and b.get("NextToken")]
        assert second_pages
        assert source.state.calls == len([t for t in proxy.targets() if "GetMetricData" in t])
        for model in MODELS:
            assert (
                source.store.sum(model, INPUT_TOKENS, now - 3600, now + 60)
                == (expected[model][INPUT_TOKENS])
            )
        proxy.mode = "partial"
        await source.poll_once(now + 60)
        state = source.state
        assert state.status == OK
        assert any("InternalError" in issue for issue in state.issues), state.issues
        assert "query problems" in state.message
    finally:
        await source.stop()


async def test_access_denied_is_reported_and_retried_slowly(cw: Any, proxy: FaultProxy) -> None:
    source = make_source(proxy.url)
    try:
        proxy.mode = "access-denied"
        await source.poll_once(time.time())
        state = source.state
        assert state.status == ACCESS_DENIED
        assert "cloudwatch:GetMetricData" in state.message
        assert source.effective_interval_s() >= FAST.credentials_retry_s
        proxy.mode = None
        await source.poll_once(time.time())
        assert source.state.status == OK
    finally:
        await source.stop()


async def test_no_credentials_gives_a_clear_message(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, moto_url: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    source = make_source(moto_url)
    await source.poll_once()
    state = source.state
    assert state.status == NO_CREDENTIALS
    assert "no AWS credentials" in state.message and "--no-cloudwatch" in state.message
    assert source.effective_interval_s() >= FAST.credentials_retry_s
    # Credentials appear (aws configure, sso login): the next attempt connects by itself.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    await source.poll_once()
    assert source.state.status == OK, source.state.message
    await source.stop()


async def test_no_region_says_how_to_set_one(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    source = CloudWatchSource(region=None, endpoint_url="http://127.0.0.1:9")
    await source.poll_once()
    assert source.state.status == ERROR
    assert "--region" in source.state.message


async def test_schedule_polls_only_what_is_on_screen_fast(cw: Any, proxy: FaultProxy) -> None:
    now = time.time()
    seed_usage(cw, now)
    source = make_source(proxy.url)
    try:
        await source.poll_once(now)
        full_cost = source.metrics_requested
        source.set_visible_models([MODELS[0]])
        before = source.metrics_requested
        await source.poll_once(now + 60)
        one_model = source.metrics_requested - before
        assert 0 < one_model < full_cost / len(MODELS)
        bodies = proxy.metric_data_bodies()[-1:]
        models_asked = {
            d["Value"]
            for b in bodies
            for q in b["MetricDataQueries"]
            for d in q["MetricStat"]["Metric"]["Dimensions"]
        }
        assert models_asked == {MODELS[0]}
        source.set_paused(True)
        assert source.effective_interval_s() == FAST.interval_s * FAST.paused_factor
        delays = [source.next_delay() for _ in range(50)]
        assert min(delays) >= 0.9 * 300 and max(delays) <= 1.1 * 300 and len(set(delays)) > 1
        source.set_paused(False)
        source.set_visible_models(None)
        assert source.state.projected_metrics_per_hour > 0
    finally:
        await source.stop()


def test_report_sums_over_since(cw: Any, moto_url: str) -> None:
    now = time.time()
    expected = seed_usage(cw, now)
    models, source_state = cloudwatch_report(
        region="us-east-1",
        profile=None,
        endpoint_url=moto_url,
        since_epoch=now - 3600,
        now=now,
        max_attempts=2,
    )
    assert sorted(models) == sorted(MODELS)
    for model in MODELS:
        entry = models[model]
        assert entry["requests"] == expected[model][INVOCATIONS]
        assert entry["input_tokens"] == expected[model][INPUT_TOKENS]
        assert entry["output_tokens"] == expected[model][OUTPUT_TOKENS]
        assert entry["cache_read_input_tokens"] == expected[model][CACHE_READ]
        assert entry["throttles"] == 3
        assert entry["errors"] == 0
        assert entry["latency_ms"]["avg"] == pytest.approx(expected[model][LATENCY] / 3)
        assert entry["latency_ms"]["p50"] is None  # moto refuses percentiles
        assert set(entry["ttft_ms"]) == {"p50", "p90", "p99", "avg", "max"}
    assert source_state["state"] == OK
    assert source_state["region"] == "us-east-1"
    assert source_state["calls"] >= 1 and source_state["metrics_requested"] > 0
    assert source_state["estimated_cost_usd"] == pytest.approx(
        source_state["metrics_requested"] * 1e-5
    )
    # A window that excludes the oldest seeded minute.
    recent, _ = cloudwatch_report("us-east-1", None, moto_url, now - 15 * 60, now, max_attempts=2)
    assert recent[MODELS[0]]["requests"] == expected[MODELS[0]][INVOCATIONS] * 2 / 3


def test_report_disabled_and_without_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, moto_url: str
) -> None:
    models, state = cloudwatch_report("us-east-1", None, moto_url, 0, time.time(), enabled=False)
    assert models == {} and state["state"] == "disabled"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    models, state = cloudwatch_report("us-east-1", None, moto_url, 0, time.time())
    assert models == {} and state["state"] == NO_CREDENTIALS
    assert "no AWS credentials" in state["message"]


# -- the real program, end to end ------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def write_log(path: Path, now: float) -> None:
    from monitor.records import to_json_line
    from tests.conftest import record

    local = record(
        epoch=now - 120,
        request_id="req-local-1",
        model_id=MODELS[0],
        input_tokens=11,
        output_tokens=7,
        latency_ms=420.0,
    )
    path.write_bytes(to_json_line(local))


def run_once(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--json", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def test_once_json_end_to_end_keeps_the_two_sources_apart(
    cw: Any, moto_url: str, tmp_path: Path
) -> None:
    import os

    now = time.time()
    expected = seed_usage(cw, now)
    log = tmp_path / "usage.jsonl"
    write_log(log, now)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    report = run_once(
        ["--endpoint-url", moto_url, "--region", "us-east-1", "--log", str(log), "--since", "1h"],
        env,
    )
    cloud_state = report["sources"]["cloudwatch"]
    assert cloud_state["state"] == OK and cloud_state["region"] == "us-east-1"
    assert cloud_state["calls"] >= 1 and cloud_state["estimated_cost_usd"] > 0
    by_model = {entry["model_id"]: entry for entry in report["models"]}
    assert sorted(by_model) == sorted(MODELS)
    for model in MODELS:
        assert by_model[model]["cloudwatch"]["requests"] == expected[model][INVOCATIONS]
        assert by_model[model]["cloudwatch"]["input_tokens"] == expected[model][INPUT_TOKENS]
    # The local log's one request stays separate from CloudWatch's account-wide numbers.
    assert by_model[MODELS[0]]["local"]["requests"] == 1
    assert by_model[MODELS[0]]["local"]["input_tokens"] == 11
    assert by_model[MODELS[1]]["local"] is None
    total_requests = sum(expected[m][INVOCATIONS] for m in MODELS)
    assert report["totals"]["cloudwatch"]["requests"] == total_requests
    assert report["totals"]["local"]["requests"] == 1


def test_once_without_credentials_reports_the_log_and_says_why(
    aws_env: None, tmp_path: Path, moto_url: str
) -> None:
    import os

    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_log(log, now)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    env["PYTHONPATH"] = str(REPO)
    report = run_once(["--endpoint-url", moto_url, "--log", str(log)], env)
    assert report["sources"]["cloudwatch"]["state"] == NO_CREDENTIALS
    assert "no AWS credentials" in report["sources"]["cloudwatch"]["message"]
    assert report["totals"]["local"]["requests"] == 1
    assert [entry.get("cloudwatch") for entry in report["models"]] == [None]


async def test_background_task_polls_and_stops_cleanly(cw: Any, proxy: FaultProxy) -> None:
    import asyncio

    now = time.time()
    put(cw, MODELS[3], INVOCATIONS, minute_start(-2, now), 3)
    # An unreachable endpoint first: a network fault, not a set-up error, so it retries soon.
    source = make_source("http://127.0.0.1:9", schedule=Schedule(interval_s=10))
    await source.poll_once()
    assert source.state.status == ERROR and "unreachable" in source.state.message
    assert source.effective_interval_s() < FAST.credentials_retry_s
    await source.stop()
    source = make_source(proxy.url)
    task = source.run_in_background()
    try:
        for _ in range(100):  # bounded: at most ~5 s
            if source.state.status == OK:
                break
            await asyncio.sleep(0.05)
        assert source.state.status == OK, source.state.message
        assert source.store.sum(MODELS[3], INVOCATIONS, now - 600, now + 60) == 3
        assert not task.done()  # sleeping until the next poll, not spinning
    finally:
        await source.stop()
    assert task.done()


def test_once_budget_from_cloudwatch_counts_the_account_not_the_log(
    cw: Any, moto_url: str, tmp_path: Path
) -> None:
    import os

    from monitor.budgets import period_bounds

    now = time.time()
    # A timezone in which today began more than an hour ago, so the seeded minutes are today's.
    zone = next(
        tz
        for tz in ("UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin")
        if now - period_bounds("day", now, tz)[0] > 3600
    )
    expected = seed_usage(cw, now)
    log = tmp_path / "usage.jsonl"
    write_log(log, now)
    config = tmp_path / "config.toml"
    config.write_text(
        f'timezone = "{zone}"\n[[budgets]]\nname = "account tokens"\nperiod = "day"\n'
        'limit_tokens = 1000000\nsource = "cloudwatch"\n'
        '[[budgets]]\nname = "host tokens"\nperiod = "day"\nlimit_tokens = 1000000\n'
        'source = "local"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    report = run_once(
        [
            "--endpoint-url",
            moto_url,
            "--region",
            "us-east-1",
            "--log",
            str(log),
            "--config",
            str(config),
        ],
        env,
    )
    budgets = {budget["name"]: budget for budget in report["budgets"]}
    account = budgets["account tokens"]
    want = sum(expected[m][INPUT_TOKENS] + expected[m][OUTPUT_TOKENS] for m in MODELS)
    assert account["source"] == "cloudwatch"
    assert account["used_tokens"] == want
    assert account["fraction"] == pytest.approx(want / 1_000_000)
    host = budgets["host tokens"]
    assert host["source"] == "local" and host["used_tokens"] == 11 + 7

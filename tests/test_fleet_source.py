"""The fleet source against a real CloudWatch Logs and Bedrock API on loopback (moto's server),
with a fault proxy of the tests' own between the aiobotocore clients and moto."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.sources.aws import ACCESS_DENIED, DISABLED, OK, STALE
from monitor.sources.fleet import FleetSource
from monitor.sources.fleet_regions import fleet_regions_report
from tests.fleet_events import (
    GROUP,
    assumed_role,
    invocation_event,
    message,
    put_events,
    shipped_record,
    turn_on_invocation_logging,
)
from tests.moto_process import moto_url_of_module, reset_moto


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Dummy credentials, moto reset, and boto3 clients to seed it."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    reset_moto(moto_url)
    return {
        "logs": boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1"),
        "bedrock": boto3.client("bedrock", endpoint_url=moto_url, region_name="us-east-1"),
        "url": moto_url,
    }


class FaultProxy:
    """Forwards to moto, or answers one queued fault per request (throttle, access-denied,
    missing-group)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.faults: deque[str] = deque()
        self.seen: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        target = handler.headers.get("X-Amz-Target", handler.path)
        with self._lock:
            fault = self.faults.popleft() if self.faults else "pass"
            self.seen.append(f"{target} {fault}")
        errors = {
            "throttle": ("ThrottlingException", "Rate exceeded"),
            "access-denied": ("AccessDeniedException", "not authorized to logs:FilterLogEvents"),
        }
        if fault in errors:
            code, text = errors[fault]
            self.send(handler, 400, json.dumps({"__type": code, "message": text}).encode())
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=20)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        conn.request(method, handler.path, body=raw or None, headers=headers)
        response = conn.getresponse()
        self.send(handler, response.status, response.read(), response.getheader("Content-Type"))
        conn.close()

    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        content_type: str | None = "application/x-amz-json-1.1",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type or "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(aws: dict[str, Any]) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(aws["url"])
    yield fault_proxy
    fault_proxy.close()


def events_at(now: float, count: int, **fields: Any) -> list[tuple[float, str]]:
    """``count`` events spread over the 100 seconds before ``now``."""
    times = [now - 100 + i * 90 / count for i in range(count)]
    return [(epoch, message(invocation_event(epoch, **fields))) for epoch in times]


async def test_discovers_the_logging_group_and_polls_incrementally(aws: dict[str, Any]) -> None:
    turn_on_invocation_logging(aws["bedrock"])
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 5, input_tokens=100))
    source = FleetSource(endpoint_url=aws["url"], since=now - 3600, clock=lambda: now)
    try:
        await source.poll_once(now)
        assert source.health().status == OK, source.health().message
        assert source.log_groups == [GROUP]
        assert source.store.since_tally().requests == 5
        # Events arrive between polls, in a second stream too.
        later = now + 20
        put_events(aws["logs"], GROUP, "s2", events_at(later, 3, input_tokens=1000))
        await source.poll_once(later)
        tally = source.store.since_tally()
        assert tally.requests == 8
        assert tally.input_tokens == 5 * 100 + 3 * 1000
        # Polling again finds nothing new: the overlap is asked for again, never counted twice.
        await source.poll_once(later + 10)
        await source.poll_once(later + 20)
        assert source.store.since_tally().requests == 8
        assert source.events == 8
    finally:
        await source.stop()


async def test_a_late_event_inside_the_overlap_is_counted_once(aws: dict[str, Any]) -> None:
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 4))
    source = FleetSource(
        endpoint_url=aws["url"], log_groups=[GROUP], since=now - 3600, clock=lambda: now
    )
    try:
        await source.poll_once(now)
        # Ingested late: its time is before the newest event already seen.
        put_events(aws["logs"], GROUP, "s3", [(now - 99, message(invocation_event(now - 99)))])
        await source.poll_once(now + 10)
        await source.poll_once(now + 20)
        assert source.store.since_tally().requests == 5
    finally:
        await source.stop()


async def test_logging_off_says_so(aws: dict[str, Any]) -> None:
    source = FleetSource(endpoint_url=aws["url"], since=time.time() - 60)
    try:
        await source.poll_once()
        health = source.health()
        assert health.status == DISABLED
        assert "invocation logging is off in us-east-1" in health.message
        assert "--log-group" in health.message
    finally:
        await source.stop()


async def test_callers_and_apps_from_several_kinds_of_events(aws: dict[str, Any]) -> None:
    now = time.time()
    events = [
        *events_at(now, 3, caller_arn=assumed_role("bot", "i-1"), app="bot", output_tokens=10),
        *events_at(now, 2, caller_arn="arn:aws:iam::123456789012:user/alice", app="notebook"),
        (now - 5, shipped_record(now - 5, lambda_prefix=True, output_tokens=7)),
        (now - 4, "START RequestId: 8d1 Version: $LATEST"),
        (now - 3, "not json at all"),
    ]
    put_events(aws["logs"], GROUP, "mixed", events)
    source = FleetSource(
        endpoint_url=aws["url"], log_groups=[GROUP], since=now - 3600, clock=lambda: now
    )
    try:
        await source.poll_once(now)
        groups = source.groups
        assert groups.since_tally("caller", "bot/i-1").output_tokens == 30
        assert groups.since_tally("caller", "user/alice").requests == 2
        assert groups.since_tally("app", "batch-lambda").output_tokens == 7
        assert groups.since_tally("app", "notebook").requests == 2
        assert dict(source.rejected) == {"not JSON": 2}
        assert source.snapshot()["rejected_by_reason"] == {"not JSON": 2}
    finally:
        await source.stop()


async def test_live_tail_session_that_ends_is_resumed_with_a_backfill(
    aws: dict[str, Any],
) -> None:
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 6, input_tokens=10))
    source = FleetSource(
        endpoint_url=aws["url"],
        log_groups=[GROUP],
        since=now - 3600,
        live_tail=True,
        interval_s=2,
    )
    try:
        task = source.run_in_background()
        # moto's Live Tail hands out the stored events once and ends: the session ends, the
        # source asks for a backfill and reopens after a pause.
        deadline = time.monotonic() + 20
        while source.live_tail_sessions < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert source.live_tail_sessions >= 1
        put_events(aws["logs"], GROUP, "s2", events_at(time.time(), 2, input_tokens=1000))
        while source.store.since_tally().requests < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tally = source.store.since_tally()
        assert tally.requests == 8  # the tail's and the backfill's copies are one request each
        assert tally.input_tokens == 6 * 10 + 2 * 1000
        assert "live tail" in source.health().message
        assert not task.done()
    finally:
        await source.stop()


async def test_a_sampled_update_is_backfilled_to_the_exact_total(aws: dict[str, Any]) -> None:
    now = time.time()
    put_events(aws["logs"], GROUP, "busy", events_at(now, 700))
    source = FleetSource(
        endpoint_url=aws["url"], log_groups=[GROUP], since=now - 3600, live_tail=True
    )
    try:
        await source.start()
        await source._discover(now)  # the groups, without the first FilterLogEvents pass
        source._backfill = asyncio.Event()
        await source._tail_session()
        # At most 500 events per update: the update said it was sampled and asked for a backfill.
        assert source.store.since_tally().requests == 500
        assert source._backfill.is_set()
        assert "sampled" in source.health().message
        await source.poll_once()
        assert source.store.since_tally().requests == 700
    finally:
        await source.stop()


async def test_a_deleted_group_marks_the_source_stale_and_it_recovers(aws: dict[str, Any]) -> None:
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 2))
    source = FleetSource(
        endpoint_url=aws["url"], log_groups=[GROUP], since=now - 3600, clock=lambda: now
    )
    try:
        await source.poll_once(now)
        assert source.health().status == OK
        aws["logs"].delete_log_group(logGroupName=GROUP)
        await source.poll_once(now + 10)
        health = source.health()
        assert health.status == STALE
        assert "log group not found" in health.message and GROUP in health.message
        assert health.stale_since is not None
        assert source.store.since_tally().requests == 2  # what was read is kept
        put_events(aws["logs"], GROUP, "s1", events_at(now + 15, 1))
        await source.poll_once(now + 20)
        assert source.health().status == OK
        assert source.store.since_tally().requests == 3
    finally:
        await source.stop()


async def test_throttling_is_retried_and_access_denied_recovers(
    aws: dict[str, Any], proxy: FaultProxy
) -> None:
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 3))
    source = FleetSource(
        endpoint_url=proxy.url, log_groups=[GROUP], since=now - 3600, clock=lambda: now
    )
    try:
        proxy.faults.extend(["throttle", "throttle"])
        await source.poll_once(now)  # botocore retries the throttled requests
        assert source.health().status == OK
        assert sum("throttle" in line for line in proxy.seen) == 2
        assert source.store.since_tally().requests == 3

        proxy.faults.append("access-denied")  # not retried: botocore knows it will not pass
        await source.poll_once(now + 10)
        health = source.health()
        assert health.status == ACCESS_DENIED
        assert "logs:FilterLogEvents" in health.message
        assert source.next_delay() >= 60  # asking again at once would not fix it
        await source.poll_once(now + 20)  # the permission was granted meanwhile
        assert source.health().status == OK
        assert source.store.since_tally().requests == 3
    finally:
        await source.stop()


def test_report_mode_reads_the_window_once(aws: dict[str, Any]) -> None:
    turn_on_invocation_logging(aws["bedrock"])
    now = time.time()
    put_events(aws["logs"], GROUP, "s1", events_at(now, 4, output_tokens=11))
    source = fleet_regions_report([None], None, aws["url"], now - 3600, now)
    assert source.store.since_tally().output_tokens == 44
    snapshot = source.snapshot()
    assert snapshot["state"] == OK
    assert snapshot["requests"] == 2  # the logging configuration, one FilterLogEvents page
    assert snapshot["log_groups"] == [GROUP]

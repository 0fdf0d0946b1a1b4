"""Quotas as the live screen reads them: a real session (configuration file and usage log on
disk), the Service Quotas source against the local server, alarms through on_threshold, and no
work when nothing changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli import parse_args
from monitor.live_quotas import LiveQuotas
from monitor.session import Session, open_session
from monitor.sources.service_quotas import ServiceQuotasSource
from tests.conftest import record, write_lines
from tests.quotas_server import APPLIED, DEFAULTS, Quota, QuotasServer

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def quotas_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[QuotasServer]:
    with QuotasServer() as running:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", running.endpoint_url)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        yield running


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    alarms = tmp_path / "alarms.txt"
    config = tmp_path / "config.toml"
    config.write_text(
        f'timezone = "UTC"\non_threshold = ["sh", "-c", "env | grep BEDROCK_TOP_ >> {alarms}"]\n'
    )
    log = tmp_path / "usage.jsonl"
    newest_complete = int(time.time() // 60) * 60 - 60
    # 9 calls of 1000 input + 100 output tokens (1x burndown): 9900 tokens in the minute.
    write_lines(
        log,
        *(
            record(epoch=newest_complete + 1 + i, model_id=HAIKU, input_tokens=1000,
                   output_tokens=100, max_tokens=1000)
            for i in range(9)
        ),
    )  # fmt: skip
    args = parse_args(["--config", str(config), "--log", str(log), "--no-cloudwatch"])
    opened = open_session(args, live=True)
    opened.feed.catch_up()
    yield opened
    opened.close()


def test_live_quotas_from_service_quotas_ring_once_and_run_the_command(
    quotas_server: QuotasServer, session: Session, tmp_path: Path
) -> None:
    quotas_server.serve(
        applied=[
            Quota("L-8CE99163", "On-demand model inference tokens per minute for Anthropic "
                  "Claude 3 Haiku", 12_000),
        ]
    )  # fmt: skip
    source = ServiceQuotasSource(region="us-east-1")
    live = LiveQuotas(session, source, every_s=0)
    assert live.state_text() == "starting"
    asyncio.run(source.refresh())
    assert live.state_text() == "ok"
    now = time.time()
    if now % 60 > 55:  # the newest complete minute must not turn during the test
        time.sleep(61 - now % 60)
        now = time.time()
    tpm = live.model_quotas(now)[HAIKU].uses["tpm"]
    assert tpm is not None and tpm.used_peak_5m == 9900 and tpm.limit.quota_code == "L-8CE99163"
    alarms = live.crossed()
    assert [(a.final, a.message) for a in alarms] == [
        (False, f"{HAIKU}: 82% of its tokens per minute quota (9,900 of 12,000, local-estimate)")
    ]
    live.model_quotas(now + 1)
    assert live.crossed() == []
    written = tmp_path / "alarms.txt"
    deadline = time.monotonic() + 10
    while "BEDROCK_TOP_QUOTA_SOURCE" not in (written.read_text() if written.exists() else ""):
        assert time.monotonic() < deadline, "on_threshold did not run"
        time.sleep(0.05)
    text = written.read_text()
    assert "BEDROCK_TOP_QUOTA=tpm" in text and "BEDROCK_TOP_QUOTA_CODE=L-8CE99163" in text
    assert f"BEDROCK_TOP_MODEL={HAIKU}" in text and "BEDROCK_TOP_THRESHOLD=0.8" in text
    assert "used 100 (10%)" in live.reservation_hint(HAIKU)
    # Access withdrawn: the header says so, the limits fetched before stay.
    quotas_server.serve(deny=[APPLIED, DEFAULTS])
    asyncio.run(source.refresh())
    assert live.state_text() == "access denied"
    assert live.model_quotas(now + 2)[HAIKU].uses["tpm"] is not None


def test_nothing_is_evaluated_again_while_nothing_changes(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveQuotas(session, None, every_s=0)
    calls = []
    evaluate = session.quota_statuses

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(session, "quota_statuses", counted)
    now = (time.time() // 60) * 60 + 5
    for second in range(20):
        live.model_quotas(now + second)
    assert len(calls) == 1
    live.model_quotas(now + 60)  # a new minute
    assert len(calls) == 2
    assert live.state_text() == "config only"


def test_live_quotas_of_several_regions_show_the_tightest_and_each_region(
    quotas_server: QuotasServer, session: Session
) -> None:
    from monitor.sources.service_quotas_regions import ServiceQuotasRegions

    name = "On-demand model inference tokens per minute for Anthropic Claude 3 Haiku"
    quotas_server.serve(applied=[Quota("L-8CE99163", name, 12_000)], region="us-east-1")
    quotas_server.serve(applied=[Quota("L-8CE99163", name, 100_000)], region="eu-central-1")
    regions = ServiceQuotasRegions(["us-east-1", "eu-central-1"], ServiceQuotasSource)
    live = LiveQuotas(session, regions, every_s=0)

    async def refresh_all() -> None:
        await asyncio.gather(*(source.refresh() for source in regions.sources.values()))

    asyncio.run(refresh_all())
    assert live.state_text() == "ok"
    now = time.time()
    if now % 60 > 55:  # the newest complete minute must not turn during the test
        time.sleep(61 - now % 60)
        now = time.time()
    entry = live.model_quotas(now)[HAIKU]
    east, west = entry.regions["us-east-1"].uses["tpm"], entry.regions["eu-central-1"].uses["tpm"]
    assert east is not None and west is not None
    assert (east.limit.limit, west.limit.limit) == (12_000, 100_000)
    # Limits of two regions never add up: the gauge is the region throttled first.
    assert entry.uses["tpm"] == east and entry.tightest == east
    # One region denied: it says so, the other's quotas stay.
    quotas_server.serve(deny=[APPLIED, DEFAULTS], region="eu-central-1")
    asyncio.run(refresh_all())
    assert live.state_text() == "access denied"
    assert "eu-central-1" in live.state_message()
    assert live.model_quotas(now + 1)[HAIKU].uses["tpm"] == east

"""The Service Quotas source with a real aiobotocore client over HTTP to a local Service Quotas
server (tests/quotas_server.py), endpoints resolved as botocore resolves them, and the report end
to end: quotas served, CloudWatch (moto) seeded with EstimatedTPMQuotaUsage, a usage log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.records import to_json_line
from monitor.sources.aws import ACCESS_DENIED, ERROR, OK, AwsConnection, AwsTarget
from monitor.sources.service_quotas import ServiceQuotasSource
from tests.conftest import record
from tests.moto_process import moto_url_of_module, reset_moto
from tests.quotas_server import APPLIED, DEFAULTS, Quota, QuotasServer

REPO = Path(__file__).resolve().parents[1]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
QUOTAS = [
    Quota(
        "L-8CE99163",
        "On-demand model inference tokens per minute for Anthropic Claude 3 Haiku",
        400_000,
    ),
    Quota(
        "L-A1B2C3D4",
        "On-demand model inference requests per minute for Anthropic Claude 3 Haiku",
        100,
    ),
    Quota(
        "L-11111111",
        "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        200_000,
    ),
    Quota(
        "L-44444444",
        "Cross-region model inference tokens per day for Anthropic Claude Sonnet 4.5 V1",
        10_000_000,
    ),
    Quota("L-99999999", "Batch inference job size for Anthropic Claude 3 Haiku", 5),
]


@pytest.fixture(scope="module")
def quotas_server() -> Iterator[QuotasServer]:
    with QuotasServer() as running:
        yield running


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quotas_server: QuotasServer) -> Path:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = tmp_path / "aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", quotas_server.endpoint_url)
    return config


def refreshed(source: ServiceQuotasSource) -> ServiceQuotasSource:
    asyncio.run(source.refresh())
    return source


def test_applied_values_and_defaults_are_read_page_by_page(
    aws_env: Path, quotas_server: QuotasServer
) -> None:
    defaults = [Quota(q.code, q.name, 1.0) for q in QUOTAS] + [Quota("L-D", "default only", 7)]
    quotas_server.serve(applied=QUOTAS[:3], defaults=defaults, page_size=2)
    source = refreshed(ServiceQuotasSource(region="us-east-1"))
    by_code = {quota.code: quota for quota in source.quotas}
    assert len(by_code) == 6
    assert by_code["L-8CE99163"].value == 400_000 and by_code["L-8CE99163"].applied
    # No applied value: AWS's default, marked as such.
    assert by_code["L-44444444"].value == 1.0 and not by_code["L-44444444"].applied
    requests = quotas_server.requests
    applied_pages = [body for op, body in requests if op == APPLIED]
    default_pages = [body for op, body in requests if op == DEFAULTS]
    assert len(applied_pages) == 2 and len(default_pages) == 3
    assert [page.get("NextToken") for page in applied_pages] == [None, "2"]
    assert all(page["ServiceCode"] == "bedrock" for page in applied_pages + default_pages)
    health = source.health
    assert health.status == OK and health.cost_per_hour_usd == 0.0
    assert "6 quotas (3 applied values)" in health.message


def test_access_denied_is_a_state_and_the_last_list_is_kept(
    aws_env: Path, quotas_server: QuotasServer
) -> None:
    quotas_server.serve(deny=[APPLIED, DEFAULTS])
    source = refreshed(ServiceQuotasSource(region="us-east-1"))
    health = source.health
    assert health.status == ACCESS_DENIED
    assert "servicequotas:ListServiceQuotas" in health.message
    assert "[quotas] limits in the configuration still apply" in health.message
    assert source.quotas == [] and source.next_delay() == source.refresh_s
    # Granted, then refused again: the list fetched in between stays.
    quotas_server.serve(applied=QUOTAS)
    refreshed(source)
    assert source.health.status == OK and len(source.quotas) == len(QUOTAS)
    quotas_server.serve(deny=[APPLIED, DEFAULTS])
    refreshed(source)
    assert source.health.status == ACCESS_DENIED
    assert f"keeping the {len(QUOTAS)} quotas" in source.health.message
    assert len(source.quotas) == len(QUOTAS)


def test_defaults_alone_when_applied_values_are_refused(
    aws_env: Path, quotas_server: QuotasServer
) -> None:
    quotas_server.serve(defaults=QUOTAS, deny=[APPLIED])
    source = refreshed(ServiceQuotasSource(region="us-east-1"))
    assert source.health.status == OK
    assert "applied values unavailable: access denied" in source.health.message
    assert {q.code for q in source.quotas} == {q.code for q in QUOTAS}
    assert not any(q.applied for q in source.quotas)


def test_an_unreachable_endpoint_is_an_error_state(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", "http://127.0.0.1:9")
    source = refreshed(ServiceQuotasSource(region="us-east-1", max_attempts=1))
    assert source.health.status == ERROR
    assert "Service Quotas unreachable" in source.health.message
    assert source.next_delay() == source.retry_s


def test_endpoints_from_the_aws_config_file_and_the_flag(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, quotas_server: QuotasServer
) -> None:
    quotas_server.serve(applied=QUOTAS[:1])
    monkeypatch.delenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS")
    aws_env.write_text(
        "[default]\nregion = us-east-1\nservices = local\n\n"
        # The section's keys are service ids in snake case, as botocore reads them.
        "[services local]\nservice_quotas =\n"
        f"  endpoint_url = {quotas_server.endpoint_url}\n"
        "cloudwatch =\n  endpoint_url = http://127.0.0.1:4598\n"
    )
    source = refreshed(ServiceQuotasSource(region="us-east-1"))
    assert source.health.status == OK and len(source.quotas) == 1

    async def endpoints(target: AwsTarget) -> list[str]:
        connection = AwsConnection(target)
        try:
            return [
                (await connection.client(service)).meta.endpoint_url
                for service in ("cloudwatch", "service-quotas")
            ]
        finally:
            await connection.close()

    # Every client bedrock-top makes reads the same configuration...
    assert asyncio.run(endpoints(AwsTarget(region="us-east-1"))) == [
        "http://127.0.0.1:4598",
        quotas_server.endpoint_url,
    ]
    # ... and --endpoint-url applies to every service.
    flag = AwsTarget(region="us-east-1", endpoint_url="http://127.0.0.1:4601")
    assert asyncio.run(endpoints(flag)) == ["http://127.0.0.1:4601"] * 2


# -- the report end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


def _reset(moto_url: str) -> Any:
    reset_moto(moto_url)
    return boto3.client(
        "cloudwatch",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _put(cw: Any, model: str, values: dict[str, float], minute_start: float) -> None:
    cw.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "ModelId", "Value": model}],
                "Timestamp": dt.datetime.fromtimestamp(minute_start + 20, tz=dt.UTC),
                "Value": value,
            }
            for name, value in values.items()
        ],
    )


def test_once_json_shows_each_models_quota_use_as_calculated_by_hand(
    moto_url: str, quotas_server: QuotasServer, tmp_path: Path
) -> None:
    now = time.time()
    if now % 60 > 50:  # the newest complete minute must not turn while the report runs
        time.sleep(61 - now % 60)
        now = time.time()
    current = int(now // 60) * 60
    cw = _reset(moto_url)
    # Account-wide, minutes late: Sonnet's newest CloudWatch minute is 3 minutes back.
    _put(cw, SONNET, {"EstimatedTPMQuotaUsage": 150_000, "Invocations": 30}, current - 180)
    _put(cw, SONNET, {"EstimatedTPMQuotaUsage": 60_000, "Invocations": 12}, current - 300)
    _put(cw, SONNET, {"InvocationThrottles": 4}, current - 180)
    quotas_server.serve(applied=QUOTAS)
    # Haiku only in the local log (CloudWatch has no metric for it): a local estimate.
    log = tmp_path / "usage.jsonl"
    log.write_bytes(
        b"".join(
            to_json_line(
                record(epoch=current - 60 + 5 + i, model_id=HAIKU, input_tokens=1000,
                       output_tokens=250, cache_write_input_tokens=100, cache_read_input_tokens=9)
            )
            for i in range(4)
        )
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_CLOUDWATCH": moto_url,
        "AWS_ENDPOINT_URL_SERVICE_QUOTAS": quotas_server.endpoint_url,
    }
    env.pop("AWS_ENDPOINT_URL", None)
    config = tmp_path / "config.toml"
    config.write_text('timezone = "UTC"\n[quotas."meta.*"]\ntpm = 1000\n')
    completed = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--json", "--region", "us-east-1",
         "--log", str(log), "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["sources"]["service_quotas"]["state"] == OK
    assert report["sources"]["cloudwatch"]["state"] == OK
    by_model = {entry["model_id"]: entry for entry in report["models"]}
    sonnet = by_model[SONNET]["quota"]
    assert sonnet["tpm"] == {
        "limit": 200_000,
        "quota_code": "L-11111111",
        "kind": "cross-region",
        "used_last_minute": 150_000,
        "used_peak_5m": 150_000,
        "fraction": 0.75,
        "source": "cloudwatch",
        "limit_from": "applied",
    }
    # Tokens per day from CloudWatch's day total: 150,000 + 60,000 of 10,000,000.
    assert sonnet["tpd"]["used_today"] == 210_000 and sonnet["tpd"]["source"] == "cloudwatch"
    assert sonnet["tpd"]["fraction"] == pytest.approx(0.021)
    assert sonnet["rpm"] is None
    haiku = by_model[HAIKU]["quota"]
    # 4 calls of 1000 in + 100 cache write + 250 out (1x for Claude 3 Haiku) = 5400 tokens.
    assert haiku["tpm"]["used_peak_5m"] == 5400 and haiku["tpm"]["source"] == "local-estimate"
    assert haiku["tpm"]["fraction"] == pytest.approx(5400 / 400_000)
    assert (haiku["rpm"]["used_last_minute"], haiku["rpm"]["limit"]) == (4, 100)
    assert haiku["tpd"] is None
    line = subprocess.run(
        # --format line asks CloudWatch (and so its quota use) only when told to.
        [sys.executable, "-m", "monitor", "--once", "--format", "line", "--cloudwatch",
         "--region", "us-east-1", "--log", str(log), "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert "quota us.claude-sonnet-4-5 tpm 75%" in line.stdout, line.stdout

"""The one place that makes AWS clients and classifies their faults."""

from __future__ import annotations

import pytest
from botocore import exceptions as bce

from monitor.sources.aws import (
    ACCESS_DENIED,
    ERROR,
    NO_CREDENTIALS,
    STALE,
    AwsConnection,
    AwsTarget,
    SourceFailure,
    classify_error,
)


def _client_error(code: str, status: int = 400) -> bce.ClientError:
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": "nope"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Op",
    )


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (_client_error("AccessDeniedException"), ACCESS_DENIED, "ce:GetCostAndUsage"),
        (_client_error("ExpiredTokenException"), NO_CREDENTIALS, "refresh"),
        (_client_error("ThrottlingException"), STALE, "throttled"),
        (_client_error("InternalFailure", 500), STALE, "Cost Explorer error InternalFailure"),
        (bce.NoCredentialsError(), NO_CREDENTIALS, "no AWS credentials"),
        (bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), STALE, "unreachable"),
        (bce.ProfileNotFound(profile="nope"), ERROR, "--profile"),
    ],
)
def test_faults_become_states_a_person_can_act_on(
    exc: BaseException, status: str, words: str
) -> None:
    failure = classify_error(exc, "Cost Explorer", "ce:GetCostAndUsage")
    assert failure.status == status
    assert words in failure.message


async def test_a_connection_without_a_region_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    connection = AwsConnection(AwsTarget())
    with pytest.raises(SourceFailure) as caught:
        await connection.open()
    assert caught.value.status == ERROR and "--region" in caught.value.message


async def test_clients_honour_the_service_endpoint_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "http://127.0.0.1:4599")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    connection = AwsConnection(AwsTarget(region="eu-west-1"))
    try:
        logs = await connection.client("logs")
        cloudwatch = await connection.client("cloudwatch")
        assert logs.meta.endpoint_url == "http://127.0.0.1:4599"
        assert cloudwatch.meta.endpoint_url == "https://monitoring.eu-west-1.amazonaws.com"
        assert connection.endpoint_configured("CLOUDWATCH_LOGS")
    finally:
        await connection.close()
    explicit = AwsConnection(AwsTarget(region="eu-west-1", endpoint_url="http://127.0.0.1:4600"))
    try:
        quotas = await explicit.client("service-quotas")
        assert quotas.meta.endpoint_url == "http://127.0.0.1:4600"
    finally:
        await explicit.close()

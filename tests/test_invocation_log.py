"""Parsing CloudWatch Logs events: a corpus of real-shaped invocation-log events for the four
operations, shipped v1 records, and bad events with their reasons."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from monitor.records import RecordError
from monitor.sources.invocation_log import parse_event, short_caller
from tests.fleet_events import (
    SECRET_ANSWER,
    SECRET_PROMPT,
    assumed_role,
    invocation_event,
    message,
    shipped_record,
)

NOW = 1_796_000_000.0
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"


@pytest.mark.parametrize(
    "operation", ["InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"]
)
@pytest.mark.parametrize("cache", [None, (300, 40)])
def test_the_four_operations_with_and_without_cache_counts(
    operation: str, cache: tuple[int, int] | None
) -> None:
    event = invocation_event(
        NOW,
        operation=operation,
        input_tokens=1234,
        output_tokens=56,
        cache_read=cache[0] if cache else None,
        cache_write=cache[1] if cache else None,
        latency_ms=789,
    )
    record = parse_event(message(event))
    assert record.operation == operation
    assert (record.input_tokens, record.output_tokens) == (1234, 56)
    assert record.cache_read_input_tokens == (cache[0] if cache else 0)
    assert record.cache_write_input_tokens == (cache[1] if cache else 0)
    assert record.request_id == event["requestId"]
    assert record.epoch == pytest.approx(NOW, abs=0.001)
    assert record.caller == "support-bot-role/i-0abc"
    assert record.app == "support-bot"
    assert record.tags == {"app": "support-bot", "team": "care"}
    assert record.status == "ok" and record.token_source == "body"
    # Only Converse logs its latency in the body; the rest have none to read.
    assert record.latency_ms == (789.0 if operation == "Converse" else 0.0)


def test_no_body_text_reaches_the_record() -> None:
    for operation in ("InvokeModel", "ConverseStream"):
        record = parse_event(message(invocation_event(NOW, operation=operation)))
        text = msgspec.json.encode(record).decode() + repr(record)
        assert SECRET_PROMPT not in text and SECRET_ANSWER not in text


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", "throttled"),
        ("ValidationException", "client_error"),
        ("AccessDeniedException", "client_error"),
        ("ModelTimeoutException", "server_error"),
        ("InternalServerException", "server_error"),
    ],
)
def test_errors(code: str, status: str) -> None:
    record = parse_event(message(invocation_event(NOW, error_code=code, output_tokens=None)))
    assert record.status == status
    assert record.error_code == code
    assert record.output_tokens == 0


def test_inference_region_and_application_profile_arns() -> None:
    event = invocation_event(NOW, model_id=PROFILE_ARN, inference_region="us-west-2")
    record = parse_event(message(event))
    assert record.model_id == PROFILE_ARN
    assert record.region == "us-east-1"
    assert record.tags is not None and record.tags["inference_region"] == "us-west-2"


def test_no_counts_means_no_token_source() -> None:
    event = invocation_event(NOW, input_tokens=None, output_tokens=None)
    record = parse_event(message(event))
    assert record.token_source == "none"
    assert (record.input_tokens, record.output_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("arn", "caller"),
    [
        (assumed_role("etl", "lambda-fn-1"), "etl/lambda-fn-1"),
        ("arn:aws:iam::123456789012:user/alice", "user/alice"),
        ("arn:aws:iam::123456789012:user/team/bob", "user/bob"),
        ("arn:aws:iam::123456789012:role/service-role/worker", "role/worker"),
        ("arn:aws:iam::123456789012:root", "root"),
        ("arn:aws-us-gov:sts::123456789012:assumed-role/R/s", "R/s"),
        (None, None),
    ],
)
def test_callers_are_shortened(arn: str | None, caller: str | None) -> None:
    assert short_caller(arn) == caller


def test_shipped_records_whole_and_from_a_lambda_line() -> None:
    whole = parse_event(shipped_record(NOW, input_tokens=7))
    assert whole.input_tokens == 7 and whole.app == "batch-lambda"
    line = shipped_record(NOW, lambda_prefix=True, output_tokens=9)
    assert "\tINFO\t{" in line
    lam = parse_event(line)
    assert lam.output_tokens == 9 and lam.model_id == "amazon.nova-lite-v1:0"


def test_the_event_time_is_used_when_the_record_has_none() -> None:
    event = invocation_event(NOW)
    del event["timestamp"]
    assert parse_event(message(event), event_ms=int(NOW * 1000) + 5).epoch == pytest.approx(
        NOW + 0.005
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("START RequestId: 1b2 Version: $LATEST", "not JSON"),
        ("{broken", "not JSON"),
        ("[1, 2]", "unknown schema"),
        (json.dumps({"schemaType": "SomethingElse"}), "unknown schema"),
        (json.dumps({"hello": "world"}), "unknown schema"),
        (message(invocation_event(NOW, operation="ApplyGuardrail")), "unsupported operation"),
        (message(invocation_event(NOW, input_tokens=10**12)), "absurd token count"),
        (message(invocation_event(NOW, output_tokens=-5)), "absurd token count"),
        (json.dumps({"v": 1, "ts": "nope"}), "invalid ts"),
        (json.dumps({"v": 2}), "unsupported version"),
    ],
)
def test_bad_events_have_reasons(text: str, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_event(text)
    assert caught.value.reason == reason


def test_bad_timestamp() -> None:
    event = invocation_event(NOW)
    event["timestamp"] = "yesterday"
    with pytest.raises(RecordError, match="invalid timestamp"):
        parse_event(message(event))


def test_every_event_of_a_batch_is_its_own_request() -> None:
    # Speed is measured in bench/bench_fleet.py, not here.
    events = [message(invocation_event(time.time())) for _ in range(200)]
    assert len({parse_event(text).request_id for text in events}) == 200


def test_records_built_from_events_are_valid_v1_records() -> None:
    """The parser builds records directly: each must survive the writer and the decoder."""
    from monitor.records import parse_line, to_json_line

    for operation in ("InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"):
        for error in (None, "ThrottlingException"):
            event = invocation_event(
                NOW, operation=operation, error_code=error, inference_region="eu-west-3"
            )
            record = parse_event(message(event))
            assert parse_line(to_json_line(record)) == record

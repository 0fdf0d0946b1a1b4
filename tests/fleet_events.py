"""Real-shaped CloudWatch Logs events for the fleet source: Bedrock model invocation logs (as
Bedrock writes them, bodies included) and shipped bedrock-top records; and moto set-up helpers.
Shared by the tests and bench/bench_fleet.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from typing import Any

from monitor.records import record_line

ACCOUNT = "123456789012"
GROUP = "/aws/bedrock/modelinvocations"
SECRET_PROMPT = "PROMPT-SECRET-7f3a9c hunter2"
SECRET_ANSWER = "ANSWER-SECRET-0b8e21 the launch codes"
_ids = itertools.count()


def iso(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def assumed_role(role: str, session: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"


def invocation_event(
    epoch: float,
    *,
    operation: str = "Converse",
    model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
    caller_arn: str = assumed_role("support-bot-role", "i-0abc"),
    app: str | None = "support-bot",
    input_tokens: int | None = 100,
    output_tokens: int | None = 20,
    cache_read: int | None = None,
    cache_write: int | None = None,
    latency_ms: int | None = 420,
    error_code: str | None = None,
    inference_region: str | None = None,
    region: str = "us-east-1",
    request_id: str | None = None,
    prompt: str = SECRET_PROMPT,
    answer: str = SECRET_ANSWER,
) -> dict[str, Any]:
    """One ModelInvocationLog record as Bedrock delivers it to CloudWatch Logs."""
    request_id = request_id or f"5b1c{next(_ids):08d}-0000-4000-8000-000000000000"
    streaming = operation.endswith("Stream")
    entry: dict[str, Any] = {"inputContentType": "application/json"}
    output: dict[str, Any] = {"outputContentType": "application/json"}
    if operation.startswith("Converse"):
        entry["inputBodyJson"] = {
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": 512},
        }
        body: Any = {
            "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens},
        }
        if latency_ms is not None:
            body["metrics"] = {"latencyMs": latency_ms}
        if streaming:  # a stream's body is logged as its list of events
            body = [
                {"contentBlockDelta": {"delta": {"text": answer}}},
                {"metadata": {"usage": body["usage"], "metrics": body.get("metrics", {})}},
            ]
        output["outputBodyJson"] = body
    else:
        entry["inputBodyJson"] = {
            "anthropic_version": "bedrock-2023-05-31",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 512,
        }
        output["outputBodyJson"] = (
            [{"type": "content_block_delta", "delta": {"text": answer}}]
            if streaming
            else {"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"}
        )
    if input_tokens is not None:
        entry["inputTokenCount"] = input_tokens
    if cache_read is not None:
        entry["cacheReadInputTokenCount"] = cache_read
    if cache_write is not None:
        entry["cacheWriteInputTokenCount"] = cache_write
    if output_tokens is not None:
        output["outputTokenCount"] = output_tokens
    event: dict[str, Any] = {
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": iso(epoch),
        "accountId": ACCOUNT,
        "identity": {"arn": caller_arn},
        "region": region,
        "requestId": request_id,
        "operation": operation,
        "modelId": model_id,
        "input": entry,
        "output": output,
    }
    if app is not None:
        event["requestMetadata"] = {"app": app, "team": "care"}
    if inference_region:
        event["inferenceRegion"] = inference_region
    if error_code:
        event["errorCode"] = error_code
        event.pop("output")
    return event


def shipped_record(epoch: float, *, lambda_prefix: bool = False, **fields: Any) -> str:
    """A bedrock-top v1 record as the wrapper writes it, or as a Lambda log line."""
    values: dict[str, Any] = {
        "request_id": f"shipped-{next(_ids):08d}",
        "model_id": "amazon.nova-lite-v1:0",
        "operation": "Converse",
        "input_tokens": 50,
        "output_tokens": 10,
        "latency_ms": 300.0,
        "status": "ok",
        "token_source": "body",
        "app": "batch-lambda",
    }
    values.update(fields)
    line = record_line(epoch=epoch, **values).decode().rstrip("\n")
    if lambda_prefix:
        return f"{iso(epoch)}\t{values['request_id']}\tINFO\t{line}"
    return line


def put_events(logs: Any, group: str, stream: str, events: list[tuple[float, str]]) -> None:
    """Put (epoch, message) events into a stream (created if needed), in time order."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    ordered = sorted(events, key=lambda item: item[0])
    for start in range(0, len(ordered), 5000):
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[
                {"timestamp": int(epoch * 1000), "message": message}
                for epoch, message in ordered[start : start + 5000]
            ],
        )


def turn_on_invocation_logging(bedrock: Any, group: str = GROUP) -> None:
    bedrock.put_model_invocation_logging_configuration(
        loggingConfig={
            "cloudWatchConfig": {
                "logGroupName": group,
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/bedrock-logging",
            },
            "textDataDeliveryEnabled": True,
        }
    )


def message(event: dict[str, Any]) -> str:
    return json.dumps(event)

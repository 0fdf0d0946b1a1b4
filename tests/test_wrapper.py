"""The wrapper on a real boto3 client over real HTTP to a local Bedrock wire-format server."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.eventstream import EventStream
from botocore.response import StreamingBody

from monitor.wrapper import dropped_records, instrument, is_instrumented
from monitor.wrapper import hooks as hooks_module
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    Reply,
    anthropic_stream_chunks,
    converse_reply,
    converse_stream_reply,
    error_reply,
    invoke_reply,
    invoke_stream_reply,
    read_records,
    throttle_reply,
)

MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
ANTHROPIC_BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Name three rivers."}],
    }
)
NO_RETRY = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, server: BedrockServer) -> None:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BEDROCK_TOP_TAGS", raising=False)
    monkeypatch.delenv("BEDROCK_TOP_APP", raising=False)
    server.reset()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "usage.jsonl"


def make_client(server: BedrockServer, config: Config = NO_RETRY) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-west-2",
        endpoint_url=server.endpoint_url,
        config=config,
    )


@pytest.fixture
def client(server: BedrockServer, log: Path) -> Any:
    return instrument(make_client(server), log_path=log, app="billing-api", tags={"team": "ml"})


@pytest.fixture
def plain(server: BedrockServer) -> Any:
    return make_client(server)


def only_record(log: Path) -> Any:
    records = read_records(log)
    assert len(records) == 1, records
    return records[0]


# -- InvokeModel -------------------------------------------------------------------------------


def test_invoke_model_header_counts_fill_every_field(
    client: Any, server: BedrockServer, log: Path
) -> None:
    server.script(invoke_reply(input_tokens=42, output_tokens=9, cache_read=5, cache_write=3))
    before = datetime.now(UTC)
    started = time.perf_counter()
    response = client.invoke_model(
        modelId="global.anthropic.claude-sonnet-4-5-20250929-v1:0", body=ANTHROPIC_BODY
    )
    wall_ms = (time.perf_counter() - started) * 1000
    body = response["body"].read()
    sent = server.replies_sent[-1]

    record = only_record(log)
    assert record.v == 1
    assert before.replace(microsecond=0) <= record.ts <= datetime.now(UTC)
    assert record.request_id == sent.request_id
    assert record.model_id == "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert record.operation == "InvokeModel"
    assert record.region == "us-west-2"
    assert (record.input_tokens, record.output_tokens) == (42, 9)
    assert (record.cache_read_input_tokens, record.cache_write_input_tokens) == (5, 3)
    assert 0 < record.latency_ms <= wall_ms + 1
    assert record.ttft_ms is None
    assert record.status == "ok"
    assert record.error_code is None
    assert record.token_source == "header"
    assert record.app == "billing-api"
    assert record.tags == {"team": "ml"}
    # The caller still reads the body, once, exactly as sent.
    assert body == sent.body
    assert response["body"].read() == b""


def test_invoke_model_caller_view_is_unchanged(
    client: Any, plain: Any, server: BedrockServer
) -> None:
    reply = invoke_reply(input_tokens=7, output_tokens=2)
    server.script(reply, Reply(**{**reply.__dict__, "request_id": reply.request_id}))
    seen = client.invoke_model(modelId="m", body=ANTHROPIC_BODY)
    expected = plain.invoke_model(modelId="m", body=ANTHROPIC_BODY)
    assert isinstance(seen["body"], StreamingBody)
    assert type(seen["body"]).__name__ == "StreamingBody"
    assert seen.keys() == expected.keys()
    assert seen["contentType"] == expected["contentType"]
    assert seen["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "7"
    assert seen["body"].read() == expected["body"].read()


@pytest.mark.parametrize(
    ("doc", "counts"),
    [
        pytest.param(
            {
                "content": [{"type": "text", "text": "Nile"}],
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 4,
                    "cache_creation_input_tokens": 6,
                    "cache_read_input_tokens": 120,
                },
            },
            (30, 4, 120, 6),
            id="anthropic",
        ),
        pytest.param(
            {"generation": "Nile", "prompt_token_count": 21, "generation_token_count": 3},
            (21, 3, 0, 0),
            id="llama",
        ),
        pytest.param(
            {"inputTextTokenCount": 12, "results": [{"tokenCount": 8, "outputText": "Nile"}]},
            (12, 8, 0, 0),
            id="titan",
        ),
        pytest.param(
            {
                "output": {"message": {"content": [{"text": "Nile"}]}},
                "usage": {
                    "inputTokens": 15,
                    "outputTokens": 2,
                    "cacheReadInputTokenCount": 4,
                    "cacheWriteInputTokenCount": 1,
                },
            },
            (15, 2, 4, 1),
            id="nova",
        ),
        pytest.param(
            {
                "choices": [{"message": {"content": "Nile"}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5},
            },
            (9, 5, 0, 0),
            id="openai-style",
        ),
    ],
)
@pytest.mark.parametrize("reading", ["read", "read-amt", "iter_chunks", "iter_lines", "readinto"])
def test_invoke_model_body_counts_when_headers_absent(
    client: Any,
    server: BedrockServer,
    log: Path,
    doc: dict[str, Any],
    counts: tuple[int, int, int, int],
    reading: str,
) -> None:
    (reply,) = server.script(invoke_reply(doc, token_headers=False))
    body = client.invoke_model(modelId="m", body=ANTHROPIC_BODY)["body"]
    if reading == "read":
        data = body.read()
    elif reading == "read-amt":
        data = b""
        while chunk := body.read(7):
            data += chunk
    elif reading == "iter_chunks":
        data = b"".join(body.iter_chunks(5))
    elif reading == "iter_lines":
        data = b"".join(body.iter_lines(keepends=True))
    else:
        buffer = bytearray(len(reply.body) + 10)
        data = bytes(buffer[: body.readinto(buffer)])
    assert data == reply.body
    record = only_record(log)
    got = (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_input_tokens,
        record.cache_write_input_tokens,
    )
    assert got == counts
    assert record.token_source == "body"
    assert record.status == "ok"


def test_invoke_model_body_read_through_with_block_is_estimated_at_exit(
    client: Any, server: BedrockServer, log: Path
) -> None:
    # botocore's ``with body as raw`` yields urllib3's own stream: the bytes bypass the wrapper.
    (reply,) = server.script(invoke_reply({"generation": "Nile"}, token_headers=False))
    with client.invoke_model(modelId="m", body=ANTHROPIC_BODY)["body"] as raw:
        assert raw.read() == reply.body
    record = only_record(log)
    assert (record.status, record.token_source, record.input_tokens) == ("ok", "estimate", 5)


def test_invoke_model_body_never_read_is_recorded_when_collected(
    client: Any, server: BedrockServer, log: Path
) -> None:
    server.script(invoke_reply({"images": ["AAAA"]}, token_headers=False))
    response = client.invoke_model(modelId="stability.sd3-large-v1:0", body=ANTHROPIC_BODY)
    assert not log.exists() or read_records(log) == []
    del response
    gc.collect()
    record = only_record(log)
    assert record.status == "ok"
    assert record.token_source == "estimate"
    # "Name three rivers." is 18 characters: 5 tokens at 4 characters per token.
    assert (record.input_tokens, record.output_tokens) == (5, 0)


# -- Converse ----------------------------------------------------------------------------------


def test_converse_usage_and_cache(
    client: Any, plain: Any, server: BedrockServer, log: Path
) -> None:
    reply = converse_reply(
        "Nile, Amazon, Danube", input_tokens=25, output_tokens=7, cache_read=300, cache_write=40
    )
    server.script(reply, reply)
    response = client.converse(modelId="eu.amazon.nova-pro-v1:0", messages=MESSAGES)
    expected = plain.converse(modelId="eu.amazon.nova-pro-v1:0", messages=MESSAGES)
    for value in (response, expected):
        value["ResponseMetadata"].pop("HTTPHeaders")
        value["ResponseMetadata"].pop("RetryAttempts")
    assert response == expected
    record = only_record(log)
    assert record.operation == "Converse"
    assert record.model_id == "eu.amazon.nova-pro-v1:0"
    assert (record.input_tokens, record.output_tokens) == (25, 7)
    assert (record.cache_read_input_tokens, record.cache_write_input_tokens) == (300, 40)
    assert record.token_source == "body"
    assert record.request_id == reply.request_id


# -- streams -----------------------------------------------------------------------------------


def test_converse_stream_counts_ttft_and_events_unchanged(
    client: Any, plain: Any, server: BedrockServer, log: Path
) -> None:
    reply = converse_stream_reply(input_tokens=40, output_tokens=12, cache_read=8, first_delay=0.15)
    server.script(reply, reply)
    started = time.perf_counter()
    response = client.converse_stream(
        modelId="us.anthropic.claude-haiku-4-5-20251001-v1:0", messages=MESSAGES
    )
    assert isinstance(response["stream"], EventStream)
    events = list(response["stream"])
    wall_ms = (time.perf_counter() - started) * 1000
    assert events == list(plain.converse_stream(modelId="m", messages=MESSAGES)["stream"])
    record = only_record(log)
    assert record.operation == "ConverseStream"
    assert (record.input_tokens, record.output_tokens, record.cache_read_input_tokens) == (
        40,
        12,
        8,
    )
    assert record.token_source == "stream"
    assert record.status == "ok"
    assert record.ttft_ms is not None and 150 <= record.ttft_ms <= record.latency_ms <= wall_ms + 1


def test_invoke_stream_invocation_metrics(
    client: Any, plain: Any, server: BedrockServer, log: Path
) -> None:
    reply = invoke_stream_reply(
        input_tokens=50, output_tokens=20, cache_read=10, cache_write=2, first_delay=0.1
    )
    server.script(reply, reply)
    events = list(
        client.invoke_model_with_response_stream(modelId="apac.m", body=ANTHROPIC_BODY)["body"]
    )
    assert events == list(
        plain.invoke_model_with_response_stream(modelId="m", body=ANTHROPIC_BODY)["body"]
    )
    assert json.loads(events[0]["chunk"]["bytes"])["type"] == "message_start"
    record = only_record(log)
    assert record.operation == "InvokeModelWithResponseStream"
    got = (
        record.input_tokens,
        record.output_tokens,
        record.cache_read_input_tokens,
        record.cache_write_input_tokens,
    )
    assert got == (50, 20, 10, 2)
    assert record.token_source == "stream"
    # message_start is not content: the first content chunk comes after the pause.
    assert record.ttft_ms is not None and record.ttft_ms >= 100


def test_invoke_stream_anthropic_usage_output_is_cumulative(
    client: Any, server: BedrockServer, log: Path
) -> None:
    chunks = anthropic_stream_chunks(("a", "b"), 33, 3, cache_read=0, cache_write=0)
    # A second message_delta with the running total: the last value counts, not the sum.
    chunks.insert(-1, {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 8}})
    server.script(invoke_stream_reply(chunks=chunks, invocation_metrics=False))
    list(client.invoke_model_with_response_stream(modelId="m", body=ANTHROPIC_BODY)["body"])
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens) == (33, 8)
    assert record.token_source == "stream"


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_stream_abandoned_after_first_content_is_aborted(
    client: Any, server: BedrockServer, log: Path, operation: str
) -> None:
    stream = _start_stream(client, operation)
    for event in stream:
        if "contentBlockDelta" in event or _is_content_chunk(event):
            break
    record = only_record(log)  # written when the loop is left, not when collected
    assert record.status == "aborted"
    assert record.ttft_ms is not None
    assert record.error_code is None
    assert record.token_source in ("estimate", "stream")


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_stream_closed_unread_is_aborted(
    client: Any, server: BedrockServer, log: Path, operation: str
) -> None:
    _start_stream(client, operation).close()
    record = only_record(log)
    assert record.status == "aborted"
    assert record.ttft_ms is None


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_stream_never_iterated_is_aborted_when_collected(
    client: Any, server: BedrockServer, log: Path, operation: str
) -> None:
    stream = _start_stream(client, operation)
    assert not log.exists()
    del stream
    gc.collect()
    assert only_record(log).status == "aborted"


def test_stream_left_after_metadata_is_ok(client: Any, server: BedrockServer, log: Path) -> None:
    for event in client.converse_stream(modelId="m", messages=MESSAGES)["stream"]:
        if "metadata" in event:
            break
    record = only_record(log)
    assert record.status == "ok"
    assert (record.input_tokens, record.output_tokens) == (17, 6)


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
def test_exception_event_mid_stream(
    client: Any, plain: Any, server: BedrockServer, log: Path, operation: str
) -> None:
    make = converse_stream_reply if operation == "converse_stream" else invoke_stream_reply
    reply = make(fail_after=2, exception_type="throttlingException")
    server.script(reply, reply)
    errors = []
    for stream in (_start_stream(client, operation), _start_stream(plain, operation)):
        seen = []
        with pytest.raises(botocore.exceptions.EventStreamError) as caught:
            for event in stream:
                seen.append(event)
        errors.append((caught.type, caught.value.response["Error"], len(seen)))
    assert errors[0] == errors[1]
    record = only_record(log)
    assert record.status == "aborted"
    assert record.error_code == "throttlingException"


LONG_TEXTS = tuple(f" w{index}" for index in range(3 * hooks_module.HOLD_EVENTS + 7))


@pytest.mark.parametrize("counts", ["at the end", "none"])
def test_long_converse_stream_is_read_in_batches(
    client: Any, server: BedrockServer, log: Path, counts: str
) -> None:
    """More events than the wrapper holds at once: counts from the end, or (with none sent) an
    estimate over every delta, as if each had been read on arrival."""
    server.script(converse_stream_reply(LONG_TEXTS, output_tokens=1550, metadata=counts != "none"))
    events = list(client.converse_stream(modelId="m", messages=MESSAGES)["stream"])
    assert len(events) == len(LONG_TEXTS) + 3 + (counts != "none")
    record = only_record(log)
    assert record.status == "ok"
    if counts == "none":
        assert record.token_source == "estimate"
        # One token per 4 characters, rounded up, per piece: " w12" is 1, " w1234" is 2.
        assert record.output_tokens == sum(-(-len(text) // 4) for text in LONG_TEXTS)
    else:
        assert (record.token_source, record.input_tokens, record.output_tokens) == (
            "stream",
            17,
            1550,
        )


def test_long_invoke_stream_without_metrics_keeps_the_last_cumulative_count(
    client: Any, server: BedrockServer, log: Path
) -> None:
    chunks = anthropic_stream_chunks(LONG_TEXTS, 61, 2, cache_read=0, cache_write=0)
    # Running totals spread over the stream, in different batches: the last one counts.
    for position, total in ((300, 400), (900, 1200)):
        chunks.insert(
            position, {"type": "message_delta", "delta": {}, "usage": {"output_tokens": total}}
        )
    chunks[-2]["usage"]["output_tokens"] = 1580
    server.script(invoke_stream_reply(chunks=chunks, invocation_metrics=False))
    events = list(
        client.invoke_model_with_response_stream(modelId="m", body=ANTHROPIC_BODY)["body"]
    )
    assert len(events) == len(chunks)
    record = only_record(log)
    assert (record.token_source, record.input_tokens, record.output_tokens) == ("stream", 61, 1580)


def _run_instrumented_script(server: BedrockServer, log: Path, app: str, body: str) -> None:
    """Run ``body`` in a Python process of its own, with ``client`` instrumented and ``stream``
    a ConverseStream started (nothing read yet)."""
    script = (
        "import os, sys, boto3\n"
        "from monitor.wrapper import instrument\n"
        "client = instrument(boto3.client('bedrock-runtime', region_name='us-east-1',"
        f" endpoint_url={server.endpoint_url!r}), log_path={str(log)!r}, app={app!r})\n"
        "stream = client.converse_stream(modelId='m', messages=[{'role': 'user',"
        " 'content': [{'text': 'hi'}]}])['stream']\n"
    ) + body
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )


def test_stream_still_open_at_interpreter_exit_is_recorded(
    server: BedrockServer, tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    # One event read, the rest left; the module keeps the stream until the interpreter exits.
    _run_instrumented_script(server, log, "exiting", "next(iter(stream))\n")
    record = only_record(log)
    assert (record.app, record.operation, record.status) == ("exiting", "ConverseStream", "aborted")


def test_a_forked_child_does_not_finish_its_parents_streams(
    server: BedrockServer, tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    body = (
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(0)\n"  # a normal exit: exit hooks run in the child
        "os.waitpid(pid, 0)\n"
        "for event in stream:\n"
        "    pass\n"
    )
    _run_instrumented_script(server, log, "parent", body)
    record = only_record(log)
    assert (record.app, record.status, record.output_tokens) == ("parent", "ok", 6)


def _start_stream(client: Any, operation: str) -> Any:
    if operation == "converse_stream":
        return client.converse_stream(modelId="m", messages=MESSAGES)["stream"]
    return client.invoke_model_with_response_stream(modelId="m", body=ANTHROPIC_BODY)["body"]


def _is_content_chunk(event: dict[str, Any]) -> bool:
    chunk = event.get("chunk")
    return bool(chunk) and json.loads(chunk["bytes"]).get("type") == "content_block_delta"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (throttle_reply(), "throttled", "ThrottlingException"),
        (error_reply(400, "ValidationException", "bad"), "client_error", "ValidationException"),
        (error_reply(403, "AccessDeniedException", "no"), "client_error", "AccessDeniedException"),
        (
            error_reply(404, "ResourceNotFoundException", "?"),
            "client_error",
            "ResourceNotFoundException",
        ),
        (
            error_reply(500, "InternalServerException", "oops"),
            "server_error",
            "InternalServerException",
        ),
        (
            error_reply(503, "ServiceUnavailableException", "x"),
            "server_error",
            "ServiceUnavailableException",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
@pytest.mark.parametrize("operation", ["converse", "invoke_model", "converse_stream"])
def test_error_responses(
    client: Any,
    plain: Any,
    server: BedrockServer,
    log: Path,
    reply: Reply,
    status: str,
    code: str,
    operation: str,
) -> None:
    server.script(reply, reply)
    caught = []
    for each in (client, plain):
        with pytest.raises(botocore.exceptions.ClientError) as error:
            if operation == "converse":
                each.converse(modelId="m", messages=MESSAGES)
            elif operation == "converse_stream":
                each.converse_stream(modelId="m", messages=MESSAGES)
            else:
                each.invoke_model(modelId="m", body=ANTHROPIC_BODY)
        caught.append((type(error.value), error.value.response["Error"], str(error.value)))
    assert caught[0] == caught[1]
    record = only_record(log)
    assert (record.status, record.error_code) == (status, code)
    assert record.request_id == reply.request_id
    assert (record.input_tokens, record.output_tokens, record.token_source) == (0, 0, "none")


def test_no_response_at_all(log: Path) -> None:
    client = instrument(
        boto3.client(
            "bedrock-runtime",
            region_name="us-west-2",
            endpoint_url="http://127.0.0.1:9",
            config=NO_RETRY,
        ),
        log_path=log,
    )
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        client.converse(modelId="m", messages=MESSAGES)
    record = only_record(log)
    assert (record.status, record.error_code) == ("server_error", "EndpointConnectionError")


def test_retried_call_is_one_record_timed_from_the_first_attempt(
    server: BedrockServer, log: Path
) -> None:
    retrying = Config(retries={"mode": "standard", "total_max_attempts": 2})
    client = instrument(make_client(server, retrying), log_path=log)
    server.script(Reply(**{**throttle_reply().__dict__, "delay": 0.2}), converse_reply())
    client.converse(modelId="m", messages=MESSAGES)
    record = only_record(log)
    assert record.status == "ok"
    assert record.latency_ms >= 200


def test_latency_is_per_call_not_from_client_creation(
    client: Any, server: BedrockServer, log: Path
) -> None:
    time.sleep(0.3)
    server.script(Reply(**{**converse_reply().__dict__, "delay": 0.05}))
    client.converse(modelId="m", messages=MESSAGES)
    assert 50 <= only_record(log).latency_ms < 300


# -- identity, settings, safety ----------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "eu.amazon.nova-lite-v1:0",
        "apac.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "jp.anthropic.claude-haiku-4-5-20251001-v1:0",
        "au.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us-gov.anthropic.claude-3-haiku-20240307-v1:0",
        "global.anthropic.claude-opus-4-5-20251101-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "arn:aws:bedrock:us-west-2::foundation-model/meta.llama3-8b-instruct-v1:0",
    ],
)
def test_model_id_recorded_exactly_as_passed(
    client: Any, server: BedrockServer, log: Path, model_id: str
) -> None:
    client.converse(modelId=model_id, messages=MESSAGES)
    assert server.requests[-1].model_id == model_id
    assert only_record(log).model_id == model_id


def test_instrumenting_twice_records_once_with_the_latest_settings(
    server: BedrockServer, log: Path
) -> None:
    client = make_client(server)
    assert instrument(client, log_path=log, app="first") is client
    assert instrument(client, log_path=log, app="second", tags={"run": "2"}) is client
    assert is_instrumented(client)
    client.converse(modelId="m", messages=MESSAGES)
    list(client.converse_stream(modelId="m", messages=MESSAGES)["stream"])
    records = read_records(log)
    assert [r.operation for r in records] == ["Converse", "ConverseStream"]
    assert {(r.app, str(r.tags)) for r in records} == {("second", "{'run': '2'}")}


def test_app_and_tags_from_the_environment(
    server: BedrockServer, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEDROCK_TOP_APP", "nightly-batch")
    monkeypatch.setenv("BEDROCK_TOP_TAGS", "env=prod, team=search")
    client = instrument(make_client(server), log_path=log)
    client.converse(modelId="m", messages=MESSAGES)
    record = only_record(log)
    assert record.app == "nightly-batch"
    assert record.tags == {"env": "prod", "team": "search"}


def test_log_path_defaults_to_bedrock_top_log(
    server: BedrockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "from-env" / "usage.jsonl"
    monkeypatch.setenv("BEDROCK_TOP_LOG", str(target))
    instrument(make_client(server)).converse(modelId="m", messages=MESSAGES)
    assert only_record(target).operation == "Converse"


def test_bad_arguments_are_refused_clearly(server: BedrockServer) -> None:
    with pytest.raises(ValueError, match="bedrock-runtime"):
        instrument(boto3.client("s3", region_name="us-east-1"))
    with pytest.raises(ValueError, match="32 tags"):
        instrument(make_client(server), tags={str(n): "x" for n in range(33)})


def test_records_hold_no_prompt_response_or_credentials(
    client: Any, server: BedrockServer, log: Path
) -> None:
    prompt = [{"role": "user", "content": [{"text": "PROMPT-CANARY-7731 tell me"}]}]
    server.script(
        converse_reply("RESPONSE-CANARY-1177", usage=False),
        converse_stream_reply(("RESPONSE-CANARY-2288",), metadata=False),
        invoke_reply({"generation": "RESPONSE-CANARY-3399"}, token_headers=False),
    )
    client.converse(modelId="m", messages=prompt)
    list(client.converse_stream(modelId="m", messages=prompt)["stream"])
    client.invoke_model(modelId="m", body=json.dumps({"prompt": "PROMPT-CANARY-7731"}))[
        "body"
    ].read()
    text = log.read_text()
    assert len(text.splitlines()) == 3
    for secret in (
        "CANARY",
        TEST_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        TEST_AWS_ENV["AWS_ACCESS_KEY_ID"],
        TEST_AWS_ENV["AWS_SESSION_TOKEN"],
    ):
        assert secret not in text


def test_a_bug_in_extraction_never_reaches_the_caller(
    client: Any,
    server: BedrockServer,
    log: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(headers: Any) -> Any:
        raise RuntimeError("extraction bug")

    monkeypatch.setattr(hooks_module, "counts_from_headers", broken)
    monkeypatch.setattr("monitor.wrapper.writer._warned", False)
    dropped = dropped_records()
    (reply,) = server.script(invoke_reply())
    with caplog.at_level(logging.WARNING, logger="monitor.wrapper"):
        for _ in range(3):
            server.script(reply)
            assert (
                client.invoke_model(modelId="m", body=ANTHROPIC_BODY)["body"].read() == reply.body
            )
        client.invoke_model(modelId="m", body=ANTHROPIC_BODY)["body"].read()
    assert dropped_records() == dropped + 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "extraction bug" in warnings[0].getMessage()
    assert not log.exists()

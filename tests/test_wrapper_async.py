"""The wrapper on a real aiobotocore client over real HTTP to the local Bedrock server."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from aiobotocore.eventstream import AioEventStream
from aiobotocore.response import AioStreamingBodyBase
from aiobotocore.session import get_session
from botocore.config import Config

from monitor.wrapper import instrument
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    converse_reply,
    converse_stream_reply,
    error_reply,
    invoke_reply,
    invoke_stream_reply,
    read_records,
    throttle_reply,
)

MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
BODY = json.dumps({"messages": [{"role": "user", "content": "Name three rivers."}]})
NO_RETRY = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: BedrockServer) -> Path:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    server.reset()
    return tmp_path / "usage.jsonl"


@pytest.fixture
async def client(server: BedrockServer, log: Path) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url=server.endpoint_url,
        config=NO_RETRY,
    ) as created:
        yield instrument(created, log_path=log, app="worker")


def only_record(log: Path) -> Any:
    records = read_records(log)
    assert len(records) == 1, records
    return records[0]


async def test_invoke_model_headers(client: Any, server: BedrockServer, log: Path) -> None:
    (reply,) = server.script(invoke_reply(input_tokens=21, output_tokens=4, cache_read=2))
    response = await client.invoke_model(
        modelId="eu.anthropic.claude-sonnet-4-5-20250929-v1:0", body=BODY
    )
    assert await response["body"].read() == reply.body
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens, record.cache_read_input_tokens) == (21, 4, 2)
    assert (record.region, record.app, record.token_source) == ("eu-central-1", "worker", "header")
    assert record.request_id == reply.request_id
    assert record.model_id == "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.mark.parametrize("reading", ["read", "iter_chunks", "async-with"])
async def test_invoke_model_body_counts(
    client: Any, server: BedrockServer, log: Path, reading: str
) -> None:
    doc = {"generation": "Nile", "prompt_token_count": 14, "generation_token_count": 6}
    (reply,) = server.script(invoke_reply(doc, token_headers=False))
    body = (await client.invoke_model(modelId="meta.llama3-8b-instruct-v1:0", body=BODY))["body"]
    assert isinstance(body, AioStreamingBodyBase)
    if reading == "read":
        data = await body.read()
    elif reading == "iter_chunks":
        data = b"".join([chunk async for chunk in body.iter_chunks(6)])
    else:
        async with body as stream:
            data = await stream.read()
    assert data == reply.body
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens, record.token_source) == (14, 6, "body")


async def test_converse(client: Any, server: BedrockServer, log: Path) -> None:
    server.script(converse_reply(input_tokens=8, output_tokens=3, cache_write=100))
    response = await client.converse(modelId="m", messages=MESSAGES)
    assert response["usage"]["cacheWriteInputTokens"] == 100
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens, record.cache_write_input_tokens) == (
        8,
        3,
        100,
    )
    assert record.token_source == "body"


async def test_converse_stream(client: Any, server: BedrockServer, log: Path) -> None:
    server.script(
        converse_stream_reply(("a", "b", "c"), input_tokens=30, output_tokens=3, first_delay=0.1)
    )
    stream = (await client.converse_stream(modelId="m", messages=MESSAGES))["stream"]
    assert isinstance(stream, AioEventStream)
    texts = [
        e["contentBlockDelta"]["delta"]["text"] async for e in stream if "contentBlockDelta" in e
    ]
    assert texts == ["a", "b", "c"]
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens, record.status) == (30, 3, "ok")
    assert record.ttft_ms is not None and 100 <= record.ttft_ms <= record.latency_ms


async def test_invoke_stream(client: Any, server: BedrockServer, log: Path) -> None:
    server.script(invoke_stream_reply(input_tokens=44, output_tokens=11, cache_read=7))
    stream = (await client.invoke_model_with_response_stream(modelId="m", body=BODY))["body"]
    chunks = [json.loads(e["chunk"]["bytes"]) async for e in stream]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 11
    record = only_record(log)
    assert (record.input_tokens, record.output_tokens, record.cache_read_input_tokens) == (
        44,
        11,
        7,
    )
    assert record.token_source == "stream"


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
async def test_abandoned_stream_is_aborted(
    client: Any, server: BedrockServer, log: Path, operation: str
) -> None:
    if operation == "converse_stream":
        response = await client.converse_stream(modelId="m", messages=MESSAGES)
        stream = response["stream"]
    else:
        response = await client.invoke_model_with_response_stream(modelId="m", body=BODY)
        stream = response["body"]
    async for _event in stream:
        break
    del stream, response, _event
    gc.collect()
    # The event loop closes an abandoned async generator in a task of its own: give it turns.
    for _ in range(200):
        if log.exists():
            break
        await asyncio.sleep(0.01)
    record = only_record(log)
    assert record.status == "aborted"


async def test_exception_event(client: Any, server: BedrockServer, log: Path) -> None:
    server.script(converse_stream_reply(fail_after=1))
    stream = (await client.converse_stream(modelId="m", messages=MESSAGES))["stream"]
    with pytest.raises(botocore.exceptions.EventStreamError, match="modelStreamErrorException"):
        async for _event in stream:
            pass
    record = only_record(log)
    assert (record.status, record.error_code) == ("aborted", "modelStreamErrorException")


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (throttle_reply(), "throttled"),
        (error_reply(400, "ValidationException"), "client_error"),
        (error_reply(500, "InternalServerException"), "server_error"),
    ],
)
async def test_errors(
    client: Any, server: BedrockServer, log: Path, reply: Any, status: str
) -> None:
    server.script(reply)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await client.converse(modelId="m", messages=MESSAGES)
    code = caught.value.response["Error"]["Code"]
    record = only_record(log)
    assert (record.status, record.error_code) == (status, code)


async def test_concurrent_calls_each_get_their_record(
    client: Any, server: BedrockServer, log: Path
) -> None:
    server.script(*(converse_reply(input_tokens=n, output_tokens=1) for n in range(1, 21)))
    await asyncio.gather(*(client.converse(modelId="m", messages=MESSAGES) for _ in range(20)))
    records = read_records(log)
    assert sorted(r.input_tokens for r in records) == list(range(1, 21))
    assert len({r.request_id for r in records}) == 20

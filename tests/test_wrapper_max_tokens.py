"""The wrapper records each call's requested max_tokens (a real boto3 client over HTTP to the
local Bedrock server), which the quota panel compares with the output tokens used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from monitor.wrapper import instrument
from monitor.wrapper.extract import requested_max_tokens
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    converse_reply,
    converse_stream_reply,
    invoke_reply,
    read_records,
)

MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
NO_RETRY = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, server: BedrockServer) -> None:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    server.reset()


@pytest.fixture
def client(server: BedrockServer, tmp_path: Path) -> Any:
    plain = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.endpoint_url,
        config=NO_RETRY,
    )
    return instrument(plain, log_path=tmp_path / "usage.jsonl", app="quota-test")


def test_invoke_model_and_converse_record_the_requested_max_tokens(
    client: Any, server: BedrockServer, tmp_path: Path
) -> None:
    server.script(
        invoke_reply(input_tokens=10, output_tokens=3),
        converse_reply("Nile", input_tokens=5, output_tokens=2),
        converse_stream_reply(("Nile",), input_tokens=5, output_tokens=2),
        converse_reply("Nile", input_tokens=5, output_tokens=2),
    )
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            # A prompt that quotes the key must not be read as the limit.
            "messages": [{"role": "user", "content": 'explain {"max_tokens": 7}'}],
            "max_tokens": 4096,
        }
    )
    client.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=body)["body"].read()
    client.converse(
        modelId="us.amazon.nova-lite-v1:0",
        messages=MESSAGES,
        inferenceConfig={"maxTokens": 512},
    )
    for _ in client.converse_stream(
        modelId="us.amazon.nova-lite-v1:0", messages=MESSAGES, inferenceConfig={"maxTokens": 256}
    )["stream"]:
        pass
    client.converse(modelId="us.amazon.nova-lite-v1:0", messages=MESSAGES)
    records = read_records(tmp_path / "usage.jsonl")
    assert [r.max_tokens for r in records] == [4096, 512, 256, None]
    assert [r.output_tokens for r in records] == [3, 2, 2, 2]


@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        ("InvokeModel", {"body": b'{"inferenceConfig": {"max_new_tokens": 300}}'}, 300),
        ("InvokeModel", {"body": '{"textGenerationConfig": {"maxTokenCount": 80}}'}, 80),
        ("InvokeModel", {"body": b'{"prompt": "x", "max_gen_len": 512}'}, 512),
        ("InvokeModel", {"body": b'{"prompt": "no limit here"}'}, None),
        # A big body is searched near its ends, where requests put the limit.
        ("InvokeModel", {"body": b'{"p": "' + b"a" * 40_000 + b'", "max_tokens": 9}'}, 9),
        ("InvokeModel", {"body": b'{"max_tokens": 8, "p": "' + b"a" * 40_000 + b'"}'}, 8),
        ("InvokeModel", {"body": object()}, None),  # a file-like body is not read
        ("Converse", {"inferenceConfig": {"maxTokens": True}}, None),
        ("ConverseStream", {"inferenceConfig": "nonsense"}, None),
    ],
)
def test_the_limit_is_found_under_each_providers_name(
    operation: str, params: dict[str, Any], expected: int | None
) -> None:
    assert requested_max_tokens(operation, params) == expected

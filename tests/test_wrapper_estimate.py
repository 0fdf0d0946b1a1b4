"""Estimates for responses without token counts: a real tokenizer, or the characters rule."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from monitor.wrapper import configure_estimator, instrument
from monitor.wrapper.estimate import CHARS_PER_TOKEN, find_tokenizer_file
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    converse_reply,
    converse_stream_reply,
    invoke_reply,
    read_records,
)

PROMPT = "the river flows past the old mill and the river bends"
ANSWER = "the mill stands by the river"
CORPUS = [
    "the river flows past the old mill",
    "the mill stands by the river bend",
    "old rivers bend and flow past mills",
] * 20


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-piece tokenizer trained here with the tokenizers library itself."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"])
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def tokens(path: Path, text: str) -> int:
    return len(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids)


@pytest.fixture
def client(server: BedrockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BEDROCK_TOP_TOKENIZER", raising=False)
    server.reset()
    configure_estimator(None)
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}),
    )
    yield instrument(client, log_path=tmp_path / "usage.jsonl")
    configure_estimator(None)


def converse_without_usage(client: Any, server: BedrockServer) -> Any:
    server.script(converse_reply(ANSWER, usage=False))
    client.converse(
        modelId="mistral.mistral-large-2402-v1:0",
        messages=[{"role": "user", "content": [{"text": PROMPT}]}],
    )
    (record,) = read_records(client._bedrock_top_instrumentation.writer.path)
    return record


def test_tokenizer_json_from_configuration(
    client: Any, server: BedrockServer, tokenizer_json: Path
) -> None:
    configure_estimator(str(tokenizer_json))
    record = converse_without_usage(client, server)
    assert record.token_source == "estimate"
    assert record.input_tokens == tokens(tokenizer_json, PROMPT)
    assert record.output_tokens == tokens(tokenizer_json, ANSWER)
    # The trained vocabulary splits differently from the characters rule: the file was used.
    assert record.input_tokens != math.ceil(len(PROMPT) / CHARS_PER_TOKEN)


def test_tokenizer_from_environment(
    client: Any, server: BedrockServer, tokenizer_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEDROCK_TOP_TOKENIZER", str(tokenizer_json.parent))
    configure_estimator(None)
    record = converse_without_usage(client, server)
    assert record.input_tokens == tokens(tokenizer_json, PROMPT)


def test_tokenizer_repository_from_the_local_hugging_face_cache(
    client: Any,
    server: BedrockServer,
    tokenizer_json: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cache layout huggingface_hub writes: refs/main names the snapshot holding the file.
    repo = tmp_path / "hub" / "models--acme--tiny-tokenizer"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        find_tokenizer_file("acme/tiny-tokenizer") == repo / "snapshots" / commit / "tokenizer.json"
    )
    configure_estimator("acme/tiny-tokenizer")
    record = converse_without_usage(client, server)
    assert record.input_tokens == tokens(tokenizer_json, PROMPT)


def test_unknown_tokenizer_falls_back_to_the_characters_rule(
    client: Any,
    server: BedrockServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    configure_estimator("acme/not-downloaded")
    with caplog.at_level(logging.WARNING, logger="monitor.wrapper"):
        record = converse_without_usage(client, server)
    assert "not found" in caplog.text
    assert record.token_source == "estimate"
    assert record.input_tokens == math.ceil(len(PROMPT) / CHARS_PER_TOKEN)
    assert record.output_tokens == math.ceil(len(ANSWER) / CHARS_PER_TOKEN)


def test_stream_without_metadata_and_invoke_without_counts(
    client: Any, server: BedrockServer
) -> None:
    server.script(
        converse_stream_reply(("the mill", " stands"), metadata=False),
        invoke_reply({"outputs": [{"text": ANSWER}]}, token_headers=False),
    )
    messages = [{"role": "user", "content": [{"text": PROMPT}]}]
    list(
        client.converse_stream(modelId="m", messages=messages, system=[{"text": "be brief"}])[
            "stream"
        ]
    )
    client.invoke_model(modelId="mistral.m", body=json.dumps({"prompt": PROMPT}))["body"].read()
    stream, invoke = read_records(client._bedrock_top_instrumentation.writer.path)
    assert (stream.status, stream.token_source) == ("ok", "estimate")
    assert stream.input_tokens == math.ceil(len(PROMPT) / 4) + math.ceil(len("be brief") / 4)
    assert stream.output_tokens == math.ceil(len("the mill") / 4) + math.ceil(len(" stands") / 4)
    assert invoke.token_source == "estimate"
    assert (invoke.input_tokens, invoke.output_tokens) == (
        math.ceil(len(PROMPT) / 4),
        math.ceil(len(ANSWER) / 4),
    )


def test_estimates_off(client: Any, server: BedrockServer) -> None:
    instrument(client, log_path=client._bedrock_top_instrumentation.writer.path, estimate=False)
    record = converse_without_usage(client, server)
    assert (record.token_source, record.input_tokens, record.output_tokens) == ("none", 0, 0)

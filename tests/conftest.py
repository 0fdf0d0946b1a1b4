"""Shared fixtures: records and logs as real files on disk, and the local Bedrock endpoint."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.records import UsageRecord, make_record, to_json_line
from tests.bedrock_server import BedrockServer

# Tests talk to servers on 127.0.0.1 only: never let botocore's credential chain reach for an
# instance-metadata endpoint, and never read the developer's own AWS files. Subprocesses inherit
# this environment.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

_ids = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[BedrockServer]:
    """The local bedrock-runtime endpoint (tests/bedrock_server.py), one per test module."""
    with BedrockServer() as running:
        yield running


def record(
    *,
    epoch: float | None = None,
    model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
    input_tokens: int = 100,
    output_tokens: int = 20,
    latency_ms: float = 500.0,
    status: str = "ok",
    request_id: str | None = None,
    **extra: object,
) -> UsageRecord:
    """A valid record with sensible defaults; every field can be overridden."""
    fields: dict[str, object] = {
        "operation": "Converse",
        "token_source": "body",
        "region": "us-east-1",
    }
    fields.update(extra)
    return make_record(
        epoch=time.time() if epoch is None else epoch,
        request_id=request_id or f"req-{next(_ids):08d}",
        model_id=model_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
        status=status,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def make() -> Callable[..., UsageRecord]:
    return record


def write_lines(path: Path, *chunks: bytes | UsageRecord) -> None:
    """Append raw bytes or records to a file, as a writer would."""
    with path.open("ab") as handle:
        for chunk in chunks:
            handle.write(to_json_line(chunk) if isinstance(chunk, UsageRecord) else chunk)


async def settle(
    pilot: Any, condition: Callable[[], object], what: Callable[[], str], timeout: float = 10.0
) -> None:
    """Let the app run until ``condition()`` holds; fail with ``what()`` (the last state seen,
    such as the panel text) after ``timeout`` seconds. Pilot tests wait for what they assert,
    never for a fixed time."""
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s; last seen:\n{what()}")
        await pilot.pause(0.02)

"""A headless run pays only for what it shows: ``--format line`` (run by a status bar every few
seconds) makes no CloudWatch request unless asked, and every AWS request of a report shares one
total deadline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sources.cloudwatch import HEADLESS_DEADLINE_S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """An endpoint that accepts connections (the kernel does) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener
    listener.close()


def connections_made(listener: socket.socket) -> int:
    listener.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def once(tmp_path: Path, listener: socket.socket, *args: str) -> tuple[float, str, str]:
    host, port = listener.getsockname()
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "--once",
            "--log",
            str(tmp_path / "none.jsonl"),
            "--endpoint-url",
            f"http://{host}:{port}",
            "--region",
            "us-east-1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started, result.stdout, result.stderr


def test_status_line_makes_no_cloudwatch_request(tmp_path: Path, black_hole: socket.socket) -> None:
    took, out, _ = once(tmp_path, black_hole, "--format", "line")
    assert out.startswith("bedrock ")
    assert connections_made(black_hole) == 0
    assert took < HEADLESS_DEADLINE_S


def test_status_line_asks_cloudwatch_when_told(tmp_path: Path, black_hole: socket.socket) -> None:
    took, out, _ = once(tmp_path, black_hole, "--format", "line", "--cloudwatch")
    assert out.startswith("bedrock ")
    assert connections_made(black_hole) >= 1
    assert took < HEADLESS_DEADLINE_S + 15  # the deadline, plus the interpreter's start-up


def test_a_silent_endpoint_costs_the_report_its_deadline_not_minutes(
    tmp_path: Path, black_hole: socket.socket
) -> None:
    took, out, _ = once(tmp_path, black_hole, "--json")
    state = json.loads(out)["sources"]["cloudwatch"]
    assert state["state"] == "error"
    assert "deadline" in state["message"] and "timed out" in state["message"]
    assert took < HEADLESS_DEADLINE_S + 15


def test_cloudwatch_and_no_cloudwatch_together_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--cloudwatch", "--no-cloudwatch"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "mutually exclusive" in result.stderr

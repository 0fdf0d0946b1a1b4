"""The wrapper never blocks the application on its log: a FIFO that nobody reads, or whose
reader stopped reading, costs the caller nothing; the records are counted as dropped."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from monitor.wrapper.writer import UsageLogWriter, dropped_records
from tests.bedrock_server import BedrockServer, converse_reply
from tests.test_wrapper_log import MESSAGES, client_for

__all__ = ["client_for"]  # the fixture, shared with the log tests


def in_time(work: Any, seconds: float = 15.0) -> Any:
    """Run ``work`` in a thread; a call that blocks fails the test instead of hanging it."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked on the usage log"
    return result[0]


def test_a_fifo_nobody_reads_costs_the_caller_nothing(
    client_for: Any, server: BedrockServer, tmp_path: Path
) -> None:
    fifo = tmp_path / "usage.jsonl"
    os.mkfifo(fifo)
    client = client_for(fifo)
    dropped = dropped_records()
    replies = server.script(*(converse_reply(f"answer {n}") for n in range(3)))

    def calls() -> list[str]:
        return [
            client.converse(modelId="m", messages=MESSAGES)["output"]["message"]["content"][0][
                "text"
            ]
            for _ in replies
        ]

    assert in_time(calls) == ["answer 0", "answer 1", "answer 2"]
    assert dropped_records() == dropped + 3


def test_a_reader_that_stopped_reading_costs_the_writer_nothing(tmp_path: Path) -> None:
    fifo = tmp_path / "usage.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: the pipe fills
    try:
        writer = UsageLogWriter(fifo)
        line = b'{"v": 1, "padding": "' + b"x" * 1000 + b'"}\n'
        dropped = dropped_records()
        results = in_time(lambda: [writer.write(line) for _ in range(200)])  # ~200 KB > a pipe
        assert results[0] is True and results[-1] is False
        assert dropped_records() == dropped + results.count(False)
        # What did go through is whole lines.
        data = os.read(reader, 1 << 20)
        assert data and data.endswith(b"\n") and data.count(b"\n") == results.count(True)
        writer.close()
    finally:
        os.close(reader)

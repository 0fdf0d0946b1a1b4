"""The local feed: the tailer's thread queues batches, the consumer drains them, and the consumer
is woken only for what cannot wait for its next refresh (a model not seen before)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.feed import LocalFeed
from tests.conftest import record, write_lines

NOW = time.time()


def test_wakes_say_whether_a_batch_brought_a_new_model(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(epoch=NOW - 5, request_id="old", model_id="model-a"))
    feed = LocalFeed([str(log)], since=None, start_epoch=NOW - 3600)
    assert feed.catch_up() == 1
    wakes: list[bool] = []
    woken = threading.Event()

    def wake(new_model: bool) -> None:
        wakes.append(new_model)
        woken.set()

    feed.start(wake)
    try:
        for request_id, model in (("a-2", "model-a"), ("b-1", "model-b"), ("b-2", "model-b")):
            woken.clear()
            write_lines(log, record(epoch=NOW - 1, request_id=request_id, model_id=model))
            assert woken.wait(5), f"no wake-up after {request_id}"
        assert wakes == [False, True, False]  # model-a came with the catch-up
        assert feed.drain() == 3
        assert feed.store.model_ids() == ["model-a", "model-b"]
    finally:
        feed.stop()


def test_the_history_behind_the_screen_is_read_at_a_lower_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is read by a process niced below the screen (the screen comes first on a
    busy machine); the split catch-up of the report is not."""
    from monitor.sources import catchup

    log = tmp_path / "usage.jsonl"
    write_lines(log, *(record(epoch=NOW - 7200 + i) for i in range(2000)))
    write_lines(log, *(record(epoch=NOW - 10 + i / 100) for i in range(100)))
    asked: list[bool] = []

    class Recorded(catchup.SideReader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            asked.append(kwargs.get("background", False))
            # fork: the child inherits the patched os.nice below.
            super().__init__(*args, **{**kwargs, "method": "fork"})

    marks = tmp_path / "nice"

    def nice(increment: int) -> int:
        with marks.open("a") as handle:
            handle.write(f"{increment}\n")
        return 0

    monkeypatch.setattr("monitor.feed.SideReader", Recorded)
    monkeypatch.setattr(catchup.os, "nice", nice)
    for background in (True, False):
        feed = LocalFeed([str(log)], since=NOW - 86400, start_epoch=NOW - 86400)
        try:
            if background:
                feed.catch_up_recent(300, history_min_bytes=0)
                deadline = time.monotonic() + 30
                while not feed.finish_history():
                    assert time.monotonic() < deadline, "the history was never merged"
                    time.sleep(0.01)
            else:
                feed.catch_up(split_min_bytes=0)
            assert feed.store.stats.accepted == 2100
        finally:
            feed.stop()
    assert asked[0] is True and asked[-1] is False
    assert marks.read_text().split() == [str(catchup.BACKGROUND_NICENESS)]

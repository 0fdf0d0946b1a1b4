"""The local feed: the tailer's thread queues batches, the consumer drains them, and the consumer
is woken only for what cannot wait for its next refresh (a model not seen before)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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

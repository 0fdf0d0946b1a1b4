"""Logs that would hang, exhaust or fool the reader: FIFOs and devices named as logs, more files
than the process may open, records out of time order, records from the future."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor.feed import FUTURE_REASON, LocalFeed
from monitor.records import to_json_line
from monitor.sources.logtail import LogTailer
from tests.conftest import record, write_lines

ROOT = Path(__file__).resolve().parents[1]


def once(
    *args: str, stdin: int | None = None, limit_fds: int | None = None
) -> tuple[int, str, str]:
    """``bedrock-top --once`` in a process of its own, with a deadline: a hang fails the test."""

    def lower_fd_limit() -> None:
        if limit_fds is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))

    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--no-cloudwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        preexec_fn=lower_fd_limit,
    )
    return result.returncode, result.stdout, result.stderr


# -- nothing hangs ---------------------------------------------------------------------------------


def test_a_fifo_as_the_log_is_reported_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "usage.jsonl"
    os.mkfifo(fifo)  # nobody ever writes: opening it to read would block for ever
    status, out, err = once("--json", "--log", str(fifo))
    assert status == 1
    report = json.loads(out)
    assert "FIFO" in report["sources"]["log"]["errors"][str(fifo)]
    assert f"cannot read {fifo}" in err and "FIFO" in err


def test_dev_stdin_as_the_log_is_reported_not_read(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()  # stdin stays open and silent: a read would never end
    try:
        status, out, err = once("--log", "/dev/stdin", stdin=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert status == 1
    assert "/dev/stdin" in err and "not a regular file" in err
    assert "not a regular file" in out  # the report's source line says why too


def test_the_live_tailer_skips_a_fifo_and_keeps_reading_the_rest(tmp_path: Path) -> None:
    fifo = tmp_path / "a.jsonl"
    os.mkfifo(fifo)
    good = tmp_path / "b.jsonl"
    write_lines(good, record())
    got: list[int] = []
    tailer = LogTailer([str(tmp_path / "*.jsonl")], lambda batch: got.append(len(batch)))
    done = threading.Event()

    def one_pass() -> None:
        tailer.poll()
        done.set()

    threading.Thread(target=one_pass, daemon=True).start()
    assert done.wait(10), "a pass over a FIFO blocked"
    assert got == [1]
    assert "FIFO" in tailer.state.errors[str(fifo)]
    tailer.stop()


# -- file descriptors ------------------------------------------------------------------------------


def test_more_logs_than_descriptors_are_all_read(tmp_path: Path) -> None:
    now = time.time()
    for index in range(300):
        write_lines(tmp_path / f"app-{index:03d}.jsonl", record(epoch=now - 60))
    status, out, err = once("--json", "--log", str(tmp_path / "*.jsonl"), limit_fds=256)
    assert status == 0, err
    report = json.loads(out)
    assert report["sources"]["log"]["errors"] == {}
    assert report["totals"]["local"]["requests"] == 300


def test_idle_files_are_closed_and_reopened_when_they_change(tmp_path: Path) -> None:
    now = time.time()
    paths = [tmp_path / f"app-{index}.jsonl" for index in range(20)]
    for path in paths:
        write_lines(path, record(epoch=now))
    seen: list[str] = []
    tailer = LogTailer(
        [str(tmp_path / "*.jsonl")], lambda batch: seen.extend(r.request_id for r in batch)
    )
    tailer._open_budget = 4
    try:
        tailer.poll(now_monotonic=0.0)
        assert len(seen) == 20
        open_now = [f for f in tailer._followed.values() if f.fd is not None]
        assert len(open_now) <= 4
        # A file closed for being idle grows: it is opened again and its new line read once.
        closed = next(f for f in tailer._followed.values() if f.fd is None)
        late = record(epoch=now)
        write_lines(Path(closed.path), late)
        tailer.poll(now_monotonic=2.0)
        assert seen.count(late.request_id) == 1 and len(seen) == 21
        tailer.poll(now_monotonic=4.0)
        assert len(seen) == 21
        assert sum(f.fd is not None for f in tailer._followed.values()) <= 4
    finally:
        tailer.stop()


# -- time order ----------------------------------------------------------------------------------


def test_recent_records_before_older_ones_are_not_skipped(tmp_path: Path) -> None:
    """A merged or restored log: the recent records first, then weeks-old ones. The start-up
    search assumes time order; it must notice, and read the file from its start."""
    now = time.time()
    log = tmp_path / "usage.jsonl"
    recent = [record(epoch=now - 120 + i) for i in range(5)]
    old = [record(epoch=now - 20 * 86400 + i) for i in range(4000)]  # ~1.3 MB: the search runs
    with log.open("wb") as handle:
        handle.writelines(to_json_line(r) for r in [*recent, *old])
    status, out, err = once("--json", "--since", "1h", "--log", str(log))
    assert status == 0, err
    assert json.loads(out)["totals"]["local"]["requests"] == 5


def test_an_ordered_log_is_still_entered_near_its_end(tmp_path: Path) -> None:
    """The check costs a few reads, not a full read: an ordered log is entered by the search."""
    now = time.time()
    log = tmp_path / "usage.jsonl"
    with log.open("wb") as handle:
        handle.writelines(to_json_line(record(epoch=now - 20 * 86400 + i)) for i in range(4000))
        handle.writelines(to_json_line(record(epoch=now - 60 + i)) for i in range(3))
    feed = LocalFeed([str(log)], since=now - 3600, start_epoch=now - 86400, clock=lambda: now)
    feed.catch_up()
    assert feed.store.since_tally(None).requests == 3
    assert feed.tailer.state.lines_read < 400


def test_records_from_the_future_are_rejected_with_a_reason(tmp_path: Path) -> None:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_lines(
        log,
        record(epoch=now - 30),
        record(epoch=now + 60),  # a writer whose clock is a minute ahead: kept
        record(epoch=now + 86400, input_tokens=10**6),  # tomorrow: rejected
    )
    status, out, err = once("--json", "--log", str(log))
    assert status == 0, err
    report = json.loads(out)
    log_state = report["sources"]["log"]
    assert log_state["rejected_by_reason"] == {FUTURE_REASON: 1}
    assert report["totals"]["local"]["requests"] == 2
    assert report["totals"]["local"]["input_tokens"] == 200
    assert "ts in the future" in log_state["rejected_examples"][0]["reason"]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_character_device_is_not_read(device: str) -> None:
    status, out, err = once("--json", "--log", device)
    assert status == 1 and device in err
    assert "character device" in json.loads(out)["sources"]["log"]["errors"][device]

"""The tailer against real files on disk: append, partial lines, truncation, rotation, missing
files, several files, globs, bad input, and the start-up seek."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.records import UsageRecord, to_json_line
from monitor.sources.logtail import ROTATE_WAIT_S, LogTailer, find_start_offset, record_ts
from tests.conftest import record, write_lines


class Collector:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def __call__(self, batch: list[UsageRecord]) -> None:
        self.records.extend(batch)

    @property
    def ids(self) -> list[str]:
        return [r.request_id for r in self.records]


def tailer_for(
    *patterns: Path | str, start_epoch: float | None = None
) -> tuple[LogTailer, Collector]:
    got = Collector()
    return LogTailer([str(p) for p in patterns], got, start_epoch=start_epoch), got


def test_follows_appends(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="a"))
    tail, got = tailer_for(log)
    tail.poll()
    assert got.ids == ["a"]
    write_lines(log, record(request_id="b"), record(request_id="c"))
    tail.poll()
    assert got.ids == ["a", "b", "c"]
    tail.poll()
    assert got.ids == ["a", "b", "c"]  # nothing new, nothing repeated


def test_waits_for_a_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    line = to_json_line(record(request_id="half"))
    write_lines(log, line[:40])
    tail, got = tailer_for(log)
    tail.poll()
    assert got.records == []
    assert tail.state.rejected_total == 0
    write_lines(log, line[40:])
    tail.poll()
    assert got.ids == ["half"]


def test_truncation_restarts_from_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="old-1"), record(request_id="old-2"))
    tail, got = tailer_for(log)
    tail.poll()
    with log.open("wb"):
        pass  # truncate in place, same inode
    tail.poll()
    write_lines(log, record(request_id="new-1"))
    tail.poll()
    assert got.ids == ["old-1", "old-2", "new-1"]


def test_truncation_and_refill_between_polls(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, *(record(request_id=f"old-{i}") for i in range(5)))
    tail, got = tailer_for(log)
    tail.poll()
    log.write_bytes(to_json_line(record(request_id="fresh")))  # shorter than before
    tail.poll()
    assert got.ids[-1] == "fresh"


def test_rotation_finishes_the_old_file_then_reads_the_new(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="before"))
    tail, got = tailer_for(log)
    tail.poll()
    # A writer that still holds the old file appends to it after the rename.
    with log.open("ab") as old_handle:
        log.rename(tmp_path / "usage.jsonl.1")
        old_handle.write(to_json_line(record(request_id="late-to-old")))
    write_lines(log, record(request_id="after"))
    tail.poll()
    assert got.ids == ["before", "late-to-old", "after"]


def test_lines_appended_to_a_rotated_file_after_the_switch_are_still_read(tmp_path: Path) -> None:
    """Writers notice a rotation only at their next identity check: lines they append to the old
    file after the tailer moved to the new one are read for ROTATE_WAIT_S, then it is closed."""
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="before"))
    tail, got = tailer_for(log)
    start = time.monotonic()
    tail.poll(now_monotonic=start)
    with log.open("ab") as late_writer:
        log.rename(tmp_path / "usage.jsonl.1")
        write_lines(log, record(request_id="new"))
        tail.poll(now_monotonic=start + 0.1)  # the tailer is on the new file now
        tail.poll(now_monotonic=start + 1.0)
        late_writer.write(to_json_line(record(request_id="late")))
        late_writer.flush()
        tail.poll(now_monotonic=start + 1.5)
        assert sorted(got.ids) == ["before", "late", "new"]
        assert list(tail.state.files) == [str(log)]  # the old file is not shown as followed
        tail.poll(now_monotonic=start + 0.2 + ROTATE_WAIT_S)
        late_writer.write(to_json_line(record(request_id="too-late")))
        late_writer.flush()
        tail.poll(now_monotonic=start + 0.3 + ROTATE_WAIT_S)
    assert sorted(got.ids) == ["before", "late", "new"]
    assert len(tail._followed) == 1  # the rotated file was let go


def test_lines_written_to_a_deleted_log_within_the_wait_are_read(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="kept"))
    tail, got = tailer_for(log)
    start = time.monotonic()
    tail.poll(now_monotonic=start)
    with log.open("ab") as writer:
        log.unlink()
        tail.poll(now_monotonic=start + 0.1)
        tail.poll(now_monotonic=start + 1.0)
        writer.write(to_json_line(record(request_id="into-the-deleted-file")))
        writer.flush()
        tail.poll(now_monotonic=start + 1.5)
    assert got.ids == ["kept", "into-the-deleted-file"]
    assert tail.state.files == {}


def test_rotation_with_a_glob_does_not_read_a_file_twice(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="one"), record(request_id="two"))
    tail, got = tailer_for(tmp_path / "usage.jsonl*")
    tail.poll()
    log.rename(tmp_path / "usage.jsonl.1")
    write_lines(log, record(request_id="three"))
    tail.poll(now_monotonic=time.monotonic() + 10)  # force the glob to be expanded again
    assert sorted(got.ids) == ["one", "three", "two"]


def test_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "later" / "usage.jsonl"
    tail, got = tailer_for(log)
    tail.poll()
    assert got.records == []
    assert tail.state.waiting_for == [str(log)]
    log.parent.mkdir()
    write_lines(log, record(request_id="finally"))
    tail.poll(now_monotonic=time.monotonic() + 10)
    assert got.ids == ["finally"]
    assert tail.state.waiting_for == []


def test_several_files_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_lines(tmp_path / "a" / "usage.jsonl", record(request_id="a1"))
    write_lines(tmp_path / "b" / "usage.jsonl", record(request_id="b1"))
    write_lines(tmp_path / "single.jsonl", record(request_id="s1"))
    tail, got = tailer_for(tmp_path / "*" / "usage.jsonl", tmp_path / "single.jsonl")
    tail.poll()
    assert sorted(got.ids) == ["a1", "b1", "s1"]
    (tmp_path / "c").mkdir()
    write_lines(tmp_path / "c" / "usage.jsonl", record(request_id="c1"))
    tail.poll(now_monotonic=time.monotonic() + 10)
    assert sorted(got.ids) == ["a1", "b1", "c1", "s1"]


def test_bad_lines_are_counted_with_file_and_line_and_never_stop_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(
        log,
        b"\xef\xbb\xbf" + to_json_line(record(request_id="bom")),  # line 1: BOM, accepted
        b"not json at all\n",  # 2
        b"\n",  # 3: blank, ignored
        to_json_line(record(request_id="crlf")).replace(b"\n", b"\r\n"),  # 4: CRLF, accepted
        b'{"v": 1, "model_id": "x"}\n',  # 5: missing ts
        b"\x00\x01\x02\xff\xfe\n",  # 6: binary garbage
        b'{"v":1,"ts":"2026-01-01T00:00:00Z","request_id":"n","model_id":"m","operation":'
        b'"Converse","input_tokens":-5,"output_tokens":1,"latency_ms":1,"status":"ok",'
        b'"token_source":"body"}\n',  # 7: negative count
        to_json_line(record(request_id="last")),  # 8
    )
    tail, got = tailer_for(log)
    tail.poll()
    assert got.ids == ["bom", "crlf", "last"]
    state = tail.state.as_dict()
    assert state["rejected"] == 4
    where = {example["where"]: example["reason"] for example in state["rejected_examples"]}
    assert where == {
        f"{log}:2": "malformed JSON",
        f"{log}:5": "missing ts",
        f"{log}:6": "malformed JSON",
        f"{log}:7": "invalid input_tokens",
    }
    assert state["rejected_by_reason"] == {
        "malformed JSON": 2,
        "missing ts": 1,
        "invalid input_tokens": 1,
    }


def test_a_ten_megabyte_line_is_rejected_and_not_held(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="before"))
    tail, got = tailer_for(log)
    tail.poll()
    with log.open("ab") as handle:
        for _ in range(10):
            handle.write(b"y" * (1024 * 1024))  # 10 MB, no newline yet
    tail.poll()
    followed = next(iter(tail._followed.values()))
    assert len(followed.partial) == 0 and followed.discarding
    write_lines(log, b"tail of the long line\n", record(request_id="after"))
    tail.poll()
    assert got.ids == ["before", "after"]
    assert tail.state.rejected["line too long"] == 1
    assert tail.state.rejected_examples[-1].where == f"{log}:2"


def test_background_thread_delivers_new_lines_quickly(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    got = Collector()
    tail = LogTailer([str(log)], got, poll_interval=0.02)
    tail.start()
    try:
        time.sleep(0.1)
        written = time.monotonic()
        write_lines(log, record(request_id="fast"))
        while not got.records and time.monotonic() - written < 2:
            time.sleep(0.005)
        assert got.ids == ["fast"]
        assert time.monotonic() - written < 0.5
    finally:
        tail.stop()


def test_start_offset_skips_old_history_by_binary_search(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    base = 1_760_000_000.0
    lines = [to_json_line(record(epoch=base + i * 60, request_id=f"r{i}")) for i in range(20_000)]
    log.write_bytes(b"".join(lines))
    start = base + 19_000 * 60  # the last 1000 minutes
    with log.open("rb") as handle:
        offset = find_start_offset(handle.fileno(), os.path.getsize(log), start)
    # The first line needed is the one 5 minutes (the slack) before the start; the search may
    # stop up to one 64 KiB probe earlier, never later.
    needed = sum(len(x) for x in lines[: 19_000 - 5])
    assert needed - 64 * 1024 - len(lines[0]) <= offset <= needed
    assert offset == 0 or log.read_bytes()[offset - 1 : offset] == b"\n"
    first_ts = record_ts(log.read_bytes()[offset:].split(b"\n", 1)[0])
    assert first_ts is not None and first_ts <= start - 300
    tail, got = tailer_for(log, start_epoch=start)
    tail.poll()
    assert 1000 <= len(got.records) < 1100
    assert got.records[-1].request_id == "r19999"


def test_line_numbers_after_a_start_up_seek_are_absolute(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    base = 1_760_000_000.0
    lines = [to_json_line(record(epoch=base + i * 60, request_id=f"r{i}")) for i in range(5000)]
    log.write_bytes(b"".join(lines))
    tail, got = tailer_for(log, start_epoch=base + 4900 * 60)
    tail.poll()
    assert got.records[0].request_id != "r0"  # entered late in the file
    write_lines(log, b"broken\n")
    tail.poll()
    assert tail.state.rejected_examples[-1].where == f"{log}:5001"


# -- the tailer's own thread: change notifications, and polling where there are none ------------


def _counting_passes(tail: LogTailer) -> list[float]:
    passes: list[float] = []
    poll = tail.poll

    def counted(now_monotonic: float | None = None) -> int:
        passes.append(time.monotonic())
        return poll(now_monotonic)

    tail.poll = counted  # type: ignore[method-assign]
    return passes


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.parametrize("notifications", [True, False])
def test_the_running_tailer_reads_appends_soon(tmp_path: Path, notifications: bool) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="first"))
    got = Collector()
    tail = LogTailer([str(log)], got, notifications=notifications)
    tail.start()
    try:
        _wait_for(lambda: got.ids == ["first"])
        time.sleep(0.3)
        write_lines(log, record(request_id="second"))
        assert _wait_for(lambda: got.ids == ["first", "second"]) < 0.5
    finally:
        tail.stop()


def test_an_idle_tailer_with_notifications_wakes_about_once_a_second(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(request_id="only"))
    tail, got = tailer_for(log)
    passes = _counting_passes(tail)
    tail.start()
    try:
        _wait_for(lambda: got.ids == ["only"])
        before = len(passes)
        time.sleep(2.5)
        idle_passes = len(passes) - before
    finally:
        tail.stop()
    assert idle_passes <= 4  # polling would have made 50


def test_stop_does_not_wait_for_the_idle_pass(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    log.touch()
    tail, _ = tailer_for(log)
    tail.start()
    time.sleep(0.2)
    started = time.monotonic()
    tail.stop()
    assert time.monotonic() - started < 0.5


def test_notifications_follow_rotation_and_a_directory_that_appears_later(tmp_path: Path) -> None:
    log = tmp_path / "later" / "usage.jsonl"
    got = Collector()
    tail = LogTailer([str(log)], got)
    tail.start()
    try:
        time.sleep(0.2)
        log.parent.mkdir()
        write_lines(log, record(request_id="one"))
        _wait_for(lambda: got.ids == ["one"])
        log.rename(log.with_name("usage.jsonl.1"))
        write_lines(log, record(request_id="two"))
        assert _wait_for(lambda: got.ids == ["one", "two"]) < 1.5
        write_lines(log, record(request_id="three"))
        assert _wait_for(lambda: got.ids == ["one", "two", "three"]) < 0.5
    finally:
        tail.stop()

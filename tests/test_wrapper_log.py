"""Writing the usage log: concurrency, permissions, rotation, and failures that must stay silent."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from monitor.records import parse_line, to_json_line
from monitor.sources.logtail import ROTATE_WAIT_S, LogTailer
from monitor.wrapper import dropped_records, instrument
from monitor.wrapper.writer import UsageLogWriter, parse_max_bytes, rotated_path
from tests.bedrock_server import TEST_AWS_ENV, BedrockServer, converse_reply, read_records

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]

# Each worker process writes THREADS x COUNT records through the real writer, from threads.
WORKER = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from monitor.records import make_record, to_json_line
    from monitor.wrapper.writer import writer_for

    path, proc, threads, count = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    writer = writer_for(path, int(sys.argv[5]) or None)

    def work(thread):
        # One real record per thread; each line differs in its request id, as real ones do.
        base = make_record(
            epoch=time.time(), request_id="x",
            model_id="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            operation="ConverseStream", input_tokens=1200, output_tokens=340,
            latency_ms=812.5, ttft_ms=120.25, status="ok", token_source="stream",
            region="us-east-1", app="load-test", tags={"proc": str(proc), "thread": str(thread)},
        )
        template = to_json_line(base)
        for i in range(count):
            request_id = b'"request_id":"%d-%d-%d"' % (proc, thread, i)
            if not writer.write(template.replace(b'"request_id":"x"', request_id)):
                sys.exit("write failed")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    """
)


def run_writers(path: Path, processes: int, threads: int, count: int, max_bytes: int = 0) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(path),
                str(p),
                str(threads),
                str(count),
                str(max_bytes),
            ],
            env=env,
        )
        for p in range(processes)
    ]
    assert [child.wait(timeout=120) for child in children] == [0] * processes


def test_eight_processes_four_threads_share_one_log(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    run_writers(log, processes=8, threads=4, count=2000)
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 64_000
    ids = {parse_line(line).request_id for line in lines}  # every line a valid record
    assert len(ids) == 64_000
    assert ids == {f"{p}-{t}-{i}" for p in range(8) for t in range(4) for i in range(2000)}


def test_rotation_under_concurrency_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    # About 4,000 lines of ~400 bytes; the limit makes exactly one rotation happen.
    run_writers(log, processes=2, threads=2, count=1000, max_bytes=1_000_000)
    current, rotated = read_records(log), read_records(rotated_path(log))
    assert rotated and current
    assert os.path.getsize(rotated_path(log)) >= 1_000_000
    ids = [r.request_id for r in current + rotated]
    assert len(ids) == len(set(ids)) == 4000
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_new_log_is_private_and_its_directory_created(tmp_path: Path) -> None:
    log = tmp_path / "a" / "b" / "usage.jsonl"
    writer = UsageLogWriter(log)
    assert writer.write(b'{"x":1}\n')
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert log.read_bytes() == b'{"x":1}\n'


def test_writer_follows_a_removed_directory(tmp_path: Path) -> None:
    log = tmp_path / "gone" / "usage.jsonl"
    writer = UsageLogWriter(log)
    assert writer.write(b"first\n")
    shutil.rmtree(log.parent)
    time.sleep(writer.identity_check_s)  # the path is checked at most this often
    assert writer.write(b"second\n")
    assert log.read_bytes() == b"second\n"


def test_writer_checks_the_path_at_most_every_identity_check(tmp_path: Path) -> None:
    """Between checks a record goes to the file already open (where a tailer still reads it,
    see test_logtail); after the check, to the file the path names."""
    log = tmp_path / "usage.jsonl"
    writer = UsageLogWriter(log)
    writer.identity_check_s = 3600.0
    assert writer.write(b"one\n")
    log.rename(rotated_path(log))
    assert writer.write(b"two\n")
    assert not log.exists()
    assert rotated_path(log).read_bytes() == b"one\ntwo\n"
    writer._check_due = 0.0  # the hour has passed
    assert writer.write(b"three\n")
    assert log.read_bytes() == b"three\n"
    assert UsageLogWriter.identity_check_s < ROTATE_WAIT_S  # late records reach the tailer


def test_rotation_size_setting() -> None:
    assert parse_max_bytes("50M") == 50 * 1024 * 1024
    assert parse_max_bytes("1024") == 1024
    assert parse_max_bytes("") is None
    with pytest.raises(ValueError):
        parse_max_bytes("lots")


# -- the caller never notices ------------------------------------------------------------------


@pytest.fixture
def client_for(server: BedrockServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("monitor.wrapper.writer._warned", False)

    def make(log: str | Path) -> Any:
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=server.endpoint_url,
            config=Config(retries={"total_max_attempts": 1}),
        )
        return instrument(client, log_path=log)

    return make


@pytest.mark.parametrize("where", ["dev-full", "parent-is-a-file", "directory-not-creatable"])
def test_unwritable_log_leaves_the_caller_unaffected(
    client_for: Any,
    server: BedrockServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    if where == "dev-full":
        log = Path("/dev/full")
    elif where == "parent-is-a-file":
        (tmp_path / "file").write_text("not a directory")
        log = tmp_path / "file" / "usage.jsonl"
    else:
        log = Path("/proc/bedrock-top/usage.jsonl")
    client = client_for(log)
    dropped = dropped_records()
    replies = server.script(*(converse_reply(f"answer {n}", input_tokens=n) for n in range(5)))
    with caplog.at_level(logging.WARNING, logger="monitor.wrapper"):
        answers = [
            client.converse(modelId="m", messages=MESSAGES)["output"]["message"]["content"][0][
                "text"
            ]
            for _ in replies
        ]
        list(client.converse_stream(modelId="m", messages=MESSAGES)["stream"])
    assert answers == [f"answer {n}" for n in range(5)]
    assert dropped_records() == dropped + 6
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "dropped" in warnings[0].getMessage()


def test_log_recovers_once_writable_again(client_for: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    client = client_for(blocker / "usage.jsonl")
    client.converse(modelId="m", messages=MESSAGES)
    blocker.unlink()
    client.converse(modelId="m", messages=MESSAGES)
    assert len(read_records(blocker / "usage.jsonl")) == 1


def test_a_tailer_sees_every_record_of_writers_that_rotate(tmp_path: Path) -> None:
    """Two writers (as two processes would) rotate one log every ~50 lines while a tailer
    follows its path: every record is read exactly once, including those a writer appended to
    a file already rotated away before its next identity check."""
    from tests.conftest import record

    log = tmp_path / "usage.jsonl"
    writers = [UsageLogWriter(log, max_bytes=20_000) for _ in range(2)]
    seen: list[str] = []
    tail = LogTailer([str(log)], lambda batch: seen.extend(r.request_id for r in batch))
    for index in range(3000):
        assert writers[index % 2].write(to_json_line(record(request_id=f"r{index}")))
        if index % 40 == 0:
            tail.poll()
    tail.poll()
    assert len(seen) == len(set(seen)) == 3000

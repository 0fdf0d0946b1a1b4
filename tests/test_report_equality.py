"""The same records give the same ``--once --json`` report, byte for byte, whatever path the
ingest takes (block ingest, split catch-up, history filled after the newest minutes).

``tests/data/equality/*.json`` were written by the record-by-record ingest this project had
before block ingest: regenerate them only for a deliberate change of the report, with
``BEDROCK_TOP_WRITE_FIXTURES=1``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.cli import parse_args
from monitor.feed import LocalFeed
from monitor.records import record_line
from monitor.report import render_json

NOW = 1_790_000_123.456
FIXTURES = Path(__file__).parent / "data" / "equality"
MODELS = (
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-haiku-4-5-20251001-v1:0",
    "amazon.nova-lite-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "amazon.titan-text-express-v1",
    "mistral.mistral-large-2407-v1:0",
)
STATUSES = ("ok",) * 40 + ("client_error", "server_error", "throttled", "aborted")
BAD_LINES = (
    b"garbage line\n",
    b'{"v":1,"ts":"2026-01-01T00:00:00Z"}\n',
    b'{"v":2,"ts":"2026-01-01T00:00:00Z","request_id":"x"}\n',
    b"[1,2,3]\n",
    b'{"v":1,"ts":"not a time","request_id":"r","model_id":"m","operation":"Converse",'
    b'"input_tokens":1,"output_tokens":1,"latency_ms":1,"status":"ok","token_source":"body"}\n',
)
CONFIG = """\
timezone = "Europe/Berlin"

[[budgets]]
name = "haiku daily"
models = ["anthropic.claude-3-haiku-*"]
period = "day"
limit_usd = 5.0
source = "local"

[[budgets]]
name = "all monthly"
period = "month"
limit_tokens = 50_000_000
source = "local"
"""


def _line(rng: random.Random, epoch: float, serial: int) -> bytes:
    status = rng.choice(STATUSES)
    streamed = rng.random() < 0.4
    return record_line(
        epoch=epoch,
        request_id=f"req-{serial:07d}",
        model_id=MODELS[rng.randrange(len(MODELS))],
        operation="ConverseStream" if streamed else "Converse",
        input_tokens=rng.randrange(0, 5000) if status == "ok" else rng.choice((0, 12)),
        output_tokens=rng.randrange(0, 1500) if status == "ok" else 0,
        cache_read_input_tokens=rng.choice((0, 0, 0, rng.randrange(1, 9000))),
        cache_write_input_tokens=rng.choice((0, 0, 0, 0, rng.randrange(1, 3000))),
        latency_ms=round(rng.lognormvariate(6.5, 0.9), 3),
        ttft_ms=round(rng.lognormvariate(5.0, 0.7), 3) if streamed else None,
        status=status,  # type: ignore[arg-type]
        error_code=None if status == "ok" else "SomeException",
        token_source=rng.choice(("body", "body", "header", "stream", "estimate")),
        app=rng.choice((None, "chat", "batch")),
    )


def write_corpus(directory: Path, records: int = 24_000, seed: int = 13) -> list[Path]:
    """Three time-ordered logs over the last ~3 days (and a little before, and a little
    ahead of the last second), with repeated lines, replaced request ids and bad lines."""
    rng = random.Random(seed)
    paths = [directory / f"usage-{index}.jsonl" for index in range(3)]
    handles = [path.open("wb") for path in paths]
    span = 3 * 86400 + 1800
    start = NOW - span
    try:
        for serial in range(records):
            # Denser near the end, as a live host is: a quarter of the records in the last hour.
            if serial % 4 == 0:
                epoch = NOW - 3600 + 3600 * (serial / records)
            else:
                epoch = start + (span - 3600) * (serial / records)
            epoch = min(epoch + rng.uniform(-2, 2), NOW - 0.01)
            handle = handles[serial % 3]
            line = _line(rng, epoch, serial)
            handle.write(line)
            roll = rng.random()
            if roll < 0.01:
                handle.write(line)  # the same line twice
            elif roll < 0.02:
                # The same request id again, other values (the last one wins).
                handle.write(_line(rng, epoch + 0.5, serial))
            elif roll < 0.025:
                handle.write(rng.choice(BAD_LINES))
            elif roll < 0.027:
                handle.write(b"\n")
    finally:
        for handle in handles:
            handle.close()
    return paths


def once_json(
    directory: Path,
    since: str,
    now: float = NOW,
    catch_up: Callable[[LocalFeed], object] | None = None,
) -> str:
    """``bedrock-top --once --json --since SINCE --no-cloudwatch`` at a fixed clock, with the
    scratch directory named as ``<logs>`` so that the text does not depend on it."""
    from monitor.cli import once_report
    from monitor.report import render_json

    config = directory / "config.toml"
    config.write_text(CONFIG)
    args = parse_args(
        [
            "--once",
            "--json",
            "--no-cloudwatch",
            "--config",
            str(config),
            "--log",
            str(directory / "usage-*.jsonl"),
            "--since",
            since,
        ]
    )
    args.since_epoch = now - {"1h": 3600, "24h": 86400, "7d": 7 * 86400}[since]
    return render_json(once_report(args, now, catch_up)).replace(str(directory), "<logs>")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("equality")
    write_corpus(directory)
    return directory


def as_fixture(text: str, fixture: Path) -> str:
    """The report cut to the fields the fixture has, rendered as the report renders them. The
    fixtures hold what record-by-record ingest printed; fields added to the report since (the
    fleet, apps and callers, the bill) are compared between the ways of reading instead."""
    want = json.loads(fixture.read_text())

    def cut(got: object, shape: object) -> object:
        if isinstance(got, dict) and isinstance(shape, dict):
            return {key: cut(value, shape[key]) for key, value in got.items() if key in shape}
        if isinstance(got, list) and isinstance(shape, list) and len(got) == len(shape):
            return [cut(g, w) for g, w in zip(got, shape, strict=True)]
        return got

    return render_json(cut(json.loads(text), want)) + "\n"


@pytest.mark.parametrize("since", ["1h", "24h", "7d"])
def test_report_is_byte_for_byte_the_record_by_record_one(corpus: Path, since: str) -> None:
    text = once_json(corpus, since)
    fixture = FIXTURES / f"since-{since}.json"
    if os.environ.get("BEDROCK_TOP_WRITE_FIXTURES"):
        fixture.parent.mkdir(parents=True, exist_ok=True)
        fixture.write_text(text + "\n")
    report = json.loads(text)
    # The corpus has what the comparison is about.
    log = report["sources"]["log"]
    assert log["rejected"] > 0 and len(log["files"]) == 3
    assert report["totals"]["local"]["requests"] > 0
    assert as_fixture(text, fixture) == fixture.read_text()


def split_catch_up(feed: LocalFeed) -> None:
    """The older half read by a second process, whatever the size."""
    feed.catch_up(split_min_bytes=0)


def history_behind(feed: LocalFeed) -> None:
    """The live screen's start: the newest 20 minutes first, the rest read by another
    process and merged when it is done."""
    feed.catch_up_recent(20 * 60, history_min_bytes=0)
    assert feed.history is not None
    deadline = time.monotonic() + 60
    while not feed.finish_history():
        assert time.monotonic() < deadline, "the history was never merged"
        time.sleep(0.02)


@pytest.mark.parametrize("since", ["1h", "24h", "7d"])
def test_a_catch_up_split_across_processes_gives_the_same_report(corpus: Path, since: str) -> None:
    fixture = FIXTURES / f"since-{since}.json"
    split = once_json(corpus, since, catch_up=split_catch_up)
    assert as_fixture(split, fixture) == fixture.read_text()
    # Every field, apps and callers included, as one process reads it.
    one = json.loads(once_json(corpus, since))
    assert one["apps"] and one["callers"]
    assert json.loads(split) == one


@pytest.mark.parametrize("since", ["1h", "24h"])
def test_history_read_behind_the_first_frame_gives_the_same_numbers(
    corpus: Path, since: str
) -> None:
    """Every number is the same. Only the examples of rejected lines differ: the last twenty
    seen, and the newest minutes of every file were seen before the older ones."""
    fixture = FIXTURES / f"since-{since}.json"
    behind = once_json(corpus, since, catch_up=history_behind)
    got = json.loads(as_fixture(behind, fixture))
    want = json.loads(fixture.read_text())
    examples = [report["sources"]["log"].pop("rejected_examples") for report in (got, want)]
    assert len(examples[0]) == len(examples[1]) == 20
    assert got == want
    one = json.loads(once_json(corpus, since))
    assert json.loads(behind)["apps"] == one["apps"]
    assert json.loads(behind)["callers"] == one["callers"]

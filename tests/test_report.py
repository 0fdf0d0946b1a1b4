"""The headless report: JSON fields, table, one line, exit statuses, and --demo --once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.records import parse_line, to_json_line
from monitor.sources.demo import DemoWorkload
from tests.conftest import record, write_lines

ROOT = Path(__file__).resolve().parents[1]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.fixture
def usage_log(tmp_path: Path) -> Path:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_lines(
        log,
        record(epoch=now - 30, model_id=HAIKU, input_tokens=100, output_tokens=10, latency_ms=200),
        record(epoch=now - 20, model_id=HAIKU, input_tokens=300, output_tokens=30, latency_ms=400),
        record(
            epoch=now - 10,
            model_id=SONNET,
            input_tokens=1000,
            output_tokens=500,
            latency_ms=3000,
            ttft_ms=250,
            cache_read_input_tokens=2000,
            operation="ConverseStream",
            token_source="stream",
        ),
        record(
            epoch=now - 5,
            model_id=SONNET,
            status="throttled",
            input_tokens=0,
            output_tokens=0,
            error_code="ThrottlingException",
            token_source="none",
        ),
        record(epoch=now - 7200, model_id=HAIKU, input_tokens=99999),  # outside --since 1h
        b"garbage line\n",
    )
    return log


def test_once_json_has_the_contract_fields(usage_log: Path) -> None:
    result = run("--once", "--json", "--log", str(usage_log), "--no-cloudwatch")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"generated_at", "since", "sources", "totals", "models"}
    log_state = report["sources"]["log"]
    assert log_state["records"] == 5 and log_state["rejected"] == 1
    assert log_state["rejected_by_reason"] == {"malformed JSON": 1}
    assert log_state["rejected_examples"][0]["where"] == f"{usage_log}:6"
    by_model = {entry["model_id"]: entry["local"] for entry in report["models"]}
    assert list(by_model) == [SONNET, HAIKU]  # most tokens first
    haiku = by_model[HAIKU]
    assert haiku["requests"] == 2 and haiku["input_tokens"] == 400 and haiku["output_tokens"] == 40
    assert haiku["errors"] == 0 and haiku["throttles"] == 0
    assert haiku["latency_ms"]["max"] == 400
    assert haiku["latency_ms"]["p50"] == pytest.approx(200, rel=0.02)
    assert set(haiku["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert haiku["ttft_ms"] == {"p50": None, "p90": None, "p99": None, "max": None}
    assert haiku["rates"]["requests_per_min"] == 2
    assert haiku["rates"]["input_tokens_per_s"] == pytest.approx(400 / 60, abs=1e-3)
    sonnet = by_model[SONNET]
    assert sonnet["throttles"] == 1 and sonnet["cache_read_input_tokens"] == 2000
    assert sonnet["ttft_ms"]["max"] == 250
    totals = report["totals"]["local"]
    assert totals["requests"] == 4 and totals["input_tokens"] == 1400
    for key in (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "errors",
        "throttles",
        "latency_ms",
        "ttft_ms",
        "rates",
    ):
        assert key in haiku and key in totals
    assert "rejected" in result.stderr  # the diagnostic goes to stderr, not into the JSON


def test_since_takes_durations_and_timestamps(usage_log: Path) -> None:
    wide = json.loads(run("--once", "--json", "--log", str(usage_log), "--since", "3h").stdout)
    assert wide["totals"]["local"]["requests"] == 5
    # Between the records written 20 s and 10 s before the fixture's clock, however long the
    # first run took on a loaded machine.
    third = parse_line(usage_log.read_bytes().splitlines()[2]).epoch
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(third - 5))
    narrow = json.loads(run("--once", "--json", "--log", str(usage_log), "--since", start).stdout)
    assert narrow["totals"]["local"]["requests"] == 2
    assert narrow["since"] == start


@pytest.mark.parametrize(
    "args",
    [
        ("--once", "--since", "yesterday"),
        ("--once", "--format", "xml"),
        ("--bogus",),
        ("--format", "line"),
        ("--once", "--json", "--format", "line"),
        ("--poll-interval", "1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("bedrock-top: ") and result.stderr.count("\n") == 1


def test_table_and_line_formats(usage_log: Path) -> None:
    table = run("--once", "--log", str(usage_log))
    assert table.returncode == 0
    assert "MODEL (local: this host)" in table.stdout
    assert "claude-3-haiku-20240307-v1:0" in table.stdout and "TOTAL" in table.stdout
    line = run("--once", "--format", "line", "--log", str(usage_log))
    assert line.returncode == 0
    assert line.stdout.count("\n") == 1
    assert "4 req/min" in line.stdout


def test_once_never_imports_textual(usage_log: Path) -> None:
    code = (
        "import sys; from monitor.cli import main; "
        f"main(['--once', '--json', '--log', {str(usage_log)!r}]); "
        "print('TEXTUAL', 'textual' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "TEXTUAL False" in result.stderr


def test_missing_log_is_reported_not_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "usage.jsonl"
    result = run("--once", "--json", "--log", str(missing))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["sources"]["log"]["waiting_for"] == [str(missing)]
    assert report["models"] == []


def test_default_log_path_follows_the_environment(usage_log: Path) -> None:
    result = run("--once", "--json", env={"BEDROCK_TOP_LOG": str(usage_log)})
    assert json.loads(result.stdout)["sources"]["log"]["patterns"] == [str(usage_log)]


def test_demo_once_reports_the_seeded_history() -> None:
    result = run("--demo", "--once", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The same seed gives the same 15 minutes of calls, whatever the clock says.
    expected = list(DemoWorkload(seed=7).arrivals(1_000_000.0, 1_000_000.0 + 900))
    totals = report["totals"]["local"]
    assert totals["requests"] == len(expected)
    assert totals["output_tokens"] == sum(r.output_tokens for r in expected)
    assert totals["throttles"] == sum(1 for r in expected if r.status == "throttled")
    models = {entry["model_id"] for entry in report["models"]}
    assert len(models) >= 6
    assert any(m.startswith("us.") for m in models) and any(m.startswith("global.") for m in models)
    assert any("titan" in m for m in models) and any("llama" in m for m in models)
    assert totals["estimated_requests"] >= 1
    assert totals["cache_read_input_tokens"] > 0 and totals["cache_write_input_tokens"] > 0
    assert totals["ttft_ms"]["p50"] is not None
    assert totals["errors"] > 0


def test_demo_records_are_valid_v1_lines() -> None:
    for rec in DemoWorkload(seed=3).arrivals(0.0, 300.0):
        assert parse_line(to_json_line(rec)) == rec

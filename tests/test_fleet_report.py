"""``bedrock-top --once`` with the fleet source: the real program against moto's CloudWatch Logs
and Bedrock on loopback, with invocation logging configured and events from several callers and
apps. Fleet totals equal the events' sums and stay apart from local and CloudWatch; bodies never
appear anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import record, write_lines
from tests.fleet_events import (
    GROUP,
    SECRET_ANSWER,
    SECRET_PROMPT,
    assumed_role,
    invocation_event,
    message,
    put_events,
    turn_on_invocation_logging,
)
from tests.moto_process import moto_url_of_module, reset_moto

ROOT = Path(__file__).resolve().parents[1]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from moto_url_of_module()


@pytest.fixture
def env(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The program's environment: dummy credentials, moto as every AWS endpoint, no real AWS
    files. The tests' own seeding clients get the same credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reset_moto(moto_url)
    values = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    values.pop("AWS_PROFILE", None)
    return values


def seed(moto_url: str, now: float) -> list[dict[str, Any]]:
    """Invocation logging on, and events from three callers and three apps."""
    logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1")
    turn_on_invocation_logging(
        boto3.client("bedrock", endpoint_url=moto_url, region_name="us-east-1")
    )
    plan = [
        (assumed_role("support-bot", "i-1"), "support-bot", HAIKU, 40),
        (assumed_role("support-bot", "i-2"), "support-bot", NOVA, 25),
        ("arn:aws:iam::123456789012:user/alice", "notebook", HAIKU, 10),
        (assumed_role("etl", "lambda-7"), None, NOVA, 30),
    ]
    events = []
    step = 0
    for arn, app, model, count in plan:
        for _ in range(count):
            step += 1
            events.append(
                invocation_event(
                    now - 600 + step * 3,
                    caller_arn=arn,
                    app=app,
                    model_id=model,
                    input_tokens=100 + step,
                    output_tokens=step % 17,
                    cache_read=step % 5 or None,
                    error_code="ThrottlingException" if step % 23 == 0 else None,
                )
            )
    put_events(logs, GROUP, "2026/12/01/[$LATEST]abc", [(now - 600, message(e)) for e in events])
    return events


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_fleet_totals_per_model_app_and_caller_equal_the_events(
    moto_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    now = time.time()
    events = seed(moto_url, now)
    log = tmp_path / "usage.jsonl"
    # A local log with a request the fleet also saw: each view counts it once, apart.
    write_lines(log, record(epoch=now - 30, model_id=HAIKU, input_tokens=7, app="support-bot"))
    result = run(env, "--once", "--json", "--log", str(log), "--since", "1h")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fleet_state = report["sources"]["fleet"]
    assert fleet_state["state"] == "ok", fleet_state
    assert fleet_state["log_groups"] == [GROUP]
    assert fleet_state["events"] == len(events)

    def key(e: dict[str, Any]) -> tuple[int, int]:
        return e["input"]["inputTokenCount"], e.get("output", {}).get("outputTokenCount", 0)

    by_model: dict[str, Counter[str]] = defaultdict(Counter)
    by_app: dict[str, Counter[str]] = defaultdict(Counter)
    by_caller: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        arn = e["identity"]["arn"]
        caller = arn.split("assumed-role/")[-1] if "assumed-role" in arn else "user/alice"
        app = (e.get("requestMetadata") or {}).get("app", "(none)")
        for table, name in ((by_model, e["modelId"]), (by_app, app), (by_caller, caller)):
            table[name]["requests"] += 1
            table[name]["input_tokens"] += key(e)[0]
            table[name]["output_tokens"] += key(e)[1]
            table[name]["cache_read_input_tokens"] += e["input"].get("cacheReadInputTokenCount", 0)
            table[name]["throttles"] += "errorCode" in e

    models = {m["model_id"]: m for m in report["models"]}
    for model_id, sums in by_model.items():
        fleet = models[model_id]["fleet"]
        for field, value in sums.items():
            assert fleet[field] == value, (model_id, field)
    # The local log's numbers are its own: not added to the fleet's, nor the fleet's to them.
    assert models[HAIKU]["local"]["requests"] == 1
    assert models[HAIKU]["local"]["input_tokens"] == 7
    assert report["totals"]["local"]["requests"] == 1
    assert report["totals"]["fleet"]["requests"] == len(events)
    assert models[NOVA]["local"] is None

    for field_name, dimension, expected in (
        ("apps", "app", by_app),
        ("callers", "caller", by_caller),
    ):
        fleet_groups = {g[dimension]: g for g in report[field_name] if g["source"] == "fleet"}
        assert set(fleet_groups) == set(expected)
        for name, sums in expected.items():
            for field, value in sums.items():
                assert fleet_groups[name][field] == value, (dimension, name, field)
            split = fleet_groups[name]["models"]
            assert sum(m["requests"] for m in split) == sums["requests"]
    local_apps = [g for g in report["apps"] if g["source"] == "local"]
    assert [(g["app"], g["requests"]) for g in local_apps] == [("support-bot", 1)]
    # support-bot's two callers used two models; its drill-down names both.
    bot = next(g for g in report["apps"] if g["source"] == "fleet" and g["app"] == "support-bot")
    assert {m["model_id"] for m in bot["models"]} == {HAIKU, NOVA}
    assert bot["cost_usd"] is not None and bot["cost_usd"] > 0

    table = run(env, "--once", "--log", str(log))
    assert table.returncode == 0, table.stderr
    assert "MODEL (fleet: invocation logs)" in table.stdout
    assert "support-bot/i-1 (fleet)" in table.stdout


def test_logging_off_is_said_and_the_rest_works(
    moto_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(epoch=time.time() - 5, model_id=HAIKU))
    result = run(env, "--once", "--json", "--log", str(log))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sources"]["fleet"]["state"] == "disabled"
    assert "invocation logging is off" in report["sources"]["fleet"]["message"]
    assert report["totals"]["local"]["requests"] == 1
    assert "fleet" not in report["totals"]


def test_no_fleet_flag(moto_url: str, env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "--once", "--json", "--no-fleet", "--log", str(tmp_path / "none.jsonl"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sources"]["fleet"]["state"] == "disabled"
    assert "--no-fleet" in report["sources"]["fleet"]["message"]


def test_bodies_never_appear_in_any_output_report_or_file(
    moto_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """The privacy test: secrets placed in prompt and response bodies of every operation."""
    now = time.time()
    seed(moto_url, now)
    logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1")
    extra = [
        invocation_event(now - 60, operation=op, caller_arn=assumed_role("r", "s"))
        for op in ("InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream")
    ]
    put_events(logs, GROUP, "more", [(now - 60, message(e)) for e in extra])
    config = tmp_path / "config.toml"
    config.write_text(f'[sources]\nlog_groups = ["{GROUP}"]\n')
    outputs = []
    for args in (
        ("--once", "--json"),
        ("--once",),
        ("--once", "--format", "line"),
        ("--once", "--json", "--config", str(config)),
    ):
        result = run(env, *args, "--log", str(tmp_path / "usage.jsonl"))
        assert result.returncode == 0, result.stderr
        if "--json" in args:  # the bodies were read (and dropped), not skipped
            assert json.loads(result.stdout)["totals"]["fleet"]["requests"] == 105 + 4
        outputs += [result.stdout, result.stderr]
    for text in outputs:
        assert SECRET_PROMPT not in text and SECRET_ANSWER not in text
        assert "hunter2" not in text and "launch codes" not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"hunter2" not in data and b"launch codes" not in data, path


def test_export_publishes_the_fleet_as_a_source_of_its_own(
    moto_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """``bedrock-top export`` follows the fleet as the live screen does: its counters carry
    ``source="fleet"`` and equal the report's fleet totals; the local log's stay apart."""
    from tests.test_exporter import COUNTER_OF, Exporter, counter

    now = time.time()
    events = seed(moto_url, now)
    log = tmp_path / "usage.jsonl"
    write_lines(log, record(epoch=now - 30, model_id=HAIKU, input_tokens=7))
    flags = ("--log", str(log), "--no-cloudwatch", "--log-group", GROUP, "--no-quotas")
    report = json.loads(run(env, "--once", "--json", *flags).stdout)
    fleet_totals = report["totals"]["fleet"]
    assert fleet_totals["requests"] == len(events)
    exporter = Exporter(tmp_path, *flags, "--prometheus", "0", env=env)
    try:
        families = exporter.wait_for(
            lambda f: counter(f, "bedrock_top_requests", source="fleet") == len(events)
        )
        for field, name in COUNTER_OF.items():
            assert counter(families, name, source="fleet") == fleet_totals[field], field
        assert counter(families, "bedrock_top_requests", source="local") == 1
        up = {s.labels["source"]: s.value for s in families["bedrock_top_source_up"].samples}
        assert up["fleet"] == 1 and up["local"] == 1
    finally:
        assert exporter.stop() == 0

"""Untrusted text never reaches the terminal raw: every string field of a usage record and a
CloudWatch ``ModelId`` dimension carry escape sequences, line breaks, C1 codes and bidi
overrides, and every view (the live screen under tmux, the ``--once`` table, ``--format line``,
notices and dialogs) shows them as visible escapes, while the JSON report keeps them exact."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitor.formatting import printable
from monitor.ui.app import BedrockTopApp
from tests.conftest import record, write_lines
from tests.moto_process import MotoServer
from tests.test_tmux import ROOT, Tmux, needs_tmux

# What an attacker would write: rename the terminal, wipe the screen, split a row, reorder text,
# and the 8-bit CSI.
TITLE = "\x1b]0;PWNED\x07"
PAYLOADS = (TITLE, "\x1b[2J\x1b[H", "two\nlines", "\u202eevil", "\x9b31m", "\r\x08")
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
POISON = "".join(PAYLOADS)
LOCAL_MODEL = f"anthropic.claude-{POISON}-v1:0"
CLOUD_MODEL = f"amazon.nova-{POISON}-v1:0"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = MotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    cw: Any = boto3.client(
        "cloudwatch",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    minute = dt.datetime.fromtimestamp((time.time() // 60 - 3) * 60, tz=dt.UTC)
    cw.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "ModelId", "Value": CLOUD_MODEL}],
                "Timestamp": minute,
                "Value": value,
            }
            for name, value in (("Invocations", 7), ("InputTokenCount", 700))
        ],
    )
    yield url
    server.stop()


@pytest.fixture
def poisoned_log(tmp_path: Path) -> Path:
    """Every string field of a record holds every payload."""
    path = tmp_path / "usage.jsonl"
    now = time.time()
    write_lines(
        path,
        *(
            record(
                epoch=now - 30 + i,
                model_id=LOCAL_MODEL,
                request_id=f"req-{i}-{POISON}"[:256],
                region=POISON,
                status="client_error",
                error_code=POISON,
                app=POISON,
                tags={POISON[:64]: POISON},
            )
            for i in range(3)
        ),
    )
    return path


def run_once(log: Path, moto_url: str, *extra: str) -> str:
    cloud = () if "--endpoint-url" in extra else ("--no-cloudwatch",)
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--log", str(log), *cloud, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **AWS_ENV},
    )
    assert result.returncode == 0, result.stderr
    assert not RAW.search(result.stderr), result.stderr
    return result.stdout


def cloud_args(moto_url: str) -> tuple[str, ...]:
    return ("--endpoint-url", moto_url, "--region", "us-east-1")


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable(TITLE) == "\\x1b]0;PWNED\\x07"
    assert printable("a\nb\tc\u202ed\x9b") == "a\\x0ab\\x09c\\u202ed\\x9b"
    assert printable("a\nb", keep_newlines=True) == "a\nb"
    plain = "us.anthropic.claude-sonnet-4-5-20250929-v1:0 · ✓ ü"
    assert printable(plain) is plain


def test_table_escapes_every_field_and_keeps_one_line_per_row(
    poisoned_log: Path, moto_url: str
) -> None:
    out = run_once(poisoned_log, moto_url, *cloud_args(moto_url))
    assert not RAW.search(out), out
    assert "\\x1b]0;PWNED\\x07" in out
    rows = [line for line in out.splitlines() if "PWNED" in line]
    # One local row, one CloudWatch row and the app's row: a break inside an id does not split
    # a row.
    assert len(rows) == 3, out
    assert sum(1 for line in rows if line.startswith("claude-")) == 1, out
    assert any(line.startswith("TOTAL") for line in out.splitlines())


def test_status_line_escapes_every_field(poisoned_log: Path, moto_url: str) -> None:
    out = run_once(poisoned_log, moto_url, "--format", "line")
    assert not RAW.search(out), out
    assert out.count("\n") == 1 and out.startswith("bedrock ")


def test_json_keeps_every_value_exact(poisoned_log: Path, moto_url: str) -> None:
    report = json.loads(run_once(poisoned_log, moto_url, "--json", *cloud_args(moto_url)))
    ids = {entry["model_id"] for entry in report["models"]}
    assert {LOCAL_MODEL, CLOUD_MODEL} <= ids
    cloud = next(entry for entry in report["models"] if entry["model_id"] == CLOUD_MODEL)
    assert cloud["cloudwatch"]["requests"] == 7


def _pane(tmux: Tmux, fmt: str) -> str:
    return subprocess.run(
        ["tmux", "display-message", "-p", "-t", tmux.name, fmt],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@needs_tmux
def test_live_screen_shows_escapes_and_obeys_none(poisoned_log: Path, moto_url: str) -> None:
    env = " ".join(f"{name}={value}" for name, value in AWS_ENV.items())
    command = (
        f"env -u COLUMNS -u LINES {env} TERM=xterm-256color "
        f"{shlex.quote(sys.executable)} -m monitor "
        f"--log {shlex.quote(str(poisoned_log))} --endpoint-url {moto_url} --region us-east-1"
    )
    tmux = Tmux(160, 90, command)
    try:
        screen = tmux.wait_for(lambda s: "claude-\\x1b" in s and "nova-\\x1b" in s, timeout=30)
        assert _pane(tmux, "#{pane_title}") != "PWNED"
        lines = screen.splitlines()
        # The header survived (no screen wipe), and each model is one row.
        assert lines[0].lstrip().startswith("bedrock-top")
        assert sum("-\\x1b]0;" in line for line in lines) == 2, screen
        assert "\u202e" not in screen
        # The drill-down: the app and error code columns of the recent requests.
        tmux.keys("Enter")
        detail = tmux.wait_for(lambda s: "MODEL" in s and "client_error" in s, timeout=15)
        assert "\u202e" not in detail
        assert _pane(tmux, "#{pane_title}") != "PWNED"
        assert detail.splitlines()[0].lstrip().startswith("MODEL")
        assert detail.count("\\x1b]0;PWNED") >= 2, detail  # the title and the recent rows
    finally:
        tmux.close()


async def test_notices_and_the_budget_dialog_escape_names(tmp_path: Path) -> None:
    from textual.widgets import OptionList

    from monitor.feed import LocalFeed
    from monitor.ui.budget_dialog import BudgetDialog
    from monitor.ui.hooks import BudgetLimit, ScreenExtras
    from monitor.ui.themes import load_themes

    class Budgets:
        def crossed(self) -> list[object]:
            return []

        def limits(self) -> list[BudgetLimit]:
            return [BudgetLimit(name=f"team{POISON}", unit="usd", limit=10.0)]

        def save_limit(self, name: str, value: float) -> str:
            raise OSError(f"cannot write {POISON}")

        def budget_statuses(self, now: float) -> list[object]:
            return []

    feed = LocalFeed([str(tmp_path / "none.jsonl")], since=0)
    app = BedrockTopApp(
        feed,
        follow=False,
        catalog=load_themes(tmp_path),
        extras=ScreenExtras(budgets=Budgets(), notices=[f"notice {POISON}"]),  # type: ignore[arg-type]
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        messages = [n.message + n.title for n in app._notifications]
        assert messages and all(not RAW.search(m) for m in messages), messages
        assert any("\\x1b]0;PWNED" in m for m in messages)
        await pilot.press("b")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, BudgetDialog)
        prompt = dialog.query_one(OptionList).get_option_at_index(0).prompt
        shown = str(getattr(prompt, "plain", prompt))
        assert not RAW.search(shown) and "\\x1b]0;PWNED" in shown
        await pilot.press("enter", "enter")
        await pilot.pause()
        message = dialog.query_one("#budget-message")
        text = str(message.render())
        assert not RAW.search(text) and "not saved" in text

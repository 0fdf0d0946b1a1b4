"""The quota column, the quota panel and the quota alarm in the real program, in a real terminal
(tmux): limits set in the configuration, usage from a real usage log on disk."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from monitor.records import to_json_line
from tests.conftest import record
from tests.test_tmux import Tmux, needs_tmux

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"


@needs_tmux
def test_quota_column_panel_and_alarm(tmp_path: Path) -> None:
    now = time.time()
    newest_complete = int(now // 60) * 60 - 60
    log = tmp_path / "usage.jsonl"
    # 3 calls in the newest complete minute: 1000 in + 200 cache write + 300 out x 5 (Sonnet 4.5's
    # burndown) = 2700 each, 8100 in the minute: 81% of a 10,000 tokens-per-minute quota.
    log.write_bytes(
        b"".join(
            to_json_line(
                record(epoch=newest_complete + 5 + i, model_id=SONNET, input_tokens=1000,
                       output_tokens=300, cache_write_input_tokens=200, max_tokens=4096)
            )
            for i in range(3)
        )
    )  # fmt: skip
    alarms = tmp_path / "alarms.txt"
    hook = f"echo $BEDROCK_TOP_QUOTA $BEDROCK_TOP_THRESHOLD $BEDROCK_TOP_MODEL >> {alarms}"
    config = tmp_path / "config.toml"
    config.write_text(
        f'on_threshold = ["sh", "-c", {hook!r}]\n'.replace("'", '"')
        + '[quotas."anthropic.claude-sonnet-4-5*"]\ntpm = 10_000\nrpm = 10\n'
    )
    command = " ".join(
        shlex.quote(part)
        for part in (sys.executable, "-m", "monitor", "--no-cloudwatch", "--log", str(log),
                     "--config", str(config))
    )  # fmt: skip
    session = Tmux(160, 48, command)
    try:
        screen = session.wait_for(lambda s: "quota" in s and "81%~" in s, timeout=20)
        assert "claude-sonnet-4-5" in screen
        assert "quotas config only" in screen
        # Crossing 80% shows a notice (and rings the bell) once, and runs on_threshold.
        session.wait_for(lambda s: "quota above 80%" in s, timeout=10)
        deadline = time.monotonic() + 10
        while not alarms.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alarms.read_text().split() == ["tpm", "0.8", SONNET]
        session.keys("Enter")
        detail = session.wait_for(lambda s: "Quotas (Service Quotas" in s, timeout=10)
        assert "tpm config limit 10.0k" in detail
        assert "peak 5m ~8.1k" in detail
        assert "rpm config limit 10" in detail and "30%" in detail
        assert "throttles 5m: local 0" in detail
        session.wait_for(lambda s: "reserved max_tokens 4,096" in s and "used 300 (7%)" in s)
        session.wait_for(lambda s: "lower max_tokens to about 768" in s)
        assert "output tokens count 5x" in session.screen()
        session.keys("q")
    finally:
        session.close()
    # Once per crossing: still one line.
    assert len(alarms.read_text().splitlines()) == 1


@pytest.fixture(autouse=True)
def _quiet_clock() -> None:
    # The newest complete minute must not turn twice during the test.
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)

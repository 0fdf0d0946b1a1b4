"""``--once`` reads from the oldest moment its output needs, not from the live screen's 24 hours:
measured by the lines the real program reports it read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from monitor.records import record_line

ROOT = Path(__file__).resolve().parents[1]


def write_days(path: Path, now: float, days: float, per_hour: int) -> list[float]:
    epochs = []
    with path.open("wb") as handle:
        count = int(days * 24 * per_hour)
        for index in range(count):
            epoch = now - days * 86400 + index * 3600 / per_hour
            epochs.append(epoch)
            handle.write(
                record_line(
                    epoch=epoch,
                    request_id=f"r-{index}",
                    model_id="amazon.nova-lite-v1:0",
                    operation="Converse",
                    input_tokens=10,
                    output_tokens=5,
                    latency_ms=100.0,
                    status="ok",
                    token_source="body",
                )
            )
    return epochs


def once(log: Path, since: str, config: Path | None = None) -> dict[str, object]:
    argv = [sys.executable, "-m", "monitor", "--once", "--json", "--no-cloudwatch"]
    argv += ["--log", str(log), "--since", since]
    if config is not None:
        argv += ["--config", str(config)]
    result = subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=120
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_since_1h_reads_about_an_hour_not_a_day(tmp_path: Path) -> None:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    epochs = write_days(log, now, days=3, per_hour=600)
    report = once(log, "1h")
    lines_read = report["sources"]["log"]["lines_read"]  # type: ignore[index]
    in_hour = sum(1 for epoch in epochs if epoch >= now - 3600)
    # The hour, the seek's 5 minutes of slack and one 64 KiB probe of lines at most.
    assert in_hour <= lines_read <= in_hour + 600 * 5 / 60 + 64 * 1024 // 200 + 700
    assert lines_read < sum(1 for epoch in epochs if epoch >= now - 86400) / 4
    # The program's clock started a little later than this test's: a record or two less.
    assert in_hour - 10 <= report["totals"]["local"]["requests"] <= in_hour  # type: ignore[index]


def test_a_budget_period_is_read_from_its_start(tmp_path: Path) -> None:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_days(log, now, days=3, per_hour=60)
    config = tmp_path / "config.toml"
    config.write_text(
        '[[budgets]]\nname = "all"\nperiod = "day"\nlimit_tokens = 1000000\nsource = "local"\n'
    )
    report = once(log, "1h", config)
    budget = report["budgets"][0]  # type: ignore[index]
    start = budget["period_start"]
    from datetime import datetime

    hours = (now - datetime.fromisoformat(start).timestamp()) / 3600
    # Every record since the day began counts: 60 an hour, 15 tokens each.
    assert abs(budget["used_tokens"] - hours * 60 * 15) <= 2 * 15

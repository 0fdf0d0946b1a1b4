"""``--once --json`` with a configuration of prices and budgets, against a hand calculation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.budgets import period_bounds
from tests.conftest import record, write_lines

ROOT = Path(__file__).resolve().parents[1]
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
US_HAIKU = f"us.{HAIKU}"
MYSTERY = "acme.unknown-model-v1"
M = 1_000_000

CONFIG = """
timezone = "UTC"
[profile_multipliers]
"us." = 1.1
[pricing."anthropic.claude-3-haiku-*"]
input_per_mtok = 0.25
output_per_mtok = 1.25
cache_read_per_mtok = 0.03
cache_write_per_mtok = 0.30
[[budgets]]
name = "haiku daily"
models = ["anthropic.claude-3-haiku-*", "us.anthropic.claude-3-haiku-*"]
period = "day"
limit_usd = 10.0
[[budgets]]
name = "all tokens"
period = "day"
limit_tokens = 20000000
"""


def test_costs_and_budgets_match_a_hand_calculation(tmp_path: Path) -> None:
    now = time.time()
    day_start, _ = period_bounds("day", now, "UTC")
    first = max(day_start + 1, now - 50)
    log = tmp_path / "usage.jsonl"
    write_lines(
        log,
        # 2M in, 1M out at $0.25/$1.25 = 0.50 + 1.25 = $1.75
        record(epoch=first, model_id=HAIKU, input_tokens=2 * M, output_tokens=M),
        # cache: 1M read at $0.03, 1M write at $0.30 = $0.33
        record(
            epoch=first + 1,
            model_id=HAIKU,
            input_tokens=0,
            output_tokens=0,
            cache_read_input_tokens=M,
            cache_write_input_tokens=M,
        ),
        # us. profile x1.1: 4M in = 4 * 0.25 * 1.1 = $1.10
        record(epoch=first + 2, model_id=US_HAIKU, input_tokens=4 * M, output_tokens=0),
        # no price anywhere: unpriced, never $0
        record(epoch=first + 3, model_id=MYSTERY, input_tokens=3 * M, output_tokens=M),
    )
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "--once",
            "--json",
            "--no-cloudwatch",
            "--config",
            str(config),
            "--log",
            str(log),
            "--since",
            "1h",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "BEDROCK_TOP_CONFIG": ""},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    costs = {entry["model_id"]: entry["local"]["cost_usd"] for entry in report["models"]}
    assert costs[HAIKU] == pytest.approx(1.75 + 0.33)
    assert costs[US_HAIKU] == pytest.approx(1.10)
    assert costs[MYSTERY] is None
    totals = report["totals"]["local"]
    assert totals["cost_usd"] == pytest.approx(1.75 + 0.33 + 1.10)
    assert totals["unpriced_tokens"] == 4 * M
    budgets = {budget["name"]: budget for budget in report["budgets"]}
    haiku = budgets["haiku daily"]
    assert haiku["used_usd"] == pytest.approx(3.18)
    assert haiku["fraction"] == pytest.approx(0.318)
    assert haiku["limit_usd"] == 10.0 and haiku["limit_tokens"] is None
    assert haiku["source"] == "local"
    tokens = budgets["all tokens"]
    assert tokens["used_tokens"] == 2 * M + M + 4 * M + 3 * M + M  # input + output, no cache
    assert tokens["fraction"] == pytest.approx(11 / 20)
    # Burning 11M tokens in the last hour: the projection adds 11M per remaining hour.
    remaining_h = (period_bounds("day", now, "UTC")[1] - now) / 3600
    assert tokens["projected_fraction"] == pytest.approx((11 + 11 * remaining_h) / 20, rel=0.01)


def test_broken_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[budgets]]\nname = "x"\nperiod = "fortnight"\nlimit_usd = 5\n')
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "budgets[0].period" in result.stderr and str(config) in result.stderr
    assert result.stdout == ""

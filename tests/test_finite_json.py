"""The JSON report is strict JSON: no NaN or Infinity, whatever an endpoint sends."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from monitor.report import finite, render_json
from tests.moto_process import MotoServer

ROOT = Path(__file__).resolve().parents[1]


def strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null() -> None:
    report = {"a": math.nan, "b": [math.inf, 1.5, -math.inf], "c": {"d": 2, "e": "nan"}}
    assert strict_loads(render_json(report)) == {
        "a": None,
        "b": [None, 1.5, None],
        "c": {"d": 2, "e": "nan"},
    }
    assert finite(report)["c"] == {"d": 2, "e": "nan"}


def test_cloudwatch_sums_that_overflow_give_a_report_not_a_traceback(tmp_path: Path) -> None:
    server = MotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
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
        for _ in range(2):  # each value is finite; their sum is not
            cw.put_metric_data(
                Namespace="AWS/Bedrock",
                MetricData=[
                    {
                        "MetricName": name,
                        "Dimensions": [{"Name": "ModelId", "Value": "amazon.nova-lite-v1:0"}],
                        "Timestamp": minute,
                        "Value": 1.5e308,
                    }
                    for name in ("Invocations", "InputTokenCount", "InvocationLatency")
                ],
            )
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_EC2_METADATA_DISABLED="true",
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor",
                "--once",
                "--json",
                "--log",
                str(tmp_path / "none.jsonl"),
                "--endpoint-url",
                url,
                "--region",
                "us-east-1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    report = strict_loads(result.stdout)
    assert "Traceback" not in result.stderr
    assert report["sources"]["cloudwatch"]["state"] == "ok"

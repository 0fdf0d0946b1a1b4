"""The real program in tmux, polling two regions of moto's CloudWatch: the regions side by side in
the header, a region column, and bedrock-mantle traffic in rows of its own."""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from monitor.records import to_json_line
from tests.conftest import record
from tests.moto_process import moto_url_of_module
from tests.test_tmux import ROOT, needs_tmux

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA = "amazon.nova-lite-v1:0"
GPT = "openai.gpt-oss-120b"


class PrivateTmux:
    """A tmux server of this test's own (its own socket, no configuration file): the window is
    the size asked for, whatever other tmux sessions on the machine have set."""

    def __init__(self, width: int, height: int, command: str) -> None:
        self.socket = f"bt-regions-{uuid.uuid4().hex[:8]}"
        self._tmux(
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(ROOT),
            f"{command}; sleep 30",
        )

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main").stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "main", key)

    def wait_for(self, check: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"screen never matched; last screen:\n{text}")

    def close(self) -> None:
        self._tmux("kill-server")


@pytest.fixture
def moto_two_regions() -> Iterator[str]:
    server = moto_url_of_module()
    url = next(server)
    now = time.time()
    minute = dt.datetime.fromtimestamp((int(now // 60) - 3) * 60 + 10, tz=dt.UTC)

    def put(
        region: str, namespace: str, dims: list[dict[str, str]], metric: str, value: float
    ) -> None:
        client = boto3.client(
            "cloudwatch",
            endpoint_url=url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": metric, "Dimensions": dims, "Timestamp": minute, "Value": value}
            ],
        )

    for region, calls in (("us-east-1", 40), ("eu-west-1", 2)):
        put(region, "AWS/Bedrock", [{"Name": "ModelId", "Value": SONNET}], "Invocations", calls)
    put("eu-west-1", "AWS/Bedrock", [{"Name": "ModelId", "Value": NOVA}], "Invocations", 5)
    put("us-east-1", "AWS/BedrockMantle", [{"Name": "Model", "Value": GPT}], "Inferences", 9)
    try:
        yield url
    finally:
        server.close()  # stops the server process


@needs_tmux
def test_two_regions_side_by_side_with_mantle_rows(moto_two_regions: str, tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    log.write_bytes(to_json_line(record(epoch=time.time() - 5, model_id=SONNET)))
    config = tmp_path / "config.toml"
    config.write_text("")
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = " ".join(
        [
            # The terminal's own size (a test run may export COLUMNS and LINES).
            "env -u COLUMNS -u LINES",
            *(f"{name}={value}" for name, value in aws.items()),
            shlex.quote(sys.executable),
            "-m monitor --region us-east-1,eu-west-1",
            f"--endpoint-url {moto_two_regions} --log {shlex.quote(str(log))}",
            f"--config {shlex.quote(str(config))}",
        ]
    )
    session = PrivateTmux(200, 30, command)
    try:
        screen = session.wait_for(
            lambda s: "us-east-1: ok" in s and "eu-west-1: ok" in s and "[mantle]" in s,
            timeout=60,
        )
        header = next(line for line in screen.splitlines() if "CloudWatch" in line)
        # Each region's state, side by side, and what the polling costs in all.
        assert header.index("us-east-1: ok") < header.index("eu-west-1: ok")
        assert "/h total" in header
        assert "regions" in screen  # the region column's heading
        sonnet = next(line for line in screen.splitlines() if "claude-sonnet" in line)
        assert "us-east-1,eu-west-1" in sonnet and " 42 " in f"{sonnet} "
        nova = next(line for line in screen.splitlines() if "nova-lite" in line)
        assert "eu-west-1" in nova and "us-east-1" not in nova
        mantle = next(line for line in screen.splitlines() if "[mantle]" in line)
        assert "gpt-oss" in mantle and " 9.0 " in f"{mantle} " and "us-east-1" in mantle
        print(screen)
        session.keys("q")
    finally:
        session.close()

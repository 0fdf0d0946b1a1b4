"""Several regions: one poll cycle of every region's sources (they run concurrently) for 1, 2 and
4 regions of 10 models each, against moto's server on 127.0.0.1, and what each schedule costs.
Ratios, measured in the same run: the cycle time over one region's, and over the same regions
polled one after another. moto answers every region from one process, so on a small machine the
server, not the client, sets the pace; against AWS each region is a separate endpoint.

    .venv/bin/python bench/bench_regions.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.sources.cloudwatch import Schedule
from monitor.sources.cloudwatch_regions import CloudWatchRegions

REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-northeast-1"]
METRICS = ["Invocations", "InputTokenCount", "OutputTokenCount", "InvocationLatency"]
MODELS = [f"vendor.model-{index}-v1:0" for index in range(10)]


def seed(url: str, now: float) -> None:
    import boto3

    base = int(now // 60) * 60
    for region in REGIONS:
        client = boto3.client("cloudwatch", endpoint_url=url, region_name=region)
        data = [
            {
                "MetricName": metric,
                "Dimensions": [{"Name": "ModelId", "Value": model}],
                "Timestamp": dt.datetime.fromtimestamp(base - 60 * m + 5, tz=dt.UTC),
                "Value": 1.0 + m,
            }
            for model in MODELS
            for metric in METRICS
            for m in range(1, 30)
        ]
        for offset in range(0, len(data), 1000):
            client.put_metric_data(Namespace="AWS/Bedrock", MetricData=data[offset : offset + 1000])


async def cycle(url: str, regions: list[str]) -> tuple[float, float, int]:
    """Seconds for start + one poll of every source, the projected cost per hour, and calls."""
    group = CloudWatchRegions(
        regions, endpoint_url=url, schedule=Schedule(), max_attempts=2, read_timeout_s=30
    )
    started = time.perf_counter()
    try:
        await group.start()
        await group.poll_once()
        took = time.perf_counter() - started
        calls = sum(s.calls for s in group.sources.values())
        return took, group.projected_cost_per_hour_usd(), calls
    finally:
        await group.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        seed(url, time.time())
        baseline: float | None = None
        print(f"{len(MODELS)} models x {len(METRICS)} metrics per region, {args.runs} runs")
        for count in (1, 2, 4):
            regions = REGIONS[:count]
            asyncio.run(cycle(url, regions))  # warm-up
            runs = [asyncio.run(cycle(url, regions)) for _ in range(args.runs)]
            median = statistics.median(took for took, _, _ in runs)
            baseline = baseline or median
            cost = runs[-1][1]
            calls = runs[-1][2]
            # The same regions one after another, in the same run: what concurrency saves.
            one_by_one = statistics.median(
                sum(asyncio.run(cycle(url, [region]))[0] for region in regions)
                for _ in range(max(1, args.runs // 2))
            )
            print(
                f"{count} region(s): first cycle median {median * 1000:7.1f} ms "
                f"(x{median / baseline:.2f} of one region; one region after another "
                f"{one_by_one * 1000:7.1f} ms, concurrent/sequential {median / one_by_one:.2f}), "
                f"{calls} GetMetricData calls, schedule ${cost:.4f}/h (${cost * 730:.2f}/month)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""CloudWatch poller: cycle time and API calls for 50 models x 12 metrics, and the cost of the
default schedule against a naive one. Runs against moto's server on 127.0.0.1; prints figures.

    /work/venv/bin/python bench/bench_cloudwatch.py [--runs 7]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.sources.cloudwatch import (
    HOT_STATS,
    USD_PER_METRIC,
    WARM_STATS,
    CloudWatchSource,
    Schedule,
)

METRICS = [
    "Invocations",
    "InputTokenCount",
    "OutputTokenCount",
    "CacheReadInputTokens",
    "CacheWriteInputTokens",
    "InvocationClientErrors",
    "InvocationServerErrors",
    "InvocationThrottles",
    "OutputImageCount",
    "EstimatedTPMQuotaUsage",
    "InvocationLatency",
    "TimeToFirstToken",
]
NAIVE_INTERVAL_S = 10.0


def seed(cw: Any, models: list[str], minutes: range, now: float) -> None:
    base = int(now // 60) * 60
    data = [
        {
            "MetricName": metric,
            "Dimensions": [{"Name": "ModelId", "Value": model}],
            "Timestamp": dt.datetime.fromtimestamp(base + 60 * m + 5, tz=dt.UTC),
            "Value": 1.0 + (m % 7),
        }
        for model in models
        for metric in METRICS
        for m in minutes
    ]
    for offset in range(0, len(data), 1000):
        cw.put_metric_data(Namespace="AWS/Bedrock", MetricData=data[offset : offset + 1000])


def reset(url: str) -> None:
    import http.client

    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.request("POST", "/moto-api/reset")
    conn.getresponse().read()
    conn.close()


async def cycle_benchmark(url: str, runs: int) -> None:
    import boto3

    cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1")
    models = [f"us.anthropic.bench-model-{i:02d}-v1:0" for i in range(50)]
    now = time.time()
    seed(cw, models, range(-3, -1), now)
    # Everything every cycle: the worst case of one poll (hot + warm metrics of all 50 models).
    # moto scans every stored datapoint for every query and every period, so the backfill is
    # kept to 15 minutes here; cost and call counts do not depend on the time range.
    everything = Schedule(warm_every=1, slow_every=1, idle_after_s=1e9, backfill_s=900)
    source = CloudWatchSource(
        "us-east-1", None, url, schedule=everything, max_attempts=2, read_timeout_s=120
    )
    first_start = time.perf_counter()
    await source.poll_once(now)
    first_s = time.perf_counter() - first_start
    first = source.state
    print("== one poll cycle, 50 models x 12 metrics (moto on 127.0.0.1) ==")
    print(
        f"first poll (ListMetrics, 15 min backfill, percentile probe, period totals): "
        f"{first_s * 1000:.0f} ms, {first.list_calls} ListMetrics + {first.calls} "
        f"GetMetricData calls, {first.metrics_requested} metrics requested"
    )
    queries_per_model = sum(len(s) for s in {**HOT_STATS, **WARM_STATS}.values())
    times: list[float] = []
    calls: list[int] = []
    for run in range(1, runs + 1):
        # Cycles 1..4 minutes later: no discovery, no period refresh, percentiles still refused.
        before = source.calls
        started = time.perf_counter()
        await source.poll_once(now + 60 * ((run - 1) % 4 + 1))
        times.append(time.perf_counter() - started)
        calls.append(source.calls - before)
        assert source.state.status == "ok", source.state.message
    await source.stop()
    queries = 50 * queries_per_model
    print(
        f"steady cycle, all {queries} queries ({queries_per_model} per model: 12 metrics, "
        f"latency and TTFT with several statistics): median {statistics.median(times) * 1000:.0f}"
        f" ms over {runs} runs (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
        f"GetMetricData calls per cycle: {statistics.median(calls):.0f} "
        f"(the API minimum is {-(-queries // 500)})"
    )
    reset(url)


async def cost_benchmark(url: str) -> None:
    import boto3

    cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1")
    models = [f"global.anthropic.active-model-{i}-v1:0" for i in range(10)]
    now = time.time()
    seed(cw, models, range(-75, 0), now)
    # The default schedule (backfill shortened for moto's sake: it is paid once, not per hour).
    source = CloudWatchSource(
        "us-east-1",
        None,
        url,
        schedule=Schedule(backfill_s=900),
        max_attempts=2,
        read_timeout_s=120,
    )
    # One simulated hour of the default schedule (60 s, jittered) over traffic in every minute.
    sim = now - 3600
    cycles = 0
    cycle_times: list[float] = []
    await source.poll_once(sim)
    first_metrics = source.metrics_requested
    start_metrics = source.metrics_requested
    start_calls = source.calls
    first_poll = last_poll = sim
    while True:
        sim += source.next_delay()
        if sim >= now:
            break
        started = time.perf_counter()
        await source.poll_once(sim)
        last_poll = sim
        cycle_times.append(time.perf_counter() - started)
        cycles += 1
    state = source.state
    await source.stop()
    # The polls after the first one, over the time between the first and the last.
    span_h = (last_poll - first_poll) / 3600 if cycles else 1.0
    measured = (source.metrics_requested - start_metrics) / max(span_h, 1e-9)
    naive = len(models) * len(METRICS) * 3600 / NAIVE_INTERVAL_S
    print()
    print("== cost: 10 active models, default schedule vs naive (every metric every 10 s) ==")
    print(
        f"default schedule, simulated hour: {cycles} polls, {source.calls - start_calls} "
        f"GetMetricData calls, {measured:,.0f} metrics/hour measured "
        f"(+{first_metrics} once for the first backfill); projected by the source: "
        f"{state.projected_metrics_per_hour:,.0f}/hour"
    )
    print(
        f"  = ${measured * USD_PER_METRIC:.3f}/hour, ${measured * USD_PER_METRIC * 730:.2f}/month"
        f" (percentiles: {state.percentiles})"
    )
    print(
        f"naive schedule: {naive:,.0f} metrics/hour = ${naive * USD_PER_METRIC:.3f}/hour, "
        f"${naive * USD_PER_METRIC * 730:.2f}/month"
    )
    print(f"ratio naive/default: {naive / measured:.1f}x fewer metrics requested")
    sched = Schedule()
    poll_ms = statistics.median(cycle_times) * 1000 if cycle_times else 0.0
    worst_hot = sched.interval_s * (1 + sched.jitter)
    worst_warm = worst_hot * sched.warm_every
    print()
    print("== freshness ==")
    print(
        f"from the poll that first sees a new minute to the store: median {poll_ms:.0f} ms "
        f"(the poll itself); to the screen: + at most one refresh tick (1 s) = "
        f"{poll_ms / 1000 + 1:.1f} s (median poll)"
    )
    print(
        f"from a minute being published to the poll that sees it: at most {worst_hot:.0f} s for"
        f" overview metrics, {worst_warm:.0f} s for cache/image/quota/TTFT/percentiles "
        f"(every interval for the model in the drill-down)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[name] = value
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        asyncio.run(cycle_benchmark(url, args.runs))
        asyncio.run(cost_benchmark(url))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""Fleet source: 100,000 invocation-log events through moto's CloudWatch Logs; prints events per
second parsed, CPU per 1,000 events (parse only, and the whole source: FilterLogEvents pages,
parsing, the store and the group index), and the CPU of polling an idle group.

moto runs in a process of its own, so the CPU figures are bedrock-top's alone. The baseline is
``json.loads`` of the same messages, measured in the same run.

    .venv/bin/python bench/bench_fleet.py [--events 100000] [--runs 5] [--idle-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.groups import GroupIndex
from monitor.sources.fleet import FleetSource
from monitor.sources.invocation_log import parse_event
from monitor.store import Store
from tests.fleet_events import GROUP, assumed_role, invocation_event, message, put_events

MODELS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "amazon.nova-lite-v1:0",
]
OPERATIONS = ["Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"]


def _serve(port_queue: multiprocessing.Queue[int]) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_queue.put(server.get_host_and_port()[1])
    while True:
        time.sleep(3600)


def make_events(count: int, now: float) -> list[tuple[float, str]]:
    events = []
    for i in range(count):
        epoch = now - 3000 + i * 2900 / count
        events.append(
            (
                epoch,
                message(
                    invocation_event(
                        epoch,
                        operation=OPERATIONS[i % 4],
                        model_id=MODELS[i % 3],
                        caller_arn=assumed_role(f"role-{i % 40}", f"session-{i % 7}"),
                        app=f"app-{i % 12}",
                        input_tokens=100 + i % 900,
                        output_tokens=10 + i % 90,
                        cache_read=i % 50 or None,
                    )
                ),
            )
        )
    return events


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    moto = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    moto.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}"
    now = time.time()
    events = make_events(args.events, now)
    texts = [text for _, text in events]
    mean_bytes = sum(len(t) for t in texts) / len(texts)

    # Parsing alone, against json.loads of the same messages.
    parse_runs, json_runs = [], []
    for _ in range(args.runs):
        start = time.process_time()
        for text in texts:
            json.loads(text)
        json_runs.append(time.process_time() - start)
        start = time.process_time()
        for text in texts:
            parse_event(text)
        parse_runs.append(time.process_time() - start)
    parse_s, json_s = statistics.median(parse_runs), statistics.median(json_runs)
    print(f"events: {len(texts):,} invocation-log events, {mean_bytes:,.0f} bytes each on average")
    print(
        f"parse: {len(texts) / parse_s:,.0f} events/s, {parse_s / len(texts) * 1e6:.1f} us/event,"
        f" CPU {parse_s / len(texts) * 1000 * 1000:.1f} ms per 1,000 events"
    )
    print(
        f"baseline json.loads (whole event, bodies included): {len(texts) / json_s:,.0f} "
        f"events/s; parse / json.loads = {parse_s / json_s:.2f}"
    )

    # What grouping adds to the local log's ingest: the store alone, then store + group index,
    # over the same parsed records in the tailer's batch size.
    records = [parse_event(text) for text in texts]
    store_runs, grouped_runs = [], []
    for _ in range(args.runs):
        store = Store(since=now - 3600)
        start = time.process_time()
        for offset in range(0, len(records), 1000):
            store.ingest(records[offset : offset + 1000], now)
        store_runs.append(time.process_time() - start)
        store, groups = Store(since=now - 3600), GroupIndex(since=now - 3600)
        start = time.process_time()
        for offset in range(0, len(records), 1000):
            batch = records[offset : offset + 1000]
            store.ingest(batch, now)
            groups.ingest(batch, now)
        grouped_runs.append(time.process_time() - start)
    store_s, grouped_s = statistics.median(store_runs), statistics.median(grouped_runs)
    print(
        f"ingest: store alone {store_s / len(records) * 1e6:.2f} us/record, store + groups (app, "
        f"caller) {grouped_s / len(records) * 1e6:.2f} us/record; ratio {grouped_s / store_s:.2f}"
    )

    # The whole source through moto: FilterLogEvents pages, parsing, store and group index.
    import boto3

    logs = boto3.client("logs", endpoint_url=url, region_name="us-east-1")
    put_events(logs, GROUP, "bench", events)
    source_runs, wall_runs = [], []
    for _ in range(max(1, args.runs // 2)):
        source = FleetSource(endpoint_url=url, log_groups=[GROUP], since=now - 3600)

        async def poll(source: FleetSource = source) -> None:
            try:
                await source.poll_once()
            finally:
                await source.stop()

        start_cpu, start_wall = cpu(), time.perf_counter()
        asyncio.run(poll())
        source_runs.append(cpu() - start_cpu)
        wall_runs.append(time.perf_counter() - start_wall)
        assert source.store.since_tally().requests == len(texts), source.health().message
    source_s, wall_s = statistics.median(source_runs), statistics.median(wall_runs)
    print(
        f"source (moto, {source.requests} requests): {len(texts) / wall_s:,.0f} events/s wall, "
        f"CPU {source_s / len(texts) * 1000 * 1000:.1f} ms per 1,000 events "
        f"({source_s / parse_s:.2f}x parsing alone)"
    )

    # Idle: the same group, nothing new, polled every 2 s (the default is 10 s).
    idle = FleetSource(endpoint_url=url, log_groups=[GROUP], since=now - 60, interval_s=2.0)

    async def idle_run() -> tuple[float, int]:
        await idle.poll_once()  # the first pass reads the last minute
        before_requests = idle.requests
        start = cpu()
        task = idle.run_in_background()
        await asyncio.sleep(args.idle_s)
        used = cpu() - start
        task.cancel()
        await idle.stop()
        return used, idle.requests - before_requests

    used, polls = asyncio.run(idle_run())
    print(
        f"idle group polled every 2 s for {args.idle_s:.0f} s: {polls} requests, CPU "
        f"{used / args.idle_s * 100:.2f}% of a core, {used / max(polls, 1) * 1000:.1f} ms per poll"
    )
    moto.terminate()


if __name__ == "__main__":
    main()

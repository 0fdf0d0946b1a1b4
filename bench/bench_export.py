"""Benchmark of the Prometheus endpoint, printing its figures.

    python bench/bench_export.py [--models 20] [--records 50000] [--runs 30] [--idle-seconds 20]

1. Scrape cost: a store filled with ``--records`` records over ``--models`` models (the last
   hour), then the whole scrape body (snapshot of the store + prometheus_client's text
   exposition) built ``--runs`` times; median in milliseconds. Baseline measured in the same
   run: the ``--once --json`` report of the same store (``Session.report`` + ``render_json``);
   the ratio is scrape / report.
2. HTTP scrape: ``bedrock-top export`` on that log in a process of its own, scraped over HTTP
   ``--runs`` times; median round trip in milliseconds.
3. Idle CPU: the same process's CPU time (all threads) over ``--idle-seconds`` with no new
   records and no scrapes, as a percentage of one core.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.records import make_record, to_json_line  # noqa: E402


def write_log(path: Path, models: int, records: int, now: float) -> None:
    with path.open("wb") as handle:
        for index in range(records):
            handle.write(
                to_json_line(
                    make_record(
                        epoch=now - 3500 + 3400 * index / records,
                        request_id=f"bench-{index}",
                        model_id=f"anthropic.claude-bench-{index % models}-v1:0",
                        operation="ConverseStream",
                        input_tokens=800 + index % 300,
                        output_tokens=200 + index % 90,
                        latency_ms=400.0 + (index * 37) % 9000,
                        ttft_ms=80.0 + (index * 13) % 900,
                        status="ok" if index % 17 else "throttled",
                        token_source="stream",
                    )
                )
            )


def median_ms(function: object, runs: int) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        function()  # type: ignore[operator]
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    options = parser.parse_args()

    from prometheus_client import CollectorRegistry, generate_latest

    from monitor.cli import parse_args
    from monitor.exporter import SnapshotCollector, build_board
    from monitor.report import render_json
    from monitor.session import open_session

    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "usage.jsonl"
        now = time.time()
        write_log(log, options.models, options.records, now)
        args = parse_args(["--log", str(log), "--no-cloudwatch"])
        session = open_session(args, now=now)
        session.feed.catch_up()
        board = build_board(session, None)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(board.snapshot))
        body = generate_latest(registry)
        scrape = median_ms(lambda: generate_latest(registry), options.runs)
        report = median_ms(lambda: render_json(session.report(now)), options.runs)
        session.close()
        print(
            f"store: {options.records} records, {options.models} models; "
            f"scrape body {len(body)} bytes"
        )
        print(f"scrape (snapshot + exposition), median: {scrape:.2f} ms")
        print(f"baseline --once --json report of the same store, median: {report:.2f} ms")
        print(f"ratio scrape / report: {scrape / report:.2f}")

        command = [sys.executable, "-m", "monitor", "export", "--log", str(log)]
        process = subprocess.Popen(
            [*command, "--no-cloudwatch", "--prometheus", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=scratch,
        )
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.search(r"(http://\S+/metrics)", line)
            if not found:
                print(f"export did not start: {line}")
                return 1
            url = found.group(1)

            def fetch() -> None:
                with urllib.request.urlopen(url, timeout=30) as response:
                    response.read()

            fetch()
            http = median_ms(fetch, options.runs)
            print(f"HTTP scrape of bedrock-top export, median round trip: {http:.2f} ms")
            watched = psutil.Process(process.pid)
            time.sleep(2.0)  # past the catch-up and the first drains
            before = watched.cpu_times()
            time.sleep(options.idle_seconds)
            after = watched.cpu_times()
            used = (after.user - before.user) + (after.system - before.system)
            print(
                f"idle CPU of bedrock-top export over {options.idle_seconds:g} s: "
                f"{100 * used / options.idle_seconds:.2f} % of a core"
            )
        finally:
            process.terminate()
            process.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

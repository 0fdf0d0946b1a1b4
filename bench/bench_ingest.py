"""Ingest benchmarks for the usage log (prints figures; asserts nothing).

1. Catch-up: ``bedrock-top --once --json --since 30d`` over a log of N records (default
   1,000,000), wall time and peak RSS of the process, against a plain ``json.loads`` loop over the
   same file measured in the same run (the ratio is printed).
2. Seek: a log of M records (default 10,000,000) of which only the last hour is asked for.
3. Memory: the store's RSS after 100k records and after 10M records spread over its windows.

Usage: python bench/bench_ingest.py [--records N] [--big M] [--repeat K] [--skip-big]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.records import format_ts, parse_chunk  # noqa: E402
from monitor.store import Store  # noqa: E402

MODELS = (
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-haiku-4-5-20251001-v1:0",
    "amazon.nova-lite-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "amazon.titan-text-express-v1",
)
TEMPLATE = (
    '{{"v":1,"ts":"{ts}","request_id":"{rid:08x}-0d3c-4e5f-8a9b-{tail:012x}","model_id":"{model}",'
    '"operation":"Converse","region":"us-east-1","input_tokens":{inp},"output_tokens":{out},'
    '"cache_read_input_tokens":0,"cache_write_input_tokens":0,"latency_ms":{lat},'
    '"ttft_ms":null,"status":"{status}","error_code":null,"token_source":"body"}}\n'
)
BASELINE = """
import json, sys
totals = {}
with open(sys.argv[1], "rb") as handle:
    for line in handle:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        entry = totals.setdefault(record["model_id"], [0, 0, 0])
        entry[0] += 1
        entry[1] += record["input_tokens"]
        entry[2] += record["output_tokens"]
print(len(totals))
"""


def write_log(path: Path, count: int, span_s: float, end: float, offset: int = 0) -> float:
    """Time-ordered records ending at ``end``; returns the mean line length in bytes."""
    step = span_s / count
    start = end - span_s
    written = 0
    with path.open("w") as handle:
        batch: list[str] = []
        for index in range(count):
            epoch = start + index * step
            serial = offset + index
            batch.append(
                TEMPLATE.format(
                    ts=format_ts_fast(epoch),
                    rid=serial & 0xFFFFFFFF,
                    tail=serial * 2654435761 & 0xFFFFFFFFFFFF,
                    model=MODELS[serial % len(MODELS)],
                    inp=100 + serial % 3000,
                    out=10 + serial % 700,
                    lat=200 + serial % 5000,
                    status="throttled" if serial % 97 == 0 else "ok",
                )
            )
            if len(batch) >= 50_000:
                chunk = "".join(batch)
                written += len(chunk)
                handle.write(chunk)
                batch.clear()
        chunk = "".join(batch)
        written += len(chunk)
        handle.write(chunk)
    return written / count


_ts_cache: dict[int, str] = {}


def format_ts_fast(epoch: float) -> str:
    second = int(epoch)
    prefix = _ts_cache.get(second)
    if prefix is None:
        if len(_ts_cache) > 100_000:
            _ts_cache.clear()
        from datetime import UTC, datetime

        prefix = _ts_cache[second] = datetime.fromtimestamp(second, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
    return f"{prefix}.{int((epoch - second) * 1000):03d}Z"


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, stdout of a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed with {process.returncode}")
    return wall, usage.ru_maxrss / 1024, output


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_catch_up(workdir: Path, records: int, repeat: int) -> None:
    log = workdir / "catchup.jsonl"
    mean_bytes = write_log(log, records, 30 * 86400 - 600, time.time())
    size_mb = log.stat().st_size / 2**20
    print(f"catch-up: {records:,} records, {mean_bytes:.0f} bytes each, {size_mb:.0f} MB")
    ours: list[float] = []
    peaks: list[float] = []
    baseline: list[float] = []
    command = [
        sys.executable,
        "-m",
        "monitor",
        "--once",
        "--json",
        "--since",
        "30d",
        "--log",
        str(log),
        "--no-cloudwatch",
    ]
    for _ in range(repeat):
        wall, peak, output = timed(command)
        ours.append(wall)
        peaks.append(peak)
        baseline.append(timed([sys.executable, "-c", BASELINE, str(log)])[0])
    import json

    counted = json.loads(output)["totals"]["local"]["requests"]
    print(
        f"  bedrock-top --once --json --since 30d: median {statistics.median(ours):.2f} s "
        f"(runs {', '.join(f'{v:.2f}' for v in ours)}), peak RSS median "
        f"{statistics.median(peaks):.0f} MB, {counted:,} requests counted"
    )
    print(f"  plain json.loads loop:                 median {statistics.median(baseline):.2f} s")
    ratios = [b / o for b, o in zip(baseline, ours, strict=True)]
    print(
        f"  ratio json.loads / bedrock-top: median {statistics.median(ratios):.2f}x "
        "(goal >= 2x; goal < 2.5 s and < 150 MB)"
    )


def bench_seek(workdir: Path, records: int, repeat: int) -> None:
    log = workdir / "big.jsonl"
    span = 400 * 86400.0  # 400 days of history
    started = time.perf_counter()
    write_log(log, records, span, time.time())
    size_gb = log.stat().st_size / 2**30
    print(
        f"seek: {records:,} records over 400 days, {size_gb:.1f} GB "
        f"(written in {time.perf_counter() - started:.0f} s)"
    )
    walls = []
    for _ in range(repeat):
        wall, _peak, output = timed(
            [
                sys.executable,
                "-m",
                "monitor",
                "--once",
                "--json",
                "--since",
                "1h",
                "--log",
                str(log),
                "--no-cloudwatch",
            ]
        )
        walls.append(wall)
    import json

    report = json.loads(output)
    print(
        f"  --since 1h on it: median {statistics.median(walls):.2f} s "
        f"(runs {', '.join(f'{v:.2f}' for v in walls)}; goal < 1 s), "
        f"{report['sources']['log']['lines_read']:,} lines read, "
        f"{report['totals']['local']['requests']:,} requests in the hour"
    )
    log.unlink()


def bench_memory(total: int) -> None:
    """RSS of a store fed 100k records, then 10M, all inside its retained windows."""
    now = time.time()
    window = 39 * 86400.0
    batch_size = 100_000

    def batch(serial: int) -> list:
        lines = [
            TEMPLATE.format(
                ts=format_ts(_dt(now - window + (i * 7919 % batch_size) * window / batch_size)),
                rid=(serial * batch_size + i) & 0xFFFFFFFF,
                tail=serial,
                model=MODELS[i % len(MODELS)],
                inp=100 + i % 3000,
                out=10 + i % 700,
                lat=200 + i % 5000,
                status="ok",
            )
            for i in range(batch_size)
        ]
        return parse_chunk("".join(lines).encode())[0]

    store = Store(since=now - window)
    template_batch = batch(0)
    baseline = rss_mb()
    import msgspec

    def fresh(serial: int) -> list:
        # Fresh request ids, the same spread of times: what a long-running monitor sees.
        return [
            msgspec.structs.replace(r, request_id=f"{serial}-{n}")
            for n, r in enumerate(template_batch)
        ]

    def feed(records: list) -> None:
        # In blocks the size the tailer hands over (one 4 MiB read is ~11k records).
        for start in range(0, len(records), 10_000):
            store.ingest(records[start : start + 10_000], now)

    feed(fresh(1))
    after_first = rss_mb()
    started = time.perf_counter()
    fed = batch_size
    serial = 2
    while fed < total:
        feed(fresh(serial))
        fed += batch_size
        serial += 1
    after_all = rss_mb()
    print(
        f"memory: RSS before {baseline:.0f} MB, after "
        f"100k records {after_first:.0f} MB, after {fed:,} records {after_all:.0f} MB "
        f"(ratio {after_all / after_first:.3f}; goal within 10%); ingested at "
        f"{(fed - batch_size) / (time.perf_counter() - started):,.0f} records/s"
    )
    print(f"  store holds {len(store.model_ids())} models; accepted {store.stats.accepted:,}")


def _dt(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--memory-records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bedrock-top-bench-") as scratch:
        workdir = Path(scratch)
        bench_catch_up(workdir, args.records, args.repeat)
        if not args.skip_big:
            bench_seek(workdir, args.big, args.repeat)
    if not args.skip_memory:
        bench_memory(args.memory_records)


if __name__ == "__main__":
    main()

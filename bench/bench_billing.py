"""The bill: reading a large month (usage types to models, sums, learned prices), the disk cache,
and what refreshing costs per day at each interval. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_billing.py [--runs 7] [--usage-types 600]

The baseline, measured in the same run, is the least any reading must do: one pass that sums
each row's cost. The ratio says what parsing usage types and matching them to models adds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.billing import BillingData, BillingRow, UsageTypeMap, learned_prices, summarize
from monitor.sources.billing import USD_PER_REQUEST, read_cache, write_cache

REGIONS = ("USE1", "USW2", "EUC1", "EUW1", "APN1", "APS2")
MODELS = [
    ("Claude3Haiku", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("Claude3.5Haiku", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("Claude4.5Sonnet", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("Claude4.5Haiku", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("NovaLite", "amazon.nova-lite-v1:0"),
    ("NovaPro", "amazon.nova-pro-v1:0"),
    ("Llama3.1-70B-Instruct", "meta.llama3-1-70b-instruct-v1:0"),
]
KINDS = (
    "input-tokens",
    "output-tokens",
    "cache-read-input-token-count",
    "cache-write-input-token-count",
)


def month(usage_types: int, days: int = 31) -> BillingData:
    names = []
    index = 0
    while len(names) < usage_types:
        region = REGIONS[index % len(REGIONS)]
        part, _ = MODELS[(index // len(REGIONS)) % len(MODELS)]
        kind = KINDS[(index // (len(REGIONS) * len(MODELS))) % len(KINDS)]
        variant = index // (len(REGIONS) * len(MODELS) * len(KINDS))
        names.append(f"{region}-{part}{'-v' + str(variant) if variant else ''}-{kind}")
        index += 1
    rows = tuple(
        BillingRow(f"2026-12-{day:02d}", name, 0.001 * (i % 97 + 1), 1000.0 * (i % 89 + 1))
        for day in range(1, days + 1)
        for i, name in enumerate(names)
    )
    return BillingData(0.0, "2026-12-01", "2027-01-01", rows)


def median_ms(work, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--usage-types", type=int, default=600)
    args = parser.parse_args()
    data = month(args.usage_types)
    ids = [model_id for _, model_id in MODELS]
    print(f"bill: {len(data.rows):,} rows ({args.usage_types} usage types x 31 days)")

    baseline = median_ms(lambda: sum(row.usd for row in data.rows), args.runs)
    read = median_ms(lambda: summarize(data, UsageTypeMap(ids)), args.runs)
    summary = summarize(data, UsageTypeMap(ids))
    learn = median_ms(lambda: learned_prices(summary), args.runs)
    print(f"baseline (sum every row's cost):      {baseline:8.2f} ms median")
    print(f"read as models (parse, match, sum):   {read:8.2f} ms median  ({read / baseline:.1f}x)")
    print(f"learned prices from the summary:      {learn:8.2f} ms median")
    print(
        f"matched usage types: {sum(1 for line in summary.lines if line.model_id)} of "
        f"{len(summary.lines)}"
    )

    tracemalloc.start()
    summarize(data, UsageTypeMap(ids))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak memory reading it:               {peak / 1e6:8.2f} MB")

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "billing.json"
        write = median_ms(lambda: write_cache(path, data), args.runs)
        load = median_ms(lambda: read_cache(path), args.runs)
        print(
            f"cache write (atomic, fsync):          {write:8.2f} ms median "
            f"({path.stat().st_size / 1e6:.2f} MB)"
        )
        print(f"cache read:                           {load:8.2f} ms median")

    print(
        "refresh cost per day (one-page month): "
        + ", ".join(f"every {h:g} h ${USD_PER_REQUEST * 24 / h:.2f}" for h in (1, 6, 12, 24))
    )


if __name__ == "__main__":
    main()

"""What the hardening costs on the hot paths, printing medians and ratios against a baseline
measured in the same run.

    python bench/bench_boundary.py [--repeat 7]

1. ``printable()`` over the cells of a 20-row table (clean ids, the common case), against
   returning the text as it is; and over poisoned text (every cell escaped).
2. The future-timestamp check of the feed over a 100,000-record batch, against the store's own
   ingest of the same batch (the work it sits in front of).
3. The start-up entry point of a ~50 MB time-ordered log: the binary search with its order check
   (32 sampled reads before the answer), against the search alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.feed import LocalFeed  # noqa: E402
from monitor.formatting import printable  # noqa: E402
from monitor.records import make_record, to_json_line  # noqa: E402
from monitor.sources import logtail  # noqa: E402
from monitor.store import Store  # noqa: E402


def median_s(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def record(epoch: float, index: int) -> object:
    return make_record(
        epoch=epoch,
        request_id=f"req-{index}",
        model_id=f"us.anthropic.claude-sonnet-4-5-{index % 20}-v1:0",
        operation="Converse",
        input_tokens=100,
        output_tokens=20,
        latency_ms=500.0,
        status="ok",
        token_source="body",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat

    cells = [f"us.anthropic.claude-sonnet-4-5-2025092{i % 10}-v1:0" for i in range(20)] + [
        f"{i * 37.5:.1f}" for i in range(20 * 9)
    ]
    poisoned = [f"\x1b]0;x\x07{cell}\u202e" for cell in cells]
    rounds = 1000
    base = median_s(lambda: [[str(c) for c in cells] for _ in range(rounds)], repeat)
    clean = median_s(lambda: [[printable(c) for c in cells] for _ in range(rounds)], repeat)
    dirty = median_s(lambda: [[printable(c) for c in poisoned] for _ in range(rounds)], repeat)
    per_frame = len(cells)
    print(f"table cells per frame: {per_frame}")
    print(f"  baseline (text as is)      {base / rounds * 1e6:8.1f} us/frame")
    print(f"  printable, clean text      {clean / rounds * 1e6:8.1f} us/frame  x{clean / base:.2f}")
    print(f"  printable, every cell bad  {dirty / rounds * 1e6:8.1f} us/frame  x{dirty / base:.2f}")

    now = time.time()
    batch = [record(now - 60 + i * 1e-4, i) for i in range(100_000)]
    with tempfile.TemporaryDirectory() as scratch:
        feed = LocalFeed([os.path.join(scratch, "none.jsonl")], since=now - 3600)
        check = median_s(lambda: feed._without_future(batch), repeat)  # type: ignore[arg-type]

        def ingest() -> None:
            Store(since=now - 3600).ingest(batch, now)  # type: ignore[arg-type]

        store = median_s(ingest, max(3, repeat // 2))
        print("future check, 100,000 records:")
        print(f"  store ingest (baseline)    {store * 1e3:8.1f} ms")
        print(f"  future check               {check * 1e3:8.1f} ms  x{check / store:.3f} of ingest")

        log = Path(scratch) / "usage.jsonl"
        line_count = 160_000  # ~50 MB
        with log.open("wb") as handle:
            for index in range(line_count):
                handle.write(to_json_line(record(now - 30 * 86400 + index * 16, index)))  # type: ignore[arg-type]
        size = log.stat().st_size
        fd = os.open(log, os.O_RDONLY)
        try:
            target = now - 86400
            checked = median_s(lambda: logtail.find_start_offset(fd, size, target), repeat)
            samples = logtail.ORDER_SAMPLES
            logtail.ORDER_SAMPLES = 0
            try:
                alone = median_s(lambda: logtail.find_start_offset(fd, size, target), repeat)
            finally:
                logtail.ORDER_SAMPLES = samples
        finally:
            os.close(fd)
        print(f"start-up entry point, {size / 1e6:.0f} MB ordered log:")
        print(f"  search alone (baseline)    {alone * 1e3:8.2f} ms")
        print(f"  search + order check       {checked * 1e3:8.2f} ms  x{checked / alone:.2f}")


if __name__ == "__main__":
    main()

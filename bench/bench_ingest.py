"""Ingest benchmarks for the usage log (prints figures; asserts nothing).

1. Catch-up: ``bedrock-top --once --json --since 24h`` over N records (default 1,000,000)
   spread over the last 24 hours (7 models, about 490 bytes each, repeated lines and bad lines
   included), on one core (``taskset``) and on two, against the floor measured in the same run:
   msgspec decoding the same file into the typed record and summing per model. Medians, the
   ratios to the floor, and peak RSS.
2. Seek: M records (default 5,000,000) over 30 days, ``--once --since 1h``.
3. Live start: the screen in tmux (120x40) on the catch-up log: time to the first frame, and to
   the history behind it being merged; beside it, in the same run, the first frame of a minimal
   Textual app (one line of text) in the same terminal: the part of the figure that is Python
   and Textual starting.
4. Memory: the store's RSS after 100k records and after 10M records spread over its windows.

Usage: python bench/bench_ingest.py [--records N] [--big M] [--repeat K] [--skip-big]
       [--skip-live] [--skip-memory]

Every child process runs with its compiled bytecode cached (in a scratch directory, warmed
before the first timed run), as an installed bedrock-top has it: with PYTHONDONTWRITEBYTECODE
set, each start compiles every module again (0.3 s here), which is not what a user waits for.
The tmux sessions run on a tmux server of their own. The load average is printed before and
after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
    "mistral.mistral-large-2407-v1:0",
)
TEMPLATE = (
    '{{"v":1,"ts":"{ts}","request_id":"{rid:08x}-0d3c-4e5f-8a9b-{tail:012x}","model_id":"{model}",'
    '"operation":"ConverseStream","region":"us-east-1","input_tokens":{inp},"output_tokens":{out},'
    '"cache_read_input_tokens":{cache},"cache_write_input_tokens":0,"latency_ms":{lat},'
    '"ttft_ms":{ttft},"status":"{status}","error_code":null,"token_source":"stream",'
    '"app":"checkout-service","tags":{{"team":"payments","env":"production","tier":"gold"}}}}\n'
)
# No "ts": a bad line with an old timestamp would mislead the start-up seek, which assumes a
# time-ordered file.
BAD_LINE = '{"v":1,"request_id":"broken","model_id":\n'
# The floor: msgspec decoding the file into the typed record, block by block as the tailer
# reads it, and a sum per model. A block with a bad line is decoded again line by line.
FLOOR_TEMPLATE = """
import sys, msgspec
from monitor.records import UsageRecord
decoder = msgspec.json.Decoder(UsageRecord)


def by_line(block, records):
    for line in block.splitlines():
        try:
            records.append(decoder.decode(line))
        except msgspec.MsgspecError:
            pass


def whole(block):
    try:
        return decoder.decode_lines(block)
    except msgspec.MsgspecError:
        records = []
        by_line(block, records)
        return records


def pieces(block):
    records = []
    start = 0
    while start < len(block):
        end = block.find(b"\\n", start + 32768) + 1 or len(block)
        piece = block[start:end]
        start = end
        try:
            records += decoder.decode_lines(piece)
        except msgspec.MsgspecError:
            by_line(piece, records)
    return records


totals = {}
with open(sys.argv[1], "rb") as handle:
    while True:
        block = handle.read(4 << 20)
        if not block:
            break
        block += handle.readline()
        for record in DECODE(block):
            entry = totals.get(record.model_id)
            if entry is None:
                entry = totals[record.model_id] = [0, 0, 0]
            entry[0] += 1
            entry[1] += record.input_tokens
            entry[2] += record.output_tokens
print(len(totals))
"""
FLOOR = FLOOR_TEMPLATE.replace("DECODE(", "whole(")
# The same floor decoding each block in 32 KB pieces of lines, as bedrock-top does, so that a
# bad line costs a line-by-line parse of its piece, not of its whole 4 MB block: the stricter
# floor, with bedrock-top's own handling of bad lines.
FLOOR_PIECES = FLOOR_TEMPLATE.replace("DECODE(", "pieces(")


def write_log(
    path: Path, count: int, span_s: float, end: float, offset: int = 0, faults: bool = False
) -> float:
    """Time-ordered records ending at ``end``; with ``faults`` every 500th line is written
    twice and every 1000th is followed by a bad line. Returns the mean line length."""
    step = span_s / count
    start = end - span_s
    written = 0
    with path.open("w") as handle:
        batch: list[str] = []
        for index in range(count):
            epoch = start + index * step
            serial = offset + index
            line = TEMPLATE.format(
                ts=format_ts_fast(epoch),
                rid=serial & 0xFFFFFFFF,
                tail=serial * 2654435761 & 0xFFFFFFFFFFFF,
                model=MODELS[serial % len(MODELS)],
                inp=100 + serial % 3000,
                out=10 + serial % 700,
                cache=(serial * 7) % 4000 if serial % 3 == 0 else 0,
                lat=200 + serial % 5000 + (serial % 1000) / 1000,
                ttft=80 + serial % 900,
                status="throttled" if serial % 97 == 0 else "ok",
            )
            batch.append(line)
            if faults and serial % 500 == 0:
                batch.append(line)
            if faults and serial % 1000 == 0:
                batch.append(BAD_LINE)
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


# Child processes cache their bytecode here (see the module's docstring); set by main().
CHILD_ENV: dict[str, str] = dict(os.environ)
TMUX = ["tmux", "-L", f"bedrock-top-bench-{os.getpid()}"]


def cached_bytecode_env(cache: Path) -> dict[str, str]:
    """The environment with bytecode written to and read from ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def warm_bytecode(env: dict[str, str]) -> None:
    """Compile the project and the packages the runs import into the cache once."""
    subprocess.run(
        [sys.executable, "-c", "import monitor.cli, monitor.session, monitor.ui.app, monitor.live"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def _tree_rss_kb(pid: int) -> int:
    """The resident memory of a process and every process below it, in KB (0 once gone)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            with open(f"/proc/{current}/task/{current}/children") as handle:
                pending.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, stdout of a child process. The peak is of the child and
    its own children together (a split catch-up runs two processes), sampled every 20 ms:
    ``ru_maxrss`` would count the pages a forked child shares with this process before it
    starts the command."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=CHILD_ENV
    )
    peak_kb = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_kb
        while not done.wait(0.02):
            peak_kb = max(peak_kb, _tree_rss_kb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stdout is not None
    output = process.stdout.read().decode()
    done.set()
    sampler.join()
    _, status, _usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed with {process.returncode}")
    return wall, peak_kb / 1024, output


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_catch_up(workdir: Path, records: int, repeat: int) -> Path:
    log = workdir / "catchup.jsonl"
    mean_bytes = write_log(log, records, 86400 - 600, time.time(), faults=True)
    size_mb = log.stat().st_size / 2**20
    print(
        f"catch-up: {records:,} records over the last 24 h, {mean_bytes:.0f} bytes each, "
        f"{size_mb:.0f} MB, {len(MODELS)} models, repeated and bad lines included"
    )
    command = [sys.executable, "-m", "monitor", "--once", "--json", "--since", "24h"]
    command += ["--log", str(log), "--no-cloudwatch"]
    one_core = ["taskset", "-c", "0", *command] if shutil.which("taskset") else None
    runs: dict[str, list[tuple[float, float]]] = {
        "floor": [],
        "floor in pieces": [],
        "one core": [],
        "two cores": [],
    }
    output = ""
    for _ in range(repeat):  # interleaved, so that each round sees the same machine
        runs["floor"].append(timed([sys.executable, "-c", FLOOR, str(log)])[:2])
        runs["floor in pieces"].append(timed([sys.executable, "-c", FLOOR_PIECES, str(log)])[:2])
        if one_core is not None:
            runs["one core"].append(timed(one_core)[:2])
        wall, peak, output = timed(command)
        runs["two cores"].append((wall, peak))
    import json

    counted = json.loads(output)["totals"]["local"]["requests"]
    floor = statistics.median(wall for wall, _ in runs["floor"])
    labels = {
        "floor": "msgspec decode + sum per model (floor)",
        "floor in pieces": "the floor decoding in 32 KB pieces (stricter floor)",
    }
    for name, measured in runs.items():
        if not measured:
            print(f"  {name}: not measured (taskset is missing)")
            continue
        walls = [wall for wall, _ in measured]
        line = (
            f"  {labels.get(name, f'bedrock-top --once --json --since 24h, {name}')}: median "
            f"{statistics.median(walls):.2f} s (runs {', '.join(f'{v:.2f}' for v in walls)}), "
            f"peak RSS median {statistics.median(peak for _, peak in measured):.0f} MB"
        )
        if name != "floor":
            for base_name in ("floor", "floor in pieces") if name not in labels else ("floor",):
                ratios = [
                    wall / base
                    for (wall, _), (base, _) in zip(measured, runs[base_name], strict=True)
                ]
                line += f", {statistics.median(ratios):.2f}x the {base_name}"
        print(line)
    print(
        f"  {counted:,} requests counted; floor median {floor:.2f} s; goals: one core <= 1.5x, "
        "two cores <= 1.0x, peak RSS < 150 MB"
    )
    return log


def bench_seek(workdir: Path, records: int, repeat: int) -> None:
    log = workdir / "big.jsonl"
    span = 30 * 86400.0  # 30 days of history
    started = time.perf_counter()
    write_log(log, records, span, time.time())
    size_gb = log.stat().st_size / 2**30
    print(
        f"seek: {records:,} records over 30 days, {size_gb:.1f} GB "
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


MINIMAL_APP = """
from textual.app import App
from textual.widgets import Static
class Minimal(App):
    def compose(self):
        yield Static("req/m claude minimal")
Minimal().run()
"""


def first_frame(
    command: str, wanted: Callable[[str], bool], done: Callable[[str], bool]
) -> tuple[float | None, float | None]:
    """Seconds from starting ``command`` in a tmux session (120x40) to the first capture
    where ``wanted`` holds, and to the first after it where ``done`` holds (300 s at most)."""
    session = f"bench-live-{time.monotonic_ns()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in CHILD_ENV.items() if k.startswith("PYTHON"))
    started = time.perf_counter()
    subprocess.run(
        [
            *TMUX,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "40",
            "-c",
            str(ROOT),
            f"exec env -u PYTHONDONTWRITEBYTECODE {env} {command}",
        ],
        check=True,
    )
    first = complete = None
    try:
        while time.perf_counter() - started < 300:
            captured = subprocess.run(
                [*TMUX, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            )
            if captured.returncode != 0:
                break  # the program ended (or never started)
            screen = captured.stdout
            elapsed = time.perf_counter() - started
            if first is None and wanted(screen):
                first = elapsed
            if first is not None and done(screen):
                complete = elapsed
                break
            time.sleep(0.02)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
    return first, complete


def bench_live_start(log: Path, repeat: int) -> None:
    """The live screen on the catch-up log, in tmux at 120x40: from the start of the process
    to the first frame with model rows, and to the history behind it being merged (the
    header's progress gone, the totals no longer partial); and a minimal Textual app's first
    frame in the same terminal, interleaved."""
    if shutil.which("tmux") is None:
        print("live start: not measured (tmux is not installed)")
        return
    firsts: list[float] = []
    completes: list[float] = []
    minimal: list[float] = []
    # A session that outlives the measured ones: the server would exit with its last session,
    # and the next new-session could reach it while it shuts down.
    subprocess.run([*TMUX, "new-session", "-d", "-s", "keep", "sleep 3600"], check=True)
    for _ in range(repeat):
        first, complete = first_frame(
            f"{sys.executable} -m monitor --no-cloudwatch --log {log}",
            lambda screen: "req/m" in screen and ("claude" in screen or "nova" in screen),
            lambda screen: "MB left" not in screen and "PARTIAL" not in screen,
        )
        if first is not None:
            firsts.append(first)
        if complete is not None:
            completes.append(complete)
        baseline, _ = first_frame(
            f"{sys.executable} -c {shlex.quote(MINIMAL_APP)}",
            lambda screen: "minimal" in screen,
            lambda screen: True,
        )
        if baseline is not None:
            minimal.append(baseline)
    subprocess.run([*TMUX, "kill-server"], capture_output=True)
    if not firsts:
        print("live start: the first frame never appeared")
        return
    first_median = statistics.median(firsts)
    print(
        f"live start on it (tmux 120x40): first frame median {first_median:.2f} s "
        f"(runs {', '.join(f'{v:.2f}' for v in firsts)}; goal < 1 s), history merged median "
        + (
            f"{statistics.median(completes):.2f} s (runs "
            + ", ".join(f"{v:.2f}" for v in completes)
            + ")"
            if completes
            else "never (within 300 s)"
        )
    )
    if minimal:
        base = statistics.median(minimal)
        print(
            f"  a minimal Textual app's first frame in the same terminal: median {base:.2f} s "
            f"(runs {', '.join(f'{v:.2f}' for v in minimal)}); bedrock-top's is "
            f"{first_median / base:.2f}x it, {first_median - base:+.2f} s"
        )


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
                cache=0,
                lat=200 + i % 5000,
                ttft=80 + i % 900,
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
    parser.add_argument("--big", type=int, default=5_000_000)
    parser.add_argument("--memory-records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bedrock-top-bench-") as scratch:
        workdir = Path(scratch)
        global CHILD_ENV
        CHILD_ENV = cached_bytecode_env(workdir / "bytecode")
        warm_bytecode(CHILD_ENV)
        log = bench_catch_up(workdir, args.records, args.repeat)
        if not args.skip_live:
            bench_live_start(log, args.repeat)
        if not args.skip_big:
            bench_seek(workdir, args.big, args.repeat)
    if not args.skip_memory:
        bench_memory(args.memory_records)
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()

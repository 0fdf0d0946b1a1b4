"""Benchmark of the live screen in a real terminal (tmux), printing its figures.

    python bench/bench_screen.py [--seconds 60] [--models 20] [--rate 50] [--markers 40]

1. First frame: from starting ``bedrock-top --demo`` in a detached tmux session (120x40) to the
   first capture of the pane that shows the table with model rows.
2. CPU: the bedrock-top process (psutil CPU times, all its threads: demo writer, log tailer,
   screen) over ``--seconds`` at the default 1 s refresh, with the demo writing ``--models``
   models at about ``--rate`` requests/s (the effective rate is measured from the log and
   printed, since the demo's bursts make it differ from the nominal one).
3. Record to screen: the table is filtered to "mark" (``/mark``), then records of new model ids
   ``bench.mark-N`` are appended to a second log the program follows; the time from each append
   to the first ``tmux capture-pane`` that shows the row is the latency (capture-pane is polled
   every few milliseconds; its own cost is part of the figure).

Goals (issue 3): CPU <= 1.5 % of a core, record-to-screen p95 <= 300 ms, first frame <= 1.2 s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.records import make_record, to_json_line  # noqa: E402


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
    ).stdout


def keys(session: str, *sequence: str) -> None:
    for key in sequence:
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
        time.sleep(0.2)


def demo_log(process: psutil.Process) -> Path | None:
    for handle in process.open_files():
        if "bedrock-top-demo-" in handle.path and handle.path.endswith("usage.jsonl"):
            return Path(handle.path)
    return None


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="demo rate (req/s, steady)")
    parser.add_argument("--markers", type=int, default=25, help="fewer than the visible rows")
    parser.add_argument(
        "--external-writer",
        action="store_true",
        help="write the demo workload from this process and let bedrock-top only follow the "
        "log (--log), separating the cost of monitoring from the cost of simulating",
    )
    parser.add_argument("--no-htop", action="store_true", help="do not measure htop beside it")
    parser.add_argument(
        "--at-rest",
        action="store_true",
        help="with --external-writer: write the history, then nothing (CPU at rest; try "
        "--models 500 and 2000)",
    )
    parser.add_argument(
        "--skip-markers", action="store_true", help="skip the record-to-screen latency part"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-screen-"))
    marks = scratch / "marks.jsonl"
    marks.touch()
    session = f"bench-{uuid.uuid4().hex[:6]}"
    htop_session = f"{session}-htop"
    htop: psutil.Process | None = None
    htop_percent: float | None = None
    writer = None
    if args.external_writer:
        from monitor.sources.demo import DemoWorkload, DemoWriter

        workload_log = scratch / "workload.jsonl"
        workload = DemoWorkload(models=args.models, rate_per_s=args.rate, seed=7, steady=True)
        writer = DemoWriter(workload_log, workload)
        history_s = min(900.0, max(6000, 3 * args.models) / args.rate)
        # At rest: the last call ended 90 s ago, so that the one-minute rates have settled.
        end = time.time() - (90.0 if args.at_rest else 0.0)
        writer.write_history(end, seconds=history_s)
        if not args.at_rest:
            writer.start()
        command = (
            f"exec {sys.executable} -m monitor --no-cloudwatch --log {workload_log} --log {marks}"
        )
    else:
        command = (
            f"exec {sys.executable} -m monitor --demo --demo-steady --demo-models {args.models} "
            f"--demo-rate {args.rate} --log {marks}"
        )
    started = time.perf_counter()
    subprocess.run(
        [
            "tmux",
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
            command,
        ],
        check=True,
    )
    try:
        first_frame = None
        while time.perf_counter() - started < 20:
            screen = capture(session)
            if "req/m" in screen and ("claude" in screen or "nova" in screen):
                first_frame = time.perf_counter() - started
                break
            time.sleep(0.01)
        if first_frame is None:
            print("the first frame never appeared:\n" + capture(session))
            return 1
        pane_pid = int(
            subprocess.run(
                ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        process = psutil.Process(pane_pid)
        # htop at a 1-second refresh in a terminal of the same size, measured over the same
        # seconds: the reference for what a terminal monitor costs on this machine now.
        if shutil.which("htop") and not args.no_htop:
            subprocess.run(
                [
                    "tmux",
                    "new-session",
                    "-d",
                    "-s",
                    htop_session,
                    "-x",
                    "120",
                    "-y",
                    "40",
                    "exec htop -d 10",
                ],
                check=True,
            )
            htop = psutil.Process(
                int(
                    subprocess.run(
                        ["tmux", "display-message", "-p", "-t", htop_session, "#{pane_pid}"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
            )
        time.sleep(3)  # settle: start-up work is not part of the steady state
        log = workload_log if writer is not None else demo_log(process)
        lines_before = count_lines(log) if log else 0
        cpu_before = process.cpu_times()
        htop_before = htop.cpu_times() if htop is not None else None
        wall_before = time.perf_counter()
        samples = []
        while time.perf_counter() - wall_before < args.seconds:
            samples.append(process.cpu_percent(interval=5.0))
        cpu_after = process.cpu_times()
        htop_after = htop.cpu_times() if htop is not None else None
        wall = time.perf_counter() - wall_before
        lines_after = count_lines(log) if log else 0
        busy = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        cpu_percent = 100.0 * busy / wall
        if htop_before is not None and htop_after is not None:
            htop_busy = (htop_after.user - htop_before.user) + (
                htop_after.system - htop_before.system
            )
            htop_percent = 100.0 * htop_busy / wall
        rate = (lines_after - lines_before) / wall

        keys(session, "/", *"mark", "Enter")
        time.sleep(1.5)
        latencies = []
        rng = random.Random(1)
        for index in range(0 if args.skip_markers else args.markers):
            time.sleep(rng.uniform(0.3, 1.1))  # land anywhere in the refresh cycle
            model = f"bench.mark-{index:03d}"
            record = make_record(
                epoch=time.time(),
                request_id=f"mark-{index}",
                model_id=model,
                operation="Converse",
                input_tokens=10,
                output_tokens=5,
                latency_ms=100.0,
                status="ok",
                token_source="body",
            )
            line = to_json_line(record)
            fd = os.open(marks, os.O_WRONLY | os.O_APPEND)
            appended = time.perf_counter()
            os.write(fd, line)
            os.close(fd)
            while time.perf_counter() - appended < 5:
                if f"mark-{index:03d}" in capture(session):
                    latencies.append((time.perf_counter() - appended) * 1000)
                    break
                time.sleep(0.005)
        keys(session, "q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        subprocess.run(["tmux", "kill-session", "-t", htop_session], capture_output=True)
        if writer is not None:
            writer.stop()

    where = "written by the benchmark process" if writer else "simulated inside bedrock-top"
    print(
        f"terminal 120x40, demo {args.models} models, nominal rate {args.rate:g} req/s, "
        f"workload {where}"
    )
    print(f"effective rate             {rate:8.1f} req/s (lines appended to the demo log)")
    print(f"first full frame           {first_frame * 1000:8.0f} ms   (goal <= 1200)")
    print(
        f"CPU of bedrock-top         {cpu_percent:8.2f} % of one core over {wall:.0f} s "
        f"(goal <= 1.5); 5 s samples median {statistics.median(samples):.2f} %, "
        f"max {max(samples):.2f} %"
    )
    if htop_percent is not None:
        ratio = cpu_percent / htop_percent if htop_percent > 0 else float("inf")
        print(
            f"CPU of htop -d 10          {htop_percent:8.2f} % of one core, same terminal size "
            f"and seconds; bedrock-top / htop = {ratio:.1f}x (goal <= 4x)"
        )
    else:
        print("CPU of htop: not measured (htop is not installed, or --no-htop)")
    if latencies:
        print(
            f"record to screen           p50 {percentile(latencies, 0.5):6.0f} ms   "
            f"p95 {percentile(latencies, 0.95):6.0f} ms   max {max(latencies):6.0f} ms   "
            f"({len(latencies)}/{args.markers} seen; goal p95 <= 300)"
        )
    else:
        print("record to screen: no marker was seen")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

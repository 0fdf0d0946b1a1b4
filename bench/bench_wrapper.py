"""What instrumenting a bedrock-runtime client costs the application.

2,000 calls with a plain boto3 client and 2,000 with an instrumented one, in back-to-back pairs,
against the local Bedrock server, the four operations
in turn, streams read to the end, records appended to a real file. The server runs in a process
of its own; the CPU of this process (all threads, ``time.process_time``) is measured per call.

    python bench/bench_wrapper.py [--calls 2000] [--emf]

Prints the median CPU per call of each client, the median of the per-pair added CPU (goal: at
most 50 us) per operation and overall, and the ratio of wall times. With ``--emf`` a third
client, instrumented with ``emf=True``, joins each round, and what the EMF block adds over the
plain record is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from botocore.config import Config

from monitor.records import parse_line
from monitor.wrapper import instrument
from tests.bedrock_server import TEST_AWS_ENV

MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Name three rivers."}],
    }
)
OPERATIONS = ("InvokeModel", "Converse", "ConverseStream", "InvokeModelWithResponseStream")


def call(client: Any, operation: str) -> None:
    if operation == "InvokeModel":
        client.invoke_model(modelId="us.anthropic.claude-sonnet-4-5-20250929-v1:0", body=BODY)[
            "body"
        ].read()
    elif operation == "Converse":
        client.converse(modelId="us.amazon.nova-lite-v1:0", messages=MESSAGES)
    elif operation == "ConverseStream":
        for _ in client.converse_stream(modelId="us.amazon.nova-lite-v1:0", messages=MESSAGES)[
            "stream"
        ]:
            pass
    else:
        for _ in client.invoke_model_with_response_stream(
            modelId="us.anthropic.claude-sonnet-4-5-20250929-v1:0", body=BODY
        )["body"]:
            pass


SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.bedrock_server import BedrockServer
with BedrockServer() as server:
    print(server.endpoint_url, flush=True)
    sys.stdin.read()  # until the benchmark closes the pipe
"""


@contextmanager
def server_process() -> Iterator[str]:
    """The local Bedrock server in a process of its own, so that its CPU is not the client's."""
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def timed_call(client: Any, operation: str) -> tuple[float, float]:
    """CPU seconds of this process (every thread), and wall seconds, of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call(client, operation)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client (default 2000)")
    parser.add_argument("--emf", action="store_true", help="also measure emf=True")
    args = parser.parse_args()
    os.environ.update(TEST_AWS_ENV)
    config = Config(retries={"total_max_attempts": 1})
    with tempfile.TemporaryDirectory() as tmp, server_process() as endpoint_url:
        log = Path(tmp) / "usage.jsonl"

        def client() -> Any:
            return boto3.client(
                "bedrock-runtime", region_name="us-east-1", endpoint_url=endpoint_url, config=config
            )

        plain = client()
        wrapped = instrument(client(), log_path=log, app="bench")
        emf_log = Path(tmp) / "emf.jsonl"
        with_emf = instrument(client(), log_path=emf_log, app="bench", emf=True)
        for warm in (plain, wrapped, with_emf):  # connections, parsers, first-use caches
            for index in range(8):
                call(warm, OPERATIONS[index % 4])
        warm_bytes = log.stat().st_size  # the measured calls' records follow these
        emf_warm_bytes = emf_log.stat().st_size
        sides = ("plain", "instrumented", "emf") if args.emf else ("plain", "instrumented")
        cpu: dict[str, dict[str, list[float]]] = {
            name: {op: [] for op in OPERATIONS} for name in sides
        }
        added: dict[str, list[float]] = {op: [] for op in OPERATIONS}
        emf_added: dict[str, list[float]] = {op: [] for op in OPERATIONS}
        wall = dict.fromkeys(sides, 0.0)
        for index in range(args.calls):
            # Calls in pairs, plain and instrumented back to back (which goes first alternates),
            # so that the drift of a shared, noisy machine falls on both sides of a difference.
            operation = OPERATIONS[index % len(OPERATIONS)]
            pair = [("plain", plain), ("instrumented", wrapped)]
            if args.emf:
                pair.append(("emf", with_emf))
            if (index // len(OPERATIONS)) % 2:
                pair.reverse()
            spent = {}
            for name, each in pair:
                spent[name], seconds = timed_call(each, operation)
                cpu[name][operation].append(spent[name])
                wall[name] += seconds
            added[operation].append(spent["instrumented"] - spent["plain"])
            if args.emf:
                emf_added[operation].append(spent["emf"] - spent["instrumented"])
        lines = log.read_bytes()[warm_bytes:].splitlines()
        assert len(lines) == args.calls, f"{len(lines)} records for {args.calls} calls"
        assert all(parse_line(line).status == "ok" for line in lines)
        if args.emf:
            emf_lines = emf_log.read_bytes()[emf_warm_bytes:].splitlines()
            assert len(emf_lines) == args.calls
            assert all(b'"_aws"' in line and parse_line(line).status == "ok" for line in emf_lines)

    def median_us(samples: list[float]) -> float:
        return statistics.median(samples) * 1e6

    print(f"bench_wrapper: {args.calls} calls per client, the four operations in turn, in pairs")
    print(f"{'operation':32} {'plain us':>10} {'instr. us':>10} {'added us':>10}")
    for operation in OPERATIONS:
        base, inst = median_us(cpu["plain"][operation]), median_us(cpu["instrumented"][operation])
        print(f"{operation:32} {base:10.1f} {inst:10.1f} {median_us(added[operation]):10.1f}")
    every = [difference for samples in added.values() for difference in samples]
    print(f"median added CPU per call: {median_us(every):.1f} us (goal <= 50 us)")
    print(
        f"wall time: plain {wall['plain']:.2f} s, instrumented {wall['instrumented']:.2f} s, "
        f"ratio {wall['instrumented'] / wall['plain']:.3f}"
    )
    if args.emf:
        extra = [difference for samples in emf_added.values() for difference in samples]
        print(
            f"emf=True: median added CPU per call over the plain record: {median_us(extra):.1f} us"
            f"; wall ratio to plain {wall['emf'] / wall['plain']:.3f}"
        )
    print(f"records written: {args.calls}, every one valid")


if __name__ == "__main__":
    main()

"""What reading a request's max_tokens costs the wrapper's hot path.

The wrapper reads the requested output limit of every call (Converse ``inferenceConfig``, or a
search of the InvokeModel body) so that the quota panel can compare reserved and used tokens.
This times that read per call for typical requests, against decoding the same body with msgspec
(the obvious alternative), measured in the same run.

    python bench/bench_max_tokens.py [--repeat 2000]

Prints, per request shape, the median time of the read and of the decode, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from monitor.wrapper.extract import requested_max_tokens


def anthropic_body(prompt_chars: int, limit_first: bool) -> bytes:
    doc: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31"}
    if limit_first:
        doc["max_tokens"] = 4096
    doc["messages"] = [{"role": "user", "content": prose(prompt_chars)}]
    if not limit_first:
        doc["max_tokens"] = 4096
    return json.dumps(doc).encode()


# Prompts are text, not one repeated character (which is the worst case of any substring search).
PROSE = "Summarise the quarterly report for the board, with revenue, costs and risks. "


def prose(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


BIG = prose(100_000)


def median_ns(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    converse = {
        "modelId": "us.amazon.nova-lite-v1:0",
        "messages": [{"role": "user", "content": [{"text": "Name three rivers."}]}],
        "inferenceConfig": {"maxTokens": 512},
    }
    shapes = [
        ("Converse inferenceConfig", "Converse", converse, None),
        ("InvokeModel 200 B body", "InvokeModel", None, anthropic_body(100, False)),
        ("InvokeModel 10 KB, limit last", "InvokeModel", None, anthropic_body(10_000, False)),
        ("InvokeModel 100 KB, limit first", "InvokeModel", None, anthropic_body(100_000, True)),
        ("InvokeModel 100 KB, limit last", "InvokeModel", None, anthropic_body(100_000, False)),
        ("InvokeModel 100 KB, no limit", "InvokeModel", None, json.dumps({"p": BIG}).encode()),
    ]  # fmt: skip
    print(f"bench_max_tokens: median of {args.repeat} reads per request shape")
    print(f"{'request':34} {'read ns':>10} {'decode ns':>10} {'ratio':>7}")
    for label, operation, params, body in shapes:
        request = params if params is not None else {"body": body}
        read = median_ns(lambda r=request, o=operation: requested_max_tokens(o, r), args.repeat)
        payload = body if body is not None else msgspec.json.encode(params)
        decode = median_ns(lambda p=payload: msgspec.json.decode(p), args.repeat)
        print(f"{label:34} {read:10.0f} {decode:10.0f} {read / decode:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A simulated Bedrock workload that writes real v1 records to a log, for ``--demo``.

The records go through the same serialiser as the wrapper's and are appended to a real file that
the app then tails like any other log, so the demo exercises the whole path: writer, tailer, parser,
store and views. Seeded, so a test can rely on what ``--demo --once`` prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.records import (
    Operation,
    RecordFields,
    Status,
    TokenSource,
    UsageRecord,
    make_record,
    record_line,
)

HISTORY_S = 15 * 60
# The live demo appends what "ended" every half second, as one write: a busy application's log
# grows in such bursts too, and the screen refreshes once a second.
WRITE_EVERY_S = 0.5
BURST_EVERY_S = 240.0
BURST_FACTOR = 2.5
# Bursts last 25 s on average every BURST_EVERY_S: the quiet rate is scaled down by this much so
# that --demo-rate is the long-run mean rate.
_BURST_MEAN_FACTOR = 1 + (BURST_FACTOR - 1) * 25.0 / (25.0 + BURST_EVERY_S)


@dataclass(frozen=True)
class DemoModel:
    model_id: str
    operation: Operation
    share: float  # relative arrival rate
    input_median: int
    output_median: int
    ms_per_output_token: float
    base_latency_ms: float
    cache: bool = False  # prompt caching in use
    estimate_rate: float = 0.0  # share of calls whose counts are estimates


BASE_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "ConverseStream",
        3.0,
        3000,
        600,
        18.0,
        450.0,
        cache=True,
    ),
    DemoModel("anthropic.claude-3-haiku-20240307-v1:0", "InvokeModel", 4.0, 900, 250, 6.0, 250.0),
    DemoModel(
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "Converse",
        2.5,
        1500,
        400,
        8.0,
        300.0,
        cache=True,
    ),
    DemoModel("amazon.nova-lite-v1:0", "Converse", 3.0, 700, 200, 4.0, 180.0),
    DemoModel("us.amazon.nova-pro-v1:0", "ConverseStream", 1.5, 2000, 500, 10.0, 350.0),
    DemoModel("meta.llama3-1-70b-instruct-v1:0", "InvokeModel", 1.0, 1200, 350, 14.0, 400.0),
    DemoModel(
        "amazon.titan-text-express-v1",
        "InvokeModelWithResponseStream",
        0.8,
        500,
        300,
        9.0,
        260.0,
        estimate_rate=0.02,
    ),
)
_EXTRA_PREFIXES = ("eu.", "apac.", "jp.", "au.", "global.", "us-gov.")
_APPS = ("checkout-assistant", "support-bot", "nightly-summariser", "search-rerank")
_TOKEN_SOURCE: dict[str, TokenSource] = {
    "InvokeModel": "header",
    "Converse": "body",
    "ConverseStream": "stream",
    "InvokeModelWithResponseStream": "stream",
}


def demo_models(count: int) -> list[DemoModel]:
    """The base models, then profile-prefixed variants of them, up to ``count``."""
    models = list(BASE_MODELS[:count])
    index = 0
    while len(models) < count:
        base = BASE_MODELS[index % len(BASE_MODELS)]
        prefix = _EXTRA_PREFIXES[(index // len(BASE_MODELS)) % len(_EXTRA_PREFIXES)]
        bare = (
            base.model_id.split(".", 1)[1]
            if base.model_id.startswith(("us.", "global."))
            else base.model_id
        )
        candidate = f"{prefix}{bare}"
        if any(model.model_id == candidate for model in models):
            candidate = f"{candidate}-{index}"
        # Variants share their base's shape at half its share of the traffic.
        models.append(
            dataclasses.replace(base, model_id=candidate, share=base.share * 0.5, estimate_rate=0.0)
        )
        index += 1
    return models


class DemoWorkload:
    """Bursty arrivals over a set of models, as v1 records."""

    def __init__(
        self, *, models: int = 7, rate_per_s: float = 6.0, seed: int = 7, steady: bool = False
    ) -> None:
        """``steady``: a constant rate, no swell and no bursts (benchmarks need a known load)."""
        self.steady = steady
        self.models = demo_models(models)
        self.rate_per_s = rate_per_s
        self._rng = random.Random(seed)
        # Cumulative once, not on every draw: the same picks from the same random numbers.
        self._cum_weights = list(itertools.accumulate(model.share for model in self.models))
        self._burst_until = 0.0
        self._serial = 0
        self._origin: float | None = None
        self._next_burst = 0.0

    def _rate_at(self, epoch: float) -> float:
        if self.steady:
            return self.rate_per_s
        # A slow swell plus short bursts: the shape real traffic has on a dashboard. Relative to
        # the first call, so that a seed gives the same workload whatever the clock says.
        if self._origin is None:
            self._origin = epoch
            self._next_burst = epoch + self._rng.expovariate(1 / BURST_EVERY_S)
        swell = 1.0 + 0.35 * math.sin((epoch - self._origin) / 240.0)
        if epoch >= self._next_burst:
            # Bursts start at random times (about every BURST_EVERY_S whatever the rate) and last
            # 10 to 40 seconds at 2.5 times the rate.
            self._burst_until = self._next_burst + self._rng.uniform(10, 40)
            self._next_burst = self._burst_until + self._rng.expovariate(1 / BURST_EVERY_S)
        base = self.rate_per_s / _BURST_MEAN_FACTOR
        if epoch < self._burst_until:
            return base * swell * BURST_FACTOR
        return base * swell

    def arrivals(self, start: float, end: float) -> Iterator[UsageRecord]:
        """Records for calls ending in ``[start, end)``, in time order."""
        for fields in self._calls(start, end):
            yield make_record(**fields)

    def lines(self, start: float, end: float) -> Iterator[bytes]:
        """The same calls as :meth:`arrivals`, as log lines (the writer's cheaper path)."""
        for fields in self._calls(start, end):
            yield record_line(**fields)

    def _calls(self, start: float, end: float) -> Iterator[RecordFields]:
        epoch = start
        while True:
            epoch += self._rng.expovariate(max(self._rate_at(epoch), 1e-6))
            if epoch >= end:
                return
            yield self._call(epoch)

    def _call(self, epoch: float) -> RecordFields:
        rng = self._rng
        model = rng.choices(self.models, cum_weights=self._cum_weights)[0]
        bursting = epoch < self._burst_until
        roll = rng.random()
        status: Status = "ok"
        if roll < (0.06 if bursting else 0.008):
            status = "throttled"
        elif roll < (0.075 if bursting else 0.016):
            status = "client_error"
        elif roll < (0.08 if bursting else 0.02):
            status = "server_error"
        streaming = model.operation in ("ConverseStream", "InvokeModelWithResponseStream")
        input_tokens = max(1, int(rng.lognormvariate(math.log(model.input_median), 0.6)))
        output_tokens = max(1, int(rng.lognormvariate(math.log(model.output_median), 0.5)))
        cache_read = cache_write = 0
        if model.cache and rng.random() < 0.6:
            cached = int(input_tokens * rng.uniform(1.5, 4.0))
            if rng.random() < 0.8:
                cache_read = cached
            else:
                cache_write = cached
        ttft = None
        latency = model.base_latency_ms * rng.uniform(0.7, 1.6)
        if streaming:
            ttft = latency
        latency += output_tokens * model.ms_per_output_token * rng.uniform(0.8, 1.3)
        if bursting:
            latency *= 1.4
        error_code = None
        token_source = _TOKEN_SOURCE[model.operation]
        if status == "ok" and model.estimate_rate and rng.random() < model.estimate_rate:
            token_source = "estimate"
        if status != "ok":
            error_code = {
                "throttled": "ThrottlingException",
                "client_error": "ValidationException",
                "server_error": "InternalServerException",
            }[status]
            output_tokens = 0
            input_tokens = 0 if status == "throttled" else input_tokens
            cache_read = cache_write = 0
            ttft = None
            latency = rng.uniform(40, 400)
            token_source = "none" if status == "throttled" else token_source
        self._serial += 1
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return RecordFields(
            epoch=epoch,
            request_id=request_id,
            model_id=model.model_id,
            operation=model.operation,
            region="us-east-1",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=cache_read,
            cache_write_input_tokens=cache_write,
            latency_ms=latency,
            ttft_ms=ttft,
            status=status,
            error_code=error_code,
            token_source=token_source,
            app=_APPS[self._serial % len(_APPS)],
        )


def append_lines(path: Path, lines: list[bytes]) -> None:
    """Append lines with one ``write`` on an O_APPEND descriptor."""
    if not lines:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"".join(lines))
    finally:
        os.close(fd)


class DemoWriter:
    """Writes the demo workload to ``path``: history first, then live in a daemon thread."""

    def __init__(self, path: Path, workload: DemoWorkload) -> None:
        self.path = path
        self.workload = workload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written_until = 0.0
        self._fd: int | None = None  # kept open while the demo runs, as an application would

    def write_history(self, now: float, seconds: float = HISTORY_S) -> int:
        lines = list(self.workload.lines(now - seconds, now))
        append_lines(self.path, lines)
        self._written_until = now
        return len(lines)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bedrock-top-demo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        # Wake a few times a second and append whatever calls "ended" since the last wake: a
        # writer that behaves like an application, at a fraction of the CPU of one per call.
        while True:
            time.sleep(WRITE_EVERY_S)  # cheaper per wake-up than a timed Event.wait
            if self._stop.is_set():
                return
            now = time.time()
            if self._written_until == 0.0:
                self._written_until = now
            lines = list(self.workload.lines(self._written_until, now))
            self._written_until = now
            if not lines:
                continue
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.write(self._fd, b"".join(lines))
            except OSError:
                self._close()

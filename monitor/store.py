"""The rolling per-model store: pure, no I/O, no Textual.

Records go in (:meth:`Store.ingest`); rates, tallies over windows, latency percentiles and series
for charts come out. Time is always passed in (``now``), so tests can freeze it.

Tiers, per model and for the total (memory is bounded by the windows, not by the record count):

* per second for the last 15 minutes (rates, the live sparklines);
* per minute for the last 24 hours, each minute with latency and TTFT sketches (percentiles over
  any window up to a day, charts);
* per quarter hour for the last 40 days (budget periods: every real timezone offset is a multiple
  of 15 minutes, so a day, week or month start in any timezone falls on a bucket edge);
* one cumulative tally and sketch over everything since ``since`` (the report window);
* the most recent requests (the drill-down's request list).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from monitor.records import UsageRecord

SECOND_WINDOW_S: Final = 15 * 60
MINUTE_WINDOW_S: Final = 24 * 3600
QUARTER_S: Final = 15 * 60
QUARTER_WINDOW_S: Final = 40 * 24 * 3600
RECENT_REQUESTS: Final = 200
# Duplicate request ids are looked for among this many most recent records; a record repeated
# further apart than that is counted twice. Bounded so memory does not grow with the log.
DEDUP_WINDOW: Final = 100_000

# Log-spaced histogram: bucket i holds values in (GAMMA**(i-1), GAMMA**i], so any percentile is
# reported within RELATIVE_ERROR of a real sample value.
RELATIVE_ERROR: Final = 0.02
_GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA: Final = math.log(_GAMMA)

# Indices into a tally vector. A plain list of ints keeps ingest fast (no attribute lookups).
REQUESTS: Final = 0
INPUT: Final = 1
OUTPUT: Final = 2
CACHE_READ: Final = 3
CACHE_WRITE: Final = 4
CLIENT_ERRORS: Final = 5
SERVER_ERRORS: Final = 6
THROTTLES: Final = 7
ABORTED: Final = 8
ESTIMATED: Final = 9
_WIDTH: Final = 10
_STATUS_SLOT: Final[dict[str, int]] = {
    "client_error": CLIENT_ERRORS,
    "server_error": SERVER_ERRORS,
    "throttled": THROTTLES,
    "aborted": ABORTED,
}


@dataclass(frozen=True, slots=True)
class Tally:
    """Additive counts over some span of time."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    client_errors: int = 0
    server_errors: int = 0
    throttles: int = 0
    aborted: int = 0
    estimated: int = 0  # records whose token counts are estimates

    @property
    def errors(self) -> int:
        return self.client_errors + self.server_errors

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_write_input_tokens
        )

    @classmethod
    def from_vector(cls, vector: list[int]) -> Tally:
        return cls(*vector)

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            *(a + b for a, b in zip(self.as_vector(), other.as_vector(), strict=True))
        )

    def as_vector(self) -> list[int]:
        return [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_write_input_tokens,
            self.client_errors,
            self.server_errors,
            self.throttles,
            self.aborted,
            self.estimated,
        ]

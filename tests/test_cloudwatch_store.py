"""The CloudWatch store: per-minute rings, replacement of revised minutes, windows and totals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cloudwatch_store import (
    AVERAGE,
    CACHE_READ,
    INPUT_TOKENS,
    INVOCATIONS,
    LATENCY,
    MAXIMUM,
    SAMPLE_COUNT,
    SUM,
    TTFT,
    CloudWatchStore,
    CloudWatchTotals,
    MinuteRing,
)

T0 = 1_700_000_040.0  # a minute boundary
M = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def at(minute: int) -> float:
    return T0 + 60 * minute


def test_revised_minute_replaces_instead_of_adding() -> None:
    store = CloudWatchStore()
    assert store.merge(M, INVOCATIONS, SUM, [(at(0), 5), (at(1), 2)]) == 2
    version = store.version
    # CloudWatch revises minute 1 upwards; minute 0 comes back unchanged.
    assert store.merge(M, INVOCATIONS, SUM, [(at(0), 5), (at(1), 7)]) == 1
    assert store.version == version + 1
    assert store.sum(M, INVOCATIONS, at(0), at(2)) == 12
    # The same answer again changes nothing and does not bump the version.
    assert store.merge(M, INVOCATIONS, SUM, [(at(0), 5), (at(1), 7)]) == 0
    assert store.version == version + 1


def test_window_is_start_inclusive_end_exclusive_and_series_has_gaps() -> None:
    store = CloudWatchStore()
    store.merge(M, INPUT_TOKENS, SUM, [(at(0), 100), (at(2), 300), (at(3), 400)])
    assert store.sum(M, INPUT_TOKENS, at(0), at(3)) == 400
    assert store.sum(M, INPUT_TOKENS, at(0) + 1, at(4)) == 700  # minute 0 began before start
    assert store.minute_series(M, INPUT_TOKENS, SUM, at(0), at(4)) == [100, None, 300, 400]
    assert store.points(M, INPUT_TOKENS, SUM, at(1), at(4)) == [(at(2), 300), (at(3), 400)]
    assert store.sum("unknown-model", INPUT_TOKENS, at(0), at(4)) == 0


def test_latency_average_is_weighted_by_invocations_or_sample_count() -> None:
    store = CloudWatchStore()
    store.merge(M, INVOCATIONS, SUM, [(at(0), 1), (at(1), 3)])
    store.merge(M, LATENCY, AVERAGE, [(at(0), 100), (at(1), 200)])
    store.merge(M, LATENCY, MAXIMUM, [(at(0), 150), (at(1), 900)])
    summary = store.latency_window(M, LATENCY, at(0), at(2))
    assert summary.avg == pytest.approx((100 * 1 + 200 * 3) / 4)
    assert summary.max == 900
    assert summary.p50 is None
    # TTFT has its own sample counts (only streaming calls report it).
    store.merge(M, TTFT, AVERAGE, [(at(0), 40), (at(1), 80)])
    store.merge(M, TTFT, SAMPLE_COUNT, [(at(0), 3), (at(1), 1)])
    assert store.latency_window(M, TTFT, at(0), at(2)).avg == pytest.approx((120 + 80) / 4)
    store.merge(M, LATENCY, "p99", [(at(1), 850)])
    assert store.latency_minute(M, LATENCY, at(1)).p99 == 850


def test_cache_metric_spellings_are_one_series() -> None:
    store = CloudWatchStore()
    store.merge(M, "CacheReadInputTokenCount", SUM, [(at(0), 10)])
    store.merge(M, CACHE_READ, SUM, [(at(1), 20)])
    assert store.sum(M, "CacheReadInputTokenCount", at(0), at(2)) == 30
    assert store.totals(M, at(0), at(2)).cache_read_input_tokens == 30


def test_ring_is_bounded_and_ignores_minutes_older_than_retention() -> None:
    ring = MinuteRing(5)
    for minute in range(100):
        ring.set(minute, float(minute))
    assert list(ring.items(0, 200)) == [(m, float(m)) for m in range(95, 100)]
    assert ring.set(90, 1.0) is False  # too old: would overwrite a newer slot
    assert ring.get(99) == 99.0
    assert ring.get(94) is None
    store = CloudWatchStore(retention_minutes=10)
    store.merge(M, INVOCATIONS, SUM, [(at(m), 1) for m in range(1000)])
    assert store.sum(M, INVOCATIONS, at(0), at(1000)) == 10


def test_period_to_date_adds_minutes_fetched_after_the_coarse_total() -> None:
    store = CloudWatchStore()
    assert store.period_to_date(M, INPUT_TOKENS, "month", at(10)) is None
    store.set_period_total(M, INPUT_TOKENS, "month", start=at(-1000), as_of=at(5), value=1_000)
    store.merge(M, INPUT_TOKENS, SUM, [(at(4), 7), (at(5), 30), (at(6), 12)])
    # Minute 4 is already inside the coarse total; minutes 5 and 6 come after it.
    assert store.period_to_date(M, INPUT_TOKENS, "month", at(7)) == 1_042
    assert store.model_ids() == [M]


def test_totals_and_window_stats_give_the_report_shape() -> None:
    stats = {
        (INVOCATIONS, SUM): 4.0,
        (INPUT_TOKENS, SUM): 1200.0,
        ("InvocationClientErrors", SUM): 1.0,
        ("InvocationServerErrors", SUM): 2.0,
        (LATENCY, AVERAGE): 250.5,
        (LATENCY, MAXIMUM): 900.0,
        (LATENCY, "p50"): 200.0,
    }
    report = CloudWatchTotals.from_window_stats(stats).as_report()
    assert report == {
        "requests": 4,
        "input_tokens": 1200,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "errors": 3,
        "throttles": 0,
        "latency_ms": {"p50": 200.0, "p90": None, "p99": None, "avg": 250.5, "max": 900.0},
        "ttft_ms": {"p50": None, "p90": None, "p99": None, "avg": None, "max": None},
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10_000)), max_size=30),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_revisions_equals_last_value_wins(
    polls: list[list[tuple[int, int]]],
) -> None:
    store = CloudWatchStore(retention_minutes=60)
    expected: dict[int, int] = {}
    for poll in polls:
        store.merge(M, INVOCATIONS, SUM, [(at(minute), value) for minute, value in poll])
        expected.update(dict(poll))
    assert store.sum(M, INVOCATIONS, at(0), at(41)) == sum(expected.values())
    series = store.minute_series(M, INVOCATIONS, SUM, at(0), at(41))
    assert series == [expected.get(minute) for minute in range(41)]

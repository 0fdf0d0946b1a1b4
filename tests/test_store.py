"""The store's rates, tallies and percentiles against values computed by hand."""

from __future__ import annotations

import math
import random

import pytest

from monitor.store import (
    DEDUP_WINDOW,
    GENERATION_SIZE,
    INPUT,
    OUTPUT,
    RELATIVE_ERROR,
    REQUESTS,
    LatencySketch,
    Percentiles,
    Store,
    Tally,
)
from tests.conftest import record

NOW = 1_764_000_000.0  # a whole minute and quarter hour
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def test_rates_over_one_and_five_minutes() -> None:
    store = Store()
    # 30 calls in the last minute: 100 in / 20 out each; 60 more between 1 and 5 minutes ago.
    recent = [record(epoch=NOW - 59 + i * 2, input_tokens=100, output_tokens=20) for i in range(30)]
    older = [record(epoch=NOW - 299 + i * 4, input_tokens=50, output_tokens=10) for i in range(60)]
    store.ingest(recent + older, NOW)
    one = store.rates(None, NOW, 60)
    assert one.requests_per_min == 30
    assert one.input_tokens_per_s == pytest.approx(30 * 100 / 60)
    assert one.output_tokens_per_s == pytest.approx(30 * 20 / 60)
    five = store.rates(HAIKU, NOW, 300)
    assert five.requests_per_min == pytest.approx(90 / 5)
    assert five.input_tokens_per_s == pytest.approx((3000 + 3000) / 300)
    assert store.rates(SONNET, NOW, 60).requests_per_min == 0


def test_models_are_kept_apart_and_total_is_their_sum() -> None:
    store = Store(since=NOW - 3600)
    store.ingest(
        [
            record(epoch=NOW - 10, model_id=HAIKU, input_tokens=10, output_tokens=1),
            record(
                epoch=NOW - 20,
                model_id=SONNET,
                input_tokens=1000,
                output_tokens=200,
                cache_read_input_tokens=5000,
                cache_write_input_tokens=300,
            ),
            record(
                epoch=NOW - 30, model_id=SONNET, status="throttled", input_tokens=0, output_tokens=0
            ),
            record(epoch=NOW - 40, model_id=SONNET, status="server_error"),
            record(epoch=NOW - 50, model_id=HAIKU, status="client_error"),
            record(epoch=NOW - 60, model_id=HAIKU, token_source="estimate", input_tokens=7),
        ],
        NOW,
    )
    haiku = store.since_tally(HAIKU)
    sonnet = store.since_tally(SONNET)
    assert haiku == Tally(
        requests=3, input_tokens=117, output_tokens=41, client_errors=1, estimated=1
    )
    assert sonnet.requests == 3 and sonnet.throttles == 1 and sonnet.server_errors == 1
    assert sonnet.cache_read_input_tokens == 5000 and sonnet.cache_write_input_tokens == 300
    assert store.since_tally() == haiku + sonnet
    assert store.model_ids() == sorted([HAIKU, SONNET])


def test_since_window_is_exact_to_the_second() -> None:
    since = NOW - 3600 + 7.5  # not on any bucket edge
    store = Store(since=since)
    store.ingest([record(epoch=since - 1), record(epoch=since + 0.5), record(epoch=NOW - 1)], NOW)
    assert store.since_tally().requests == 2


def test_latency_percentiles_match_hand_computed_nearest_rank() -> None:
    store = Store(since=NOW - 3600)
    latencies = [float(v) for v in range(1, 101)]  # 1..100 ms
    store.ingest([record(epoch=NOW - 30, latency_ms=v) for v in latencies], NOW)
    # Errors and throttles carry a latency too, but are not part of the call latency.
    store.ingest([record(epoch=NOW - 30, latency_ms=99_999, status="throttled")], NOW)
    result = store.since_latency()
    for got, want in ((result.p50, 50), (result.p90, 90), (result.p99, 99)):
        assert got == pytest.approx(want, rel=RELATIVE_ERROR)
    assert result.max == 100
    assert result.avg == pytest.approx(50.5)
    window = store.latency(None, NOW, 300)
    assert window.p90 == pytest.approx(90, rel=RELATIVE_ERROR)


def test_ttft_only_counts_streams() -> None:
    store = Store()
    store.ingest(
        [
            record(epoch=NOW - 5, ttft_ms=200.0, operation="ConverseStream", token_source="stream"),
            record(epoch=NOW - 5, ttft_ms=400.0, operation="ConverseStream", token_source="stream"),
            record(epoch=NOW - 5),
        ],
        NOW,
    )
    ttft = store.ttft(None, NOW, 60)
    assert ttft.count == 2 and ttft.max == 400 and ttft.avg == pytest.approx(300)


def test_sketch_relative_error_over_a_wide_range() -> None:
    sketch = LatencySketch()
    values = [0.5 * 1.37**i for i in range(40)]  # 0.5 ms to ~100 s
    for value in values:
        sketch.add(value)
    ordered = sorted(values)
    for q in (0.1, 0.5, 0.9, 0.99):
        want = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        assert sketch.quantile(q) == pytest.approx(want, rel=RELATIVE_ERROR)


def test_last_record_with_the_same_request_id_wins() -> None:
    store = Store(since=NOW - 3600)
    store.ingest(
        [record(epoch=NOW - 100, request_id="dup", output_tokens=5, status="aborted")], NOW
    )
    store.ingest([record(epoch=NOW - 90, request_id="dup", output_tokens=50)], NOW)
    tally = store.since_tally()
    assert tally.requests == 1 and tally.output_tokens == 50 and tally.aborted == 0
    assert store.stats.replaced == 1
    assert store.rates(None, NOW, 300).requests_per_min == pytest.approx(1 / 5)
    assert store.tally_between(None, NOW - 3600, NOW).requests == 1


def test_duplicates_inside_one_batch() -> None:
    store = Store()
    store.ingest(
        [
            record(epoch=NOW - 5, request_id="x", input_tokens=1),
            record(epoch=NOW - 4, request_id="x", input_tokens=2),
        ],
        NOW,
    )
    assert store.since_tally().input_tokens == 2


def test_dedup_memory_is_bounded() -> None:
    store = Store()
    batch = [record(epoch=NOW - 1, request_id=f"id-{i}") for i in range(DEDUP_WINDOW * 3)]
    for start in range(0, len(batch), 10_000):
        store.ingest(batch[start : start + 10_000], NOW)
    assert DEDUP_WINDOW <= len(store._recent_ids) <= DEDUP_WINDOW + 10_000
    assert len(store._recent_ids) == sum(store._recent_ids.generation_sizes())


def test_small_live_batches_share_a_few_remembered_generations() -> None:
    """The live feed ingests a few records at a time: the duplicate check of each batch must not
    walk one dict per earlier batch, and a repeat from thousands of records back is still
    caught."""
    store = Store()
    for start in range(0, DEDUP_WINDOW, 10):
        store.ingest(
            [record(epoch=NOW - 1, request_id=f"id-{i}") for i in range(start, start + 10)], NOW
        )
    assert len(store._recent_ids.generation_sizes()) <= DEDUP_WINDOW // GENERATION_SIZE + 2
    assert len(store._recent_ids) == sum(store._recent_ids.generation_sizes())
    store.ingest([record(epoch=NOW - 1, request_id="id-5", input_tokens=99)], NOW)
    assert store.stats.replaced == 1
    assert store.since_tally().requests == DEDUP_WINDOW


def test_tally_between_uses_the_finest_tier_that_covers_the_window() -> None:
    store = Store()
    day = 86_400
    # One call every 10 minutes for the last three days.
    records = [record(epoch=NOW - 3 * day + i * 600, input_tokens=1) for i in range(6 * 72)]
    store.ingest(records, NOW)
    assert store.tally_between(None, NOW - 2 * day, NOW).input_tokens == 6 * 48  # quarters
    assert store.tally_between(None, NOW - day, NOW).requests == 6 * 24  # minutes
    assert store.tally_between(None, NOW - 600, NOW).requests == 1  # seconds


def test_windows_expire_and_memory_stays_bounded() -> None:
    store = Store()
    for hour in range(24 * 45):  # 45 days, one call per hour, time moving forward
        now = NOW + hour * 3600
        store.ingest([record(epoch=now - 1)], now)
    series = store._series[HAIKU]
    assert len(series.seconds) <= 15 * 60
    assert len(series.minutes) <= 24 * 60
    assert len(series.quarters) <= 40 * 24 * 4 + 1
    assert store.rates(None, NOW + 45 * 86400, 60).requests_per_min == 0


def test_series_for_charts() -> None:
    store = Store()
    store.ingest(
        [record(epoch=NOW - 2.5, output_tokens=10), record(epoch=NOW - 0.5, output_tokens=7)], NOW
    )
    per_second = store.second_series(None, NOW, OUTPUT, points=5)
    assert per_second == [0, 10, 0, 7, 0]  # a call counts in the second it ended in
    per_minute = store.minute_series(None, NOW, REQUESTS, points=3)
    assert per_minute == [0, 2, 0]
    assert store.minute_series(None, NOW, INPUT, points=1) == [0]
    assert store.minute_quantiles(None, NOW, 0.5, points=2)[0] == pytest.approx(500, rel=0.02)


def test_sums_over_several_fields_match_the_series() -> None:
    rng = random.Random(3)
    store = Store()
    store.ingest(
        [
            record(
                epoch=NOW - rng.uniform(0, 800),
                model_id=rng.choice([HAIKU, "amazon.nova-lite-v1:0"]),
                input_tokens=rng.randint(0, 500),
                output_tokens=rng.randint(0, 90),
                status=rng.choice(["ok", "ok", "throttled", "client_error"]),
            )
            for _ in range(400)
        ],
        NOW,
    )
    fields = (REQUESTS, INPUT, OUTPUT)
    for model in (None, HAIKU):
        for points in (1, 60, 300):
            assert store.second_sums(model, NOW, fields, points) == [
                sum(store.second_series(model, NOW, index, points)) for index in fields
            ]
        for points in (1, 5, 20):
            assert store.minute_sums(model, NOW, fields, points) == [
                sum(store.minute_series(model, NOW, index, points)) for index in fields
            ]
    assert store.second_sums(None, NOW, fields, 900)[0] == 400


def test_version_moves_only_when_something_changed() -> None:
    store = Store()
    before = store.version
    store.ingest([], NOW)
    assert store.version == before
    store.ingest([record(epoch=NOW)], NOW)
    assert store.version == before + 1


def test_records_older_than_every_window_are_counted_not_kept() -> None:
    store = Store()
    store.ingest([record(epoch=NOW - 41 * 86400)], NOW)
    assert store.stats.too_old == 1 and store.since_tally().requests == 0


def test_recent_requests_newest_first() -> None:
    store = Store()
    store.ingest([record(epoch=NOW - i, request_id=f"r{i}") for i in range(5)], NOW)
    assert [r.request_id for r in store.recent_requests(HAIKU, 3)] == ["r0", "r1", "r2"]


def _exact(values: Percentiles) -> tuple[object, ...]:
    # Means are sums of floats, whose last bits depend on the order of addition.
    avg = None if values.avg is None else round(values.avg, 6)
    return (values.count, values.p50, values.p90, values.p99, values.max, avg)


def _figures(store: Store, now: float) -> tuple[object, ...]:
    """Everything a view reads, for comparing two stores."""
    models = store.model_ids()
    return (
        models,
        store.stats.accepted,
        store.stats.replaced,
        store.last_epoch,
        [store.since_tally(m) for m in [*models, None]],
        [_exact(store.since_latency(m)) for m in [*models, None]],
        [_exact(store.since_ttft(m)) for m in [*models, None]],
        [store.tally_between(m, now - span, now) for m in models for span in (600, 7200, 9e5)],
        [_exact(store.latency(m, now, 300)) for m in models],
        store.second_series(None, now, INPUT, 120),
        store.minute_series(None, now, OUTPUT, 1440),
        store.minute_quantiles(None, now, 0.99, 30),
        [r.request_id for r in store.recent_requests(None, 500)],
    )


def _mixed_records(count: int, seed: int) -> list[object]:
    rng = random.Random(seed)
    records = []
    for serial in range(count):
        epoch = NOW - 3 * 86400 + serial * (3 * 86400 / count) + rng.uniform(-5, 5)
        # A few request ids come back a little later with other values (the last one wins).
        repeat = serial - rng.randrange(1, 40) if serial > 40 and rng.random() < 0.03 else serial
        status = rng.choice(("ok",) * 8 + ("throttled", "server_error"))
        records.append(
            record(
                epoch=min(epoch, NOW - 1),
                request_id=f"r-{repeat}",
                model_id=rng.choice((HAIKU, SONNET, "amazon.nova-lite-v1:0")),
                input_tokens=rng.randrange(5000),
                output_tokens=rng.randrange(900),
                latency_ms=rng.choice((0.0, 0.005, round(rng.lognormvariate(6, 1.2), 3))),
                ttft_ms=rng.choice((None, round(rng.lognormvariate(5, 1), 3))),
                status=status,
                cache_read_input_tokens=rng.choice((0, 0, 1200)),
                token_source=rng.choice(("body", "estimate")),
            )
        )
    return records


@pytest.mark.parametrize("cut", [1, 5000, 11_111, 29_999])
def test_a_store_of_the_earlier_part_merged_in_front_equals_one_store(cut: int) -> None:
    """Blocks ingested in order into one store, or split at ``cut``: the earlier part in a
    store of its own (sent through pickle, as from another process) merged in front of the
    later part's store, with the duplicates across the cut replaced."""
    records = _mixed_records(30_000, seed=cut)
    since = NOW - 86400 - 123.4

    def feed(store: Store, part: list[object]) -> None:
        for start in range(0, len(part), 4096):
            store.ingest(part[start : start + 4096], NOW)  # type: ignore[arg-type]

    whole = Store(since=since)
    feed(whole, records)
    earlier, later = Store(since=since), Store(since=since, keeps_head=True)
    feed(earlier, records[:cut])
    feed(later, records[cut:])
    import pickle

    later.absorb_earlier(pickle.loads(pickle.dumps(earlier)), NOW)
    assert whole.stats.replaced > 0
    assert _figures(later, NOW) == _figures(whole, NOW)


@pytest.mark.parametrize("read_between", [False, True])
def test_block_ingest_equals_record_by_record(read_between: bool) -> None:
    """The same records one at a time (the per-record path) or in blocks (the block path);
    with ``read_between``, the block store is read after each block, as the live screen reads
    it (its report-window sketches take the blocks' pending counts at each read)."""
    records = _mixed_records(6000, seed=3)
    since = NOW - 2 * 86400 + 17.5
    blocks, singles = Store(since=since), Store(since=since)
    for start in range(0, len(records), 1000):
        blocks.ingest(records[start : start + 1000], NOW)  # type: ignore[arg-type]
        if read_between:
            _figures(blocks, NOW)
    for item in records:
        singles.ingest([item], NOW)  # type: ignore[list-item]
    assert _figures(blocks, NOW) == _figures(singles, NOW)

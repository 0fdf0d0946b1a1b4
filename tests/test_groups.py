"""The group index: per-app and per-caller totals against hand sums, windows, and the bound."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from monitor.groups import NO_VALUE, OTHER, GroupIndex
from monitor.records import UsageRecord
from tests.conftest import record

NOW = 1_796_000_000.0
Make = Callable[..., UsageRecord]


def test_totals_equal_hand_sums(make: Make) -> None:
    rng = random.Random(3)
    apps = ["bot", "etl", None]
    callers = ["role-a/s1", "role-b/s2", "user/alice"]
    models = ["m.one", "m.two", "m.three"]
    records = [
        make(
            epoch=NOW - rng.uniform(0, 3000),
            app=rng.choice(apps),
            caller=rng.choice(callers),
            model_id=rng.choice(models),
            input_tokens=rng.randint(0, 5000),
            output_tokens=rng.randint(0, 900),
            cache_read_input_tokens=rng.randint(0, 50),
            status=rng.choice(["ok", "ok", "ok", "throttled", "client_error", "server_error"]),
        )
        for _ in range(2000)
    ]
    index = GroupIndex(since=NOW - 3600)
    for start in range(0, len(records), 333):
        index.ingest(records[start : start + 333], NOW)
    for dimension, key in (("app", lambda r: r.app or NO_VALUE), ("caller", lambda r: r.caller)):
        expected: dict[str, Counter[str]] = defaultdict(Counter)
        by_model: dict[tuple[str, str], int] = Counter()
        for r in records:
            totals = expected[key(r)]
            totals["requests"] += 1
            totals["input"] += r.input_tokens
            totals["output"] += r.output_tokens
            totals["cache_read"] += r.cache_read_input_tokens
            totals["throttles"] += r.status == "throttled"
            totals["errors"] += r.status in ("client_error", "server_error")
            by_model[(key(r), r.model_id)] += r.output_tokens
        assert index.group_names(dimension) == sorted(expected)
        for name, totals in expected.items():
            tally = index.since_tally(dimension, name)
            assert tally.requests == totals["requests"]
            assert tally.input_tokens == totals["input"]
            assert tally.output_tokens == totals["output"]
            assert tally.cache_read_input_tokens == totals["cache_read"]
            assert tally.throttles == totals["throttles"]
            assert tally.errors == totals["errors"]
            split = index.model_tallies(dimension, name)
            assert sum(t.requests for t in split.values()) == totals["requests"]
            for model, tally in split.items():
                assert tally.output_tokens == by_model[(name, model)]


def test_a_request_id_seen_again_is_one_request(make: Make) -> None:
    index = GroupIndex(since=NOW - 3600)
    first = make(epoch=NOW - 10, app="bot", request_id="dup-1", input_tokens=10)
    again = make(epoch=NOW - 10, app="bot", request_id="dup-1", input_tokens=30)
    index.ingest([first], NOW)
    index.ingest([again, make(epoch=NOW - 5, app="bot")], NOW)
    tally = index.since_tally("app", "bot")
    assert tally.requests == 2
    assert tally.input_tokens == 30 + 100  # the last record of a request id wins


def test_windows(make: Make) -> None:
    index = GroupIndex(since=NOW - 3600)
    index.ingest(
        [
            make(epoch=NOW - 30, app="bot", input_tokens=600, output_tokens=60),
            make(epoch=NOW - 45, app="bot", input_tokens=600, output_tokens=60, latency_ms=900),
            make(epoch=NOW - 200, app="bot", status="throttled"),
            make(epoch=NOW - 1800, app="bot", input_tokens=5),  # in the hour, not in the rates
            make(epoch=NOW - 7200, app="bot", input_tokens=7),  # before the report window
        ],
        NOW,
    )
    rates = index.rates("app", "bot", NOW)
    assert rates.requests_per_min == pytest.approx(2.0)
    assert rates.input_tokens_per_s == pytest.approx(1200 / 60)
    failures = index.failures("app", "bot", NOW)
    assert failures.throttles == 1 and failures.requests == 3
    latency = index.latency("app", "bot", NOW)
    assert latency.count == 2 and latency.max == pytest.approx(900)
    assert index.since_tally("app", "bot").requests == 4
    hour = index.model_tallies_between("app", "bot", NOW - 3600, NOW)
    assert sum(t.requests for t in hour.values()) == 4
    trend = index.minute_quantiles("app", "bot", NOW, 0.5, 12)
    assert len(trend) == 12 and trend[-2] == pytest.approx(
        500, rel=0.05
    )  # NOW is 20 s into its minute


def test_groups_are_bounded_and_the_rest_folded_and_counted(make: Make) -> None:
    index = GroupIndex(since=NOW - 3600, max_groups=200)
    records = [make(epoch=NOW - 1, app=f"app-{n:04d}", caller="c") for n in range(260)]
    records += [make(epoch=NOW - 1, app="app-0000", caller="c")]  # a kept group stays kept
    records += [make(epoch=NOW - 1, app="app-0250", caller="c")]  # a folded one stays folded
    index.ingest(records, NOW)
    names = index.group_names("app")
    assert len(names) == 201 and OTHER in names
    assert index.since_tally("app", OTHER).requests == 61
    assert index.since_tally("app", "app-0000").requests == 2
    assert index.folded("app") == (60, 61)
    assert sum(index.since_tally("app", n).requests for n in names) == len(records)
    assert index.folded("caller") == (0, 0)


def test_unknown_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown grouping dimension"):
        GroupIndex(("app", "colour"))
    with pytest.raises(KeyError):
        GroupIndex(("app",)).group_names("caller")


def test_groups_of_an_earlier_part_merge_as_if_read_in_one_pass() -> None:
    now = 1_800_000_000.0
    records = [
        record(
            request_id=f"r{i}",
            app=f"app-{i % 5}",
            caller=f"role/c{i % 3}",
            epoch=now - 4000 + i * 10,
            input_tokens=10 + i,
            output_tokens=i,
        )
        for i in range(300)
    ]
    # The later part repeats two request ids of the earlier one: the later record wins.
    later = [*records[150:], record(request_id="r3", app="app-3", epoch=now - 10, input_tokens=1)]
    one_pass = GroupIndex(since=now - 3600, max_groups=4)
    one_pass.ingest(records[:150], now)
    one_pass.ingest(later, now)
    earlier = GroupIndex(since=now - 3600, max_groups=4)
    earlier.ingest(records[:150], now)
    merged = GroupIndex(since=now - 3600, max_groups=4)
    merged.ingest(later, now)
    merged.absorb_earlier(earlier, now)
    for dimension in ("app", "caller"):
        assert sorted(merged.group_names(dimension)) == sorted(one_pass.group_names(dimension))
        for name in one_pass.group_names(dimension):
            assert merged.since_tally(dimension, name) == one_pass.since_tally(dimension, name)
            assert merged.model_tallies(dimension, name) == one_pass.model_tallies(dimension, name)
        assert merged.folded(dimension)[0] == one_pass.folded(dimension)[0]


def test_one_app_log_takes_the_store_s_sums_and_gives_the_same_groups(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's log is one app's: the groups of a batch after ``since`` take the store's
    per-model sums (no pass over the records of their own), and equal what record-by-record
    ingest gives, repeated request ids included."""
    from monitor.groups import ingest_usage
    from monitor.store import Store

    rng = random.Random(11)
    since = NOW - 2 * 86400
    records = []
    for serial in range(6000):
        epoch = since - 600 + serial * (2 * 86400 / 6000)
        record_ = make(
            epoch=min(epoch, NOW - 1),
            request_id=f"r-{serial}",
            app="checkout",
            model_id=rng.choice(["m.one", "m.two", "m.three"]),
            input_tokens=rng.randint(0, 5000),
            output_tokens=rng.randint(0, 900),
            cache_write_input_tokens=rng.choice([0, 0, 7]),
            status=rng.choice(["ok", "ok", "ok", "throttled", "client_error"]),
            token_source=rng.choice(["body", "estimate"]),
        )
        records.append(record_)
        if serial % 97 == 0:  # the same request id again, other counts: the last one wins
            records.append(make(epoch=record_.epoch, request_id=f"r-{serial}", app="checkout"))
    store, fast = Store(since=since), GroupIndex(since=since)
    slow = GroupIndex(since=since)
    summed = 0
    general = GroupIndex._add_part

    def counted(index: GroupIndex, *args: object) -> None:
        nonlocal summed
        if index is fast:
            summed += 1
        general(index, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(GroupIndex, "_add_part", counted)
    batches = [records[start : start + 400] for start in range(0, len(records), 400)]
    for batch in batches:
        ingest_usage(store, fast, batch, NOW)
    for one in records:
        slow.ingest([one], NOW)
    # Only the batches across since, the day, the hour or in the last minutes were summed here.
    assert summed <= 6 < len(batches)
    for dimension in ("app", "caller"):
        assert fast.group_names(dimension) == slow.group_names(dimension)
        for name in slow.group_names(dimension):
            assert fast.since_tally(dimension, name) == slow.since_tally(dimension, name)
            assert fast.model_tallies(dimension, name) == slow.model_tallies(dimension, name)
    assert fast.since_tally("app", "checkout") == store.since_tally()

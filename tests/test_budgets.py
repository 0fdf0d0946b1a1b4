"""Budgets: calendar periods across DST, usage, burn rates and forecasts, thresholds."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.budgets import (
    BudgetSpec,
    BudgetStatus,
    ThresholdTracker,
    budget_report,
    evaluate,
    overall_budget,
    period_bounds,
    resolve_source,
    run_on_threshold,
    tightest_budget,
)
from monitor.pricing import Price, PriceBook
from monitor.store import Tally

M = 1_000_000
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"


def utc(text: str) -> float:
    """Epoch seconds of a UTC time written ``2026-03-08T05:00:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def at(text: str, zone: str) -> float:
    """Epoch seconds of a wall-clock time in ``zone`` (unambiguous times only)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


# --- periods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "now", "period", "start", "end"),
    [
        # New York, the day clocks spring forward (2026-03-08 02:00 EST -> 03:00 EDT): 23 hours.
        ("America/New_York", "2026-03-08T12:00", "day", "2026-03-08T05:00", "2026-03-09T04:00"),
        # ... and fall back (2026-11-01 02:00 EDT -> 01:00 EST): 25 hours.
        ("America/New_York", "2026-11-01T01:30", "day", "2026-11-01T04:00", "2026-11-02T05:00"),
        # Berlin: the week containing Sunday 2026-03-29 (CET -> CEST) starts Monday the 23rd.
        ("Europe/Berlin", "2026-03-29T12:00", "week", "2026-03-22T23:00", "2026-03-29T22:00"),
        # Berlin: October 2026 starts in CEST and ends in CET.
        ("Europe/Berlin", "2026-10-25T12:00", "month", "2026-09-30T22:00", "2026-10-31T23:00"),
        # December rolls over into the next year.
        ("Europe/Berlin", "2026-12-31T23:59", "month", "2026-11-30T23:00", "2026-12-31T23:00"),
        ("Asia/Kathmandu", "2026-05-10T03:00", "day", "2026-05-09T18:15", "2026-05-10T18:15"),
        ("UTC", "2026-05-10T12:00", "week", "2026-05-04T00:00", "2026-05-11T00:00"),
    ],
)
def test_period_bounds(zone: str, now: str, period: str, start: str, end: str) -> None:
    now_epoch = at(now, zone) if zone != "UTC" else utc(now)
    assert period_bounds(period, now_epoch, zone) == (utc(start), utc(end))  # type: ignore[arg-type]


def test_the_period_turns_exactly_at_local_midnight() -> None:
    zone = "America/New_York"
    midnight = at("2026-03-09T00:00", zone)
    assert period_bounds("day", midnight, zone)[0] == midnight
    assert period_bounds("day", midnight - 0.001, zone) == (at("2026-03-08T00:00", zone), midnight)
    monday = at("2026-03-09T00:00", zone)  # a Monday
    assert period_bounds("week", monday, zone)[0] == monday
    assert period_bounds("week", monday - 1, zone)[1] == monday
    first = at("2026-04-01T00:00", zone)
    assert period_bounds("month", first, zone)[0] == first
    assert period_bounds("month", first - 1, zone) == (at("2026-03-01T00:00", zone), first)


def test_period_starting_in_a_dst_gap_at_midnight() -> None:
    # Havana moves its clocks from 00:00 to 01:00 on 2026-03-08: that day has no midnight; it
    # begins at the jump, 05:00 UTC (00:00 CST, -05:00 == 01:00 CDT, -04:00).
    start, end = period_bounds("day", at("2026-03-08T12:00", "America/Havana"), "America/Havana")
    assert start == utc("2026-03-08T05:00")
    assert end == utc("2026-03-09T04:00")


ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "America/Havana",
    "America/Santiago",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(["day", "week", "month"]),
    now=st.floats(min_value=utc("2020-01-01T00:00"), max_value=utc("2035-01-01T00:00")),
)
def test_period_bounds_properties(zone: str, period: str, now: float) -> None:
    tz = ZoneInfo(zone)
    start, end = period_bounds(period, now, zone)  # type: ignore[arg-type]
    assert start <= now < end
    first = datetime.fromtimestamp(start, tz)
    before = datetime.fromtimestamp(start - 1, tz)
    last = datetime.fromtimestamp(end - 1, tz)
    # The start is the first instant of its local day, the end the first of the next period.
    assert before.date() < first.date()
    assert datetime.fromtimestamp(end, tz).date() > last.date()
    assert first.date() == last.date() or period != "day"
    if period == "week":
        assert first.weekday() == 0
        assert (datetime.fromtimestamp(end, tz).date() - first.date()).days == 7
    if period == "month":
        assert first.day == 1 and last.month == first.month
    # Every start in these zones falls on a store quarter-hour bucket edge.
    assert start % 900 == 0 and end % 900 == 0


# --- usage and forecasts --------------------------------------------------------------------

Event = tuple[float, str, Tally]


def usage_of(events: list[Event]) -> Callable[[str, float, float], Tally]:
    """The ``usage`` contract over a list of requests: the sum in ``[start, end)``."""

    def usage(model_id: str, start: float, end: float) -> Tally:
        total = Tally()
        for ts, model, counted in events:
            if model == model_id and start <= ts < end:
                total = total + counted
        return total

    return usage


def tokens(input_tokens: int = 0, output_tokens: int = 0) -> Tally:
    return Tally(requests=1, input_tokens=input_tokens, output_tokens=output_tokens)


NOW = utc("2026-05-10T12:00")
EVENTS: list[Event] = [
    (utc("2026-05-09T23:00"), HAIKU3, tokens(10 * M)),  # yesterday: $2.50, not in the period
    (utc("2026-05-10T01:00"), HAIKU3, tokens(4 * M)),  # $1.00
    (utc("2026-05-10T11:30"), HAIKU3, tokens(0, 1_600_000)),  # $2.00
    (utc("2026-05-10T11:50"), HAIKU3, tokens(2 * M)),  # $0.50
    (utc("2026-05-10T11:55"), NOVA_LITE, tokens(M, M)),  # $0.30, other budget
    (utc("2026-05-10T12:00"), HAIKU3, tokens(99 * M)),  # at now: after [.., now)
]
MODELS = [HAIKU3, NOVA_LITE]


def test_usd_budget_against_a_hand_calculation() -> None:
    spec = BudgetSpec(
        name="haiku", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=10.0
    )
    # The request at exactly `now` is in the period (it is before the period's end) but not in
    # the burn windows, which end at now.
    events = EVENTS[:-1]
    status = evaluate(spec, NOW, MODELS, usage_of(events), PriceBook(), tz="UTC")
    # used: 1.00 + 2.00 + 0.50 = 3.50 of 10
    assert status.used_usd == pytest.approx(3.5)
    assert status.used_tokens == 4 * M + 1_600_000 + 2 * M
    assert status.fraction == pytest.approx(0.35)
    # last hour [11:00, 12:00): 2.00 + 0.50 = 2.50 $/h; last 15 min [11:45, 12:00): 0.50 -> 2 $/h
    assert status.burn_per_h_1h == pytest.approx(2.5)
    assert status.burn_per_h_15m == pytest.approx(2.0)
    # 12 h left at 2.50 $/h: 3.50 + 30 = 33.50 -> 3.35
    assert status.projected_fraction == pytest.approx(3.35)
    # (10 - 3.5) / 2.5 = 2.6 h = 2 h 36 min after noon
    assert status.exhausts_at == pytest.approx(utc("2026-05-10T14:36"))
    assert status.exhausts_at_iso == "2026-05-10T14:36:00+00:00"
    assert status.period_start_iso == "2026-05-10T00:00:00+00:00"
    assert status.warn_level is None
    assert status.unpriced_tokens == 0


def test_token_budget_against_a_hand_calculation() -> None:
    spec = BudgetSpec(
        name="haiku tokens",
        models=("anthropic.claude-3-haiku-*",),
        period="day",
        limit_tokens=20 * M,
        warn_at=(0.25, 0.5),
    )
    status = evaluate(spec, NOW, MODELS, usage_of(EVENTS[:-1]), PriceBook(), tz="UTC")
    # used: 4M + 1.6M + 2M = 7.6M of 20M -> 0.38
    assert status.fraction == pytest.approx(0.38)
    # last hour: 1.6M + 2M = 3.6M tokens/h; 12 h left: 7.6M + 43.2M = 50.8M -> 2.54
    assert status.burn_per_h_1h == pytest.approx(3.6 * M)
    assert status.projected_fraction == pytest.approx(2.54)
    # (20M - 7.6M) / 3.6M per h = 3.4444 h = 3 h 26 min 40 s
    assert status.exhausts_at == pytest.approx(utc("2026-05-10T15:26:40"))
    assert status.warn_level == 0.25
    assert status.used_usd == pytest.approx(3.5)  # still reported for a token budget


def test_period_in_a_timezone_and_the_request_at_now() -> None:
    spec = BudgetSpec(name="all", period="day", limit_usd=100.0)
    status = evaluate(spec, NOW, MODELS, usage_of(EVENTS), PriceBook(), tz="Europe/Berlin")
    # Berlin's day began at 2026-05-09T22:00Z, so yesterday's 23:00Z request counts now,
    # and so does the one at exactly now: 2.50 + 1.00 + 2.00 + 0.50 + 0.30 + 24.75
    assert status.period_start_iso == "2026-05-10T00:00:00+02:00"
    assert status.used_usd == pytest.approx(31.05)
    assert status.fraction == pytest.approx(0.3105)


def test_exhaustion_outside_the_period_or_already_past_is_null() -> None:
    usage = usage_of(EVENTS[:-1])
    slow = BudgetSpec(
        name="slow", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=40.0
    )
    status = evaluate(slow, NOW, MODELS, usage, PriceBook())
    # 3.50 + 2.50 * 12 = 33.50 < 40: not reached before midnight
    assert status.exhausts_at is None and status.exhausts_at_iso is None
    assert status.projected_fraction == pytest.approx(33.5 / 40)

    spent = BudgetSpec(
        name="spent", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=3.0
    )
    status = evaluate(spent, NOW, MODELS, usage, PriceBook())
    assert status.fraction == pytest.approx(3.5 / 3.0)
    assert status.exhausts_at is None
    assert status.warn_level == 1.0


def test_no_recent_burn_projects_the_current_fraction() -> None:
    spec = BudgetSpec(name="quiet", period="month", limit_usd=10.0)
    status = evaluate(spec, utc("2026-05-20T00:00"), MODELS, usage_of(EVENTS), PriceBook())
    assert status.burn_per_h_1h == 0 and status.burn_per_h_15m == 0
    assert status.projected_fraction == status.fraction
    assert status.exhausts_at is None


def test_unpriced_models_are_counted_not_priced_at_zero() -> None:
    events = [*EVENTS[:-1], (utc("2026-05-10T10:00"), LLAMA, tokens(500, 250))]
    spec = BudgetSpec(name="all", period="day", limit_usd=10.0)
    status = evaluate(spec, NOW, [*MODELS, LLAMA], usage_of(events), PriceBook())
    assert status.used_usd == pytest.approx(3.8)
    assert status.unpriced_tokens == 750
    assert status.used_tokens == 7_600_000 + 2 * M + 750
    # With the model priced in the configuration, the same usage costs money.
    book = PriceBook({LLAMA: Price(1.0, 2.0)})
    priced = evaluate(spec, NOW, [*MODELS, LLAMA], usage_of(events), book)
    assert priced.used_usd == pytest.approx(3.8 + 0.0005 + 0.0005)
    assert priced.unpriced_tokens == 0


def test_resolve_source() -> None:
    auto = BudgetSpec(name="a", period="day", limit_usd=1.0)
    assert resolve_source(auto, cloudwatch_enabled=True) == "cloudwatch"
    assert resolve_source(auto, cloudwatch_enabled=False) == "local"
    local = BudgetSpec(name="l", period="day", limit_usd=1.0, source="local")
    assert resolve_source(local, cloudwatch_enabled=True) == "local"


def test_spec_rejects_impossible_limits() -> None:
    with pytest.raises(ValueError):
        BudgetSpec(name="x", period="day")
    with pytest.raises(ValueError):
        BudgetSpec(name="x", period="day", limit_usd=1.0, limit_tokens=5)
    with pytest.raises(ValueError):
        BudgetSpec(name="x", period="day", limit_usd=0.0)
    with pytest.raises(ValueError):
        BudgetSpec(name="x", period="year", limit_usd=1.0)  # type: ignore[arg-type]


# --- choosing budgets, the report -----------------------------------------------------------


def statuses_at(now: float, events: list[Event], *specs: BudgetSpec) -> list[BudgetStatus]:
    return [evaluate(spec, now, MODELS, usage_of(events), PriceBook()) for spec in specs]


def test_tightest_and_overall_budget() -> None:
    haiku = BudgetSpec(
        name="haiku", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=5.0
    )  # 3.50 / 5 = 0.70
    nova = BudgetSpec(
        name="nova", models=("amazon.nova-*",), period="day", limit_usd=0.5
    )  # 0.30 / 0.5 = 0.60
    everything = BudgetSpec(name="all", period="day", limit_usd=100.0)  # 3.80 / 100
    statuses = statuses_at(NOW, EVENTS[:-1], haiku, nova, everything)
    top = tightest_budget(statuses, HAIKU3)
    assert top is not None and top.name == "haiku"
    top = tightest_budget(statuses, NOVA_LITE)
    assert top is not None and top.name == "nova"
    top = tightest_budget(statuses, LLAMA)
    assert top is not None and top.name == "all"
    overall = overall_budget(statuses)
    assert overall is not None and overall.name == "all"
    # Without an all-models budget, the overall gauge shows the tightest of all.
    overall = overall_budget(statuses[:2])
    assert overall is not None and overall.name == "haiku"
    assert tightest_budget([], HAIKU3) is None and overall_budget([]) is None


def test_budget_report_fields() -> None:
    spec = BudgetSpec(
        name="haiku", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=10.0
    )
    [entry] = budget_report(statuses_at(NOW, EVENTS[:-1], spec))
    json.dumps(entry)  # serialisable as is
    assert entry["name"] == "haiku"
    assert entry["period"] == "day"
    assert entry["period_start"] == "2026-05-10T00:00:00+00:00"
    assert entry["source"] == "local"
    assert entry["limit_usd"] == 10.0 and entry["limit_tokens"] is None
    assert entry["used_usd"] == pytest.approx(3.5)
    assert entry["used_tokens"] == 7_600_000
    assert entry["fraction"] == pytest.approx(0.35)
    assert entry["projected_fraction"] == pytest.approx(3.35)
    assert entry["exhausts_at"] == "2026-05-10T14:36:00+00:00"
    required = {
        "name",
        "period",
        "period_start",
        "source",
        "limit_usd",
        "limit_tokens",
        "used_usd",
        "used_tokens",
        "fraction",
        "projected_fraction",
        "exhausts_at",
    }
    assert required <= set(entry)


# --- thresholds -----------------------------------------------------------------------------


def test_thresholds_fire_once_per_threshold_per_period() -> None:
    spec = BudgetSpec(
        name="haiku", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=10.0
    )
    tracker = ThresholdTracker()
    events: list[Event] = []
    day = utc("2026-05-10T00:00")

    def spend_and_check(hour: float, usd: float) -> list[tuple[str, float]]:
        # $0.25 per million input tokens for Claude 3 Haiku
        events.append((day + hour * 3600, HAIKU3, tokens(int(usd * 4 * M))))
        now = day + hour * 3600 + 1
        fired = tracker.update(statuses_at(now, events, spec))
        return [(event.budget, event.threshold) for event in fired]

    assert spend_and_check(1, 3.0) == []  # 0.3
    assert spend_and_check(2, 3.0) == [("haiku", 0.5)]  # 0.6
    assert spend_and_check(3, 0.5) == []  # 0.65: 0.5 already fired
    assert spend_and_check(4, 6.0) == [("haiku", 1.0)]  # 1.25: one event, for the highest
    assert spend_and_check(5, 1.0) == []  # 0.8 was passed over in this period: not again
    # The next day is a new period: the levels fire again.
    assert spend_and_check(25, 5.5) == [("haiku", 0.5)]
    assert spend_and_check(26, 0.0) == []


def test_editing_the_limit_starts_the_levels_afresh() -> None:
    tracker = ThresholdTracker()
    low = BudgetSpec(name="b", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=5.0)
    high = BudgetSpec(name="b", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=4.0)
    events = EVENTS[:-1]  # $3.50 of Haiku today
    assert [e.threshold for e in tracker.update(statuses_at(NOW, events, low))] == [0.5]
    assert tracker.update(statuses_at(NOW + 60, events, low)) == []
    assert [e.threshold for e in tracker.update(statuses_at(NOW + 120, events, high))] == [0.8]


def test_on_threshold_command_gets_the_event_and_does_not_block(tmp_path: Path) -> None:
    spec = BudgetSpec(
        name="haiku daily", models=("anthropic.claude-3-haiku-*",), period="day", limit_usd=5.0
    )
    [event] = ThresholdTracker().update(statuses_at(NOW, EVENTS[:-1], spec))
    out = tmp_path / "env.json"
    script = (
        "import json, os, sys, time; time.sleep(0.3);"
        "json.dump({k: v for k, v in os.environ.items() if k.startswith('BEDROCK_TOP_')},"
        " open(sys.argv[1], 'w'))"
    )
    process = run_on_threshold([sys.executable, "-c", script, str(out)], event)
    assert process is not None
    assert process.poll() is None  # returned while the command still runs
    assert process.wait(timeout=30) == 0
    env = json.loads(out.read_text())
    assert env["BEDROCK_TOP_BUDGET"] == "haiku daily"
    assert env["BEDROCK_TOP_THRESHOLD"] == "0.5"
    assert float(env["BEDROCK_TOP_FRACTION"]) == pytest.approx(0.7)
    assert float(env["BEDROCK_TOP_USED_USD"]) == pytest.approx(3.5)
    assert env["BEDROCK_TOP_LIMIT_USD"] == "5"
    assert env["BEDROCK_TOP_LIMIT_TOKENS"] == ""
    assert env["BEDROCK_TOP_USED_TOKENS"] == "7600000"
    assert env["BEDROCK_TOP_PERIOD"] == "day"
    assert env["BEDROCK_TOP_PERIOD_START"] == "2026-05-10T00:00:00+00:00"


def test_on_threshold_command_that_cannot_start_never_raises(tmp_path: Path) -> None:
    spec = BudgetSpec(name="b", period="day", limit_usd=1.0)
    [event] = ThresholdTracker().update(statuses_at(NOW, EVENTS[:-1], spec))
    errors: list[str] = []
    started = time.monotonic()
    missing = str(tmp_path / "no-such-command")
    assert run_on_threshold([missing], event, on_error=errors.append) is None
    assert run_on_threshold([], event, on_error=errors.append) is None

    def broken_handler(message: str) -> None:
        raise RuntimeError(message)

    assert run_on_threshold([missing], event, on_error=broken_handler) is None
    assert len(errors) == 2 and missing in errors[0]
    assert time.monotonic() - started < timedelta(seconds=30).total_seconds()

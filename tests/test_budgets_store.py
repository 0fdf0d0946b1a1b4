"""Budgets over the real store: records in, budget figures out, checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.budgets import BudgetSpec, budget_report, evaluate_all, tightest_budget
from monitor.pricing import PriceBook
from monitor.store import Store
from tests.conftest import record

M = 1_000_000
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
US_HAIKU3 = f"us.{HAIKU3}"
NOVA_PRO = "amazon.nova-pro-v1:0"


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = utc("2026-05-10T12:00:00")


def store_with(*requests: tuple[str, str, int, int]) -> Store:
    store = Store(since=utc("2026-05-01T00:00:00"))
    records = [
        record(
            epoch=utc(when),
            request_id=f"r{index}",
            model_id=model_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=800.0,
        )
        for index, (when, model_id, input_tokens, output_tokens) in enumerate(requests)
    ]
    store.ingest(records, NOW)
    return store


def test_budgets_from_store_tallies_match_a_hand_calculation() -> None:
    store = store_with(
        ("2026-05-09T21:59:00", HAIKU3, 8 * M, 0),  # before Berlin's day: not counted
        ("2026-05-09T22:30:00", HAIKU3, 4 * M, 0),  # 00:30 in Berlin: $1.00
        ("2026-05-10T11:30:00", HAIKU3, 0, 800_000),  # $1.00
        ("2026-05-10T11:40:00", US_HAIKU3, 2 * M, 0),  # 0.25 * 1.1 * 2 = $0.55
        ("2026-05-10T11:50:30", NOVA_PRO, M, M // 2),  # 0.80 + 1.60 = $2.40
    )
    book = PriceBook(profile_multipliers={"us.": 1.1})
    haiku = BudgetSpec(
        name="haiku daily",
        models=("anthropic.claude-3-haiku-*", "us.anthropic.claude-3-haiku-*"),
        period="day",
        limit_usd=5.0,
        source="local",
    )
    everything = BudgetSpec(name="all", period="day", limit_tokens=20 * M)
    account = BudgetSpec(name="account", period="month", limit_usd=100.0, source="cloudwatch")
    statuses = evaluate_all(
        [haiku, everything, account],
        NOW,
        book,
        tz="Europe/Berlin",
        local_models=store.model_ids(),
        local_usage=store.tally_between,
    )
    # CloudWatch is off: the cloudwatch budget is left out rather than fed local numbers.
    assert [status.name for status in statuses] == ["haiku daily", "all"]
    by_name = {status.name: status for status in statuses}

    h = by_name["haiku daily"]
    # 1.00 + 1.00 + 0.55 = 2.55 of 5.00
    assert h.used_usd == pytest.approx(2.55)
    assert h.fraction == pytest.approx(0.51)
    assert h.warn_level == 0.5
    # last hour: 1.00 + 0.55 = 1.55 $/h; Berlin's day ends at 22:00Z, 10 h away
    assert h.burn_per_h_1h == pytest.approx(1.55)
    assert h.projected_fraction == pytest.approx((2.55 + 15.5) / 5.0)
    # (5.00 - 2.55) / 1.55 h = 1.5806 h
    assert h.exhausts_at == pytest.approx(NOW + 2.45 / 1.55 * 3600)
    # last 15 minutes [11:45, 12:00): nothing of Haiku
    assert h.burn_per_h_15m == 0

    a = by_name["all"]
    # tokens: 4M + 0.8M + 2M + 1.5M = 8.3M of 20M
    assert a.used_tokens == 8_300_000
    assert a.fraction == pytest.approx(0.415)
    assert a.source == "local"  # auto with CloudWatch off
    # last 15 minutes: Nova's 1.5M tokens -> 6M tokens/h
    assert a.burn_per_h_15m == pytest.approx(6 * M)

    top = tightest_budget(statuses, US_HAIKU3)
    assert top is not None and top.name == "haiku daily"
    [h_report, a_report] = budget_report(statuses)
    assert h_report["period_start"] == "2026-05-10T00:00:00+02:00"
    assert a_report["limit_tokens"] == 20 * M and a_report["limit_usd"] is None


def test_cloudwatch_budgets_use_only_cloudwatch_numbers() -> None:
    local = store_with(("2026-05-10T11:00:00", HAIKU3, 4 * M, 0))  # $1.00 here
    # Another store stands in for the account-wide source.
    account = store_with(("2026-05-10T10:00:00", HAIKU3, 40 * M, 0))  # $10.00 account-wide
    spec = BudgetSpec(name="account", period="day", limit_usd=20.0)  # auto
    [status] = evaluate_all(
        [spec],
        NOW,
        PriceBook(),
        tz="UTC",
        local_models=local.model_ids(),
        local_usage=local.tally_between,
        cloudwatch_models=account.model_ids(),
        cloudwatch_usage=account.tally_between,
    )
    assert status.source == "cloudwatch"
    assert status.used_usd == pytest.approx(10.0)  # not 11.00: never added together

"""The bill read as models: sums, learned prices (against hand calculations), the price book's
order of sources, and budgets on the bill."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.billing import (
    UNMATCHED,
    BillingData,
    BillingRow,
    UsageTypeMap,
    learned_prices,
    summarize,
    tokens_per_unit,
)
from monitor.budgets import BudgetSpec, budget_report, evaluate_all
from monitor.pricing import Price, PriceBook
from monitor.reconcile import billed_spend, learned_for_book
from monitor.store import Tally

HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
SEEN = [HAIKU3, LLAMA, SONNET]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def bill(*rows: tuple[str, str, float, float]) -> BillingData:
    return BillingData(
        fetched_at=utc("2026-12-03T06:00:00"),
        start="2026-12-01",
        end="2026-12-04",
        rows=tuple(BillingRow(day, ut, usd, qty, "Tokens") for day, ut, usd, qty in rows),
    )


ROWS = [
    ("2026-12-01", "USE1-Llama3.1-70B-Instruct-input-tokens", 0.54, 750_000),
    ("2026-12-02", "USE1-Llama3.1-70B-Instruct-input-tokens", 0.324, 450_000),
    ("2026-12-01", "USE1-Llama3.1-70B-Instruct-output-tokens", 0.216, 300_000),
    ("2026-12-01", "USE1-Claude4.5Sonnet-input-tokens", 3.3, 1_000_000),
    ("2026-12-02", "USE1-Claude4.5Sonnet-output-tokens", 8.25, 500_000),
    ("2026-12-02", "USE1-Claude4.5Sonnet-cache-read-input-token-count", 0.66, 2_000_000),
    ("2026-12-01", "USE1-Claude4.5Sonnet-cache-write-input-token-count", 0.4125, 100_000),
    ("2026-12-02", "USE1-Titan-Embed-Text-v2-input-tokens", 0.02, 1_000_000),
    ("2026-12-02", "USE1-ProvisionedThroughput-ModelUnits", 40.0, 2),
    ("2026-12-03", "USE1-Claude4.5Sonnet-input-tokens", 0.0, 0),
]


def test_month_to_date_is_every_usage_types_cost_and_unmatched_ones_are_listed() -> None:
    summary = summarize(bill(*ROWS), UsageTypeMap(SEEN))
    assert summary.month_to_date_usd == pytest.approx(sum(row[2] for row in ROWS))
    # The last day with any cost or usage (the 3rd has only zeros).
    assert summary.through == "2026-12-02"
    assert summary.by_model[LLAMA] == pytest.approx(0.54 + 0.324 + 0.216)
    assert summary.by_model[SONNET] == pytest.approx(3.3 + 8.25 + 0.66 + 0.4125)
    assert summary.by_model[UNMATCHED] == pytest.approx(40.02)
    assert sum(summary.by_model.values()) == pytest.approx(summary.month_to_date_usd)
    unmatched = {line.usage_type: line.kind for line in summary.unmatched}
    assert unmatched == {
        "USE1-Titan-Embed-Text-v2-input-tokens": "input",
        "USE1-ProvisionedThroughput-ModelUnits": "other",
    }
    report = summary.as_report()
    assert {entry["usage_type"] for entry in report["usage_types"]} == {row[1] for row in ROWS}
    assert report["through"] == "2026-12-02"
    assert report["fetched_at"] == "2026-12-03T06:00:00Z"


def test_learned_prices_match_hand_calculations() -> None:
    learned = learned_prices(summarize(bill(*ROWS), UsageTypeMap(SEEN)))
    llama = learned[LLAMA].price
    # (0.54 + 0.324) / 1.2M tokens = $0.72 per million; 0.216 / 0.3M = $0.72.
    assert llama.input_per_mtok == pytest.approx(0.72)
    assert llama.output_per_mtok == pytest.approx(0.72)
    assert llama.cache_read_per_mtok is None and llama.cache_write_per_mtok is None
    sonnet = learned[SONNET].price
    # 3.3 / 1M = 3.30; 8.25 / 0.5M = 16.50; 0.66 / 2M = 0.33; 0.4125 / 0.1M = 4.125.
    assert (sonnet.input_per_mtok, sonnet.output_per_mtok) == pytest.approx((3.3, 16.5))
    assert sonnet.cache_read_per_mtok == pytest.approx(0.33)
    assert sonnet.cache_write_per_mtok == pytest.approx(4.125)
    assert learned[SONNET].as_of == "2026-12-02"
    # An unmatched usage type teaches nothing; a model with input only has no full price.
    assert set(learned) == {LLAMA, SONNET}


def test_units_in_thousands_are_scaled_to_tokens() -> None:
    assert tokens_per_unit("Tokens") == 1
    assert tokens_per_unit("1K tokens") == 1000
    assert tokens_per_unit("Million Tokens") == 1_000_000
    rows = (
        BillingRow(
            "2026-12-01", "USE1-Llama3.1-70B-Instruct-input-tokens", 0.72, 1000, "1K tokens"
        ),
        BillingRow(
            "2026-12-01", "USE1-Llama3.1-70B-Instruct-output-tokens", 0.72, 1000, "1K tokens"
        ),
    )
    data = BillingData(0.0, "2026-12-01", "2026-12-02", rows)
    learned = learned_prices(summarize(data, UsageTypeMap(SEEN)))
    assert learned[LLAMA].price.input_per_mtok == pytest.approx(0.72)


def test_configured_beats_built_in_beats_learned_beats_unpriced() -> None:
    learned = {
        LLAMA: (Price(0.72, 0.72), "2026-12-02"),
        HAIKU3: (Price(9.0, 9.0), "2026-12-02"),  # the built-in table has Claude 3 Haiku
        "amazon.nova-pro-v1:0": (Price(7.0, 7.0), "2026-12-02"),
    }
    book = PriceBook({"amazon.nova-pro-v1:0": Price(0.5, 2.0)}, {"us.": 1.1}).with_learned(learned)
    llama = book.price_for(LLAMA)
    assert llama is not None and llama.origin == "learned" and llama.as_of == "2026-12-02"
    assert llama.input_per_mtok == pytest.approx(0.72)
    haiku = book.price_for(HAIKU3)
    assert haiku is not None and haiku.origin == "built-in" and haiku.input_per_mtok == 0.25
    nova = book.price_for("amazon.nova-pro-v1:0")
    assert nova is not None and nova.origin == "config" and nova.input_per_mtok == 0.5
    # A profile id of a learned model: its base model's learned price, times the multiplier.
    profiled = book.price_for("us." + LLAMA)
    assert profiled is not None and profiled.origin == "learned"
    assert profiled.input_per_mtok == pytest.approx(0.72 * 1.1)
    assert book.price_for("mistral.mistral-large-2407-v1:0") is None
    tally = Tally(requests=1, input_tokens=1_000_000, output_tokens=500_000)
    assert book.cost_usd(LLAMA, tally) == pytest.approx(0.72 + 0.36)


def test_learned_prices_from_the_bill_price_a_model_the_table_lacks() -> None:
    summary = summarize(bill(*ROWS), UsageTypeMap(SEEN))
    book = PriceBook().with_learned(learned_for_book(learned_prices(summary)))
    assert PriceBook().price_for(LLAMA) is None
    cost = book.cost_usd(LLAMA, Tally(requests=2, input_tokens=2000, output_tokens=1000))
    assert cost == pytest.approx((2000 * 0.72 + 1000 * 0.72) / 1e6)


# -- budgets on the bill -----------------------------------------------------------------------


def local_usage(per_hour: dict[str, Tally]) -> object:
    """A usage function with a constant hourly tally per model from 2026-12-03 00:00 UTC."""
    origin = utc("2026-12-03T00:00:00")

    def usage(model_id: str, start: float, end: float) -> Tally:
        tally = per_hour.get(model_id)
        if tally is None:
            return Tally()
        hours = max(0.0, end - max(start, origin)) / 3600
        return Tally(
            requests=round(tally.requests * hours),
            input_tokens=round(tally.input_tokens * hours),
            output_tokens=round(tally.output_tokens * hours),
        )

    return usage


def test_a_billing_budget_is_the_bill_through_its_last_complete_day_plus_the_estimate() -> None:
    now = utc("2026-12-03T10:00:00")
    rows = [*ROWS, ("2026-12-03", "USE1-Claude4.5Sonnet-input-tokens", 5.0, 1_000_000)]
    summary = summarize(bill(*rows), UsageTypeMap(SEEN))
    billed = billed_spend(summary, now)
    # Today (the 3rd) is still being billed: the budget counts through the 2nd.
    assert billed.through == "2026-12-02"
    spec = BudgetSpec("monthly", "month", limit_usd=100.0, source="billing")
    # 1M input tokens of Claude 3 Haiku an hour: $0.25 an hour, ten hours today.
    usage = local_usage({HAIKU3: Tally(requests=10, input_tokens=1_000_000)})
    [status] = evaluate_all(
        [spec],
        now,
        PriceBook(),
        tz="UTC",
        local_models=[HAIKU3],
        local_usage=usage,  # type: ignore[arg-type]
        billed=billed,
    )
    billed_through_2nd = sum(row[2] for row in ROWS if row[0] <= "2026-12-02")
    assert status.source == "billing" and status.estimate_source == "local"
    assert status.billed_usd == pytest.approx(billed_through_2nd)
    assert status.estimated_usd == pytest.approx(2.5)
    assert status.used_usd == pytest.approx(billed_through_2nd + 2.5)
    # The forecast runs at the estimate's last-hour rate: $0.25 an hour to the month's end.
    hours_left = (utc("2027-01-01T00:00:00") - now) / 3600
    assert status.projected_fraction == pytest.approx(
        (billed_through_2nd + 2.5 + 0.25 * hours_left) / 100
    )
    [entry] = budget_report([status])
    assert entry["source"] == "billing" and entry["billed_through"] == "2026-12-02"
    assert entry["estimated_usd"] == pytest.approx(2.5)


def test_a_billing_budget_for_some_models_leaves_out_other_and_unmatched_lines() -> None:
    now = utc("2026-12-03T10:00:00")
    billed = billed_spend(summarize(bill(*ROWS), UsageTypeMap(SEEN)), now)
    spec = BudgetSpec("llama", "month", limit_usd=2.0, models=("meta.*",), source="billing")
    [status] = evaluate_all(
        [spec],
        now,
        PriceBook(),
        tz="UTC",
        local_models=[],
        local_usage=lambda m, s, e: Tally(),
        billed=billed,
    )
    assert status.billed_usd == pytest.approx(0.54 + 0.324 + 0.216)
    assert status.fraction == pytest.approx((0.54 + 0.324 + 0.216) / 2.0)
    assert status.billed_tokens == 750_000 + 450_000 + 300_000


def test_a_billing_budget_is_left_out_while_the_bill_is_unknown() -> None:
    spec = BudgetSpec("monthly", "month", limit_usd=100.0, source="billing")
    statuses = evaluate_all(
        [spec],
        utc("2026-12-03T10:00:00"),
        PriceBook(),
        tz="UTC",
        local_models=[HAIKU3],
        local_usage=lambda m, s, e: Tally(input_tokens=1000),
    )
    assert statuses == []


# -- configuration -----------------------------------------------------------------------------


def test_billing_keys_are_read_validated_and_shown(tmp_path: Path) -> None:
    from monitor.config import ConfigError, effective_settings, load_config

    path = tmp_path / "config.toml"
    path.write_text(
        "[sources]\nbilling = true\nbilling_refresh_h = 12\n"
        '[billing.usage_types]\n"USE1-Nova-input-tokens" = "amazon.nova-pro-v1:0"\n'
        '"USE1-Mine-*" = "my.model"\n'
        '[[budgets]]\nname = "bill"\nperiod = "month"\nlimit_usd = 50.0\nsource = "billing"\n'
    )
    config = load_config(path, env={})
    assert config.sources.billing and config.sources.billing_refresh_h == 12
    assert config.billing_usage_types == {
        "USE1-Nova-input-tokens": "amazon.nova-pro-v1:0",
        "USE1-Mine-*": "my.model",
    }
    assert config.budgets[0].source == "billing"
    shown = {name: (value, str(origin)) for name, value, origin in effective_settings(config)}
    assert shown["sources.billing_refresh_h"][0] == 12
    assert shown["billing.usage_types.USE1-Nova-input-tokens"] == (
        "amazon.nova-pro-v1:0",
        f"file ({path}:5)",
    )
    # Off by default; the flag turns it on.
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert not load_config(empty, env={}).sources.billing
    flagged = load_config(empty, env={}, cli_overrides={"sources.billing": True})
    assert flagged.sources.billing and flagged.provenance["sources.billing"].kind == "flag"
    path.write_text("[sources]\nbilling_refresh_h = 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "line 2" in str(err.value) and "sources.billing_refresh_h" in str(err.value)
    assert "at least 1" in str(err.value)
    path.write_text('[billing.usage_types]\n"USE1-X-input-tokens" = 3\n')
    with pytest.raises(ConfigError, match="the model id this usage type bills"):
        load_config(path, env={})
    path.write_text("[billing]\nusage_type = {}\n")
    assert any("billing.usage_type" in w for w in load_config(path, env={}).warnings)


def test_the_example_configuration_documents_the_billing_keys() -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "config.example.toml").read_text()
    for key in ("billing", "billing_refresh_h", "[billing.usage_types]"):
        assert re.search(rf"^#?\s*{re.escape(key)}", text, re.M), key
    assert "ce:GetCostAndUsage" in text and "$0.01" in text


def test_a_usage_type_of_an_unseen_model_does_not_take_its_neighbours_id() -> None:
    # Only Claude 3.5 Haiku is seen. Claude 3 Haiku's words fit its id too, but the bill's
    # 3.5 Haiku usage type fits it better and keeps it (the matcher works both ways).
    seen = ["anthropic.claude-3-5-haiku-20241022-v1:0"]
    rows = [
        ("2026-12-01", "USE1-Claude3Haiku-input-tokens", 0.25, 1_000_000),
        ("2026-12-01", "USE1-Claude3.5Haiku-input-tokens", 0.8, 1_000_000),
    ]
    summary = summarize(bill(*rows), UsageTypeMap(seen))
    assert summary.by_model == {seen[0]: pytest.approx(0.8), UNMATCHED: pytest.approx(0.25)}

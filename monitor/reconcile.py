"""The bill beside the estimates: what Cost Explorer billed for some days, and what the usage log
and CloudWatch, priced by the price book, estimate for the same days. Pure: no I/O.

The three are never added together. The log's estimate covers this host only; CloudWatch's covers
the account and region; the bill covers the whole account in every region. The differences are
shown so that a person can see how far each estimate is from the bill, not to correct one with
another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from monitor.billing import (
    UNMATCHED,
    BillingData,
    BillingSummary,
    LearnedPrice,
    UsageTypeMap,
    learned_prices,
    summarize,
)
from monitor.budgets import BilledSpend
from monitor.pricing import Price, PriceBook
from monitor.store import Tally

DAY_S = 86400.0


def day_start(iso_day: str) -> float:
    """Epoch seconds of 00:00 UTC of an ISO date."""
    return datetime.combine(date.fromisoformat(iso_day), datetime.min.time(), UTC).timestamp()


def read_bill(
    data: BillingData, model_ids: Iterable[str], configured: Mapping[str, str]
) -> tuple[BillingSummary, dict[str, LearnedPrice]]:
    """The bill as models (configured usage types first, then the shared matcher over
    ``model_ids``) and the prices it teaches."""
    summary = summarize(data, UsageTypeMap(model_ids, configured))
    return summary, learned_prices(summary)


def learned_for_book(learned: Mapping[str, LearnedPrice]) -> dict[str, tuple[Price, str]]:
    return {model_id: (entry.price, entry.as_of) for model_id, entry in learned.items()}


def window(summary: BillingSummary) -> tuple[float, float] | None:
    """``[start, end)`` in epoch seconds of the days the bill has: its first day to the end of
    the last day with data. None when it has none."""
    if summary.through is None:
        return None
    return day_start(summary.start), day_start(summary.through) + DAY_S


def billed_spend(summary: BillingSummary, now: float) -> BilledSpend:
    """The bill for budgets: per day and model, counted through its last complete day (today is
    still being billed, so at most through yesterday, UTC)."""
    days = {day_start(day): dict(models) for day, models in summary.daily.items() if _is_date(day)}
    today = datetime.fromtimestamp(now, UTC).date()
    through_end: float | None = None
    through: str | None = None
    if summary.through is not None:
        last = min(date.fromisoformat(summary.through), today - timedelta(days=1))
        if last >= date.fromisoformat(summary.start):
            through = last.isoformat()
            through_end = day_start(through) + DAY_S
    return BilledSpend(
        days=days, start=day_start(summary.start), through_end=through_end, through=through
    )


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Estimate:
    """One source's priced estimate for the bill's days, per model."""

    by_model: dict[str, float | None]  # None: unpriced

    @property
    def usd(self) -> float:
        return float(sum(cost for cost in self.by_model.values() if cost is not None))

    @property
    def unpriced_models(self) -> list[str]:
        return sorted(model for model, cost in self.by_model.items() if cost is None)

    def as_report(self, billed_usd: float) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "difference_usd": round(billed_usd - self.usd, 6),
            "unpriced_models": self.unpriced_models,
            "by_model": {
                model: None if cost is None else round(cost, 6)
                for model, cost in sorted(self.by_model.items())
            },
        }


def estimate(tallies: Iterable[tuple[str, Tally]], price_book: PriceBook) -> Estimate:
    """Price each model's tally; models with no tokens are left out."""
    by_model: dict[str, float | None] = {}
    for model_id, tally in tallies:
        if tally.total_tokens or tally.requests:
            by_model[model_id] = price_book.cost_usd(model_id, tally)
    return Estimate(by_model)


def cloudwatch_tally(obj: Mapping[str, Any]) -> Tally:
    """A Tally from a report's per-model ``cloudwatch`` object (token counts only)."""

    def count(name: str) -> int:
        value = obj.get(name)
        return int(value) if isinstance(value, int | float) else 0

    return Tally(
        requests=count("requests"),
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cache_read_input_tokens=count("cache_read_input_tokens"),
        cache_write_input_tokens=count("cache_write_input_tokens"),
    )


def billing_report(
    summary: BillingSummary,
    learned: Mapping[str, LearnedPrice],
    *,
    local: Estimate | None,
    cloudwatch: Estimate | None,
    cache_age_s: float | None,
    cost_per_day_usd: float,
) -> dict[str, Any]:
    """The report's ``billing`` object: the issue's fields first, then the estimates for the same
    days (never added to the bill) and the prices learned from it."""
    report = summary.as_report()
    billed = summary.month_to_date_usd
    report["estimated_days"] = list(summary.estimated_days)
    report["cache_age_s"] = None if cache_age_s is None else round(cache_age_s, 1)
    report["refresh_cost_per_day_usd"] = round(cost_per_day_usd, 4)
    report["estimates"] = {
        "days": None if summary.through is None else [summary.start, summary.through],
        "local": None if local is None else local.as_report(billed),
        "cloudwatch": None if cloudwatch is None else cloudwatch.as_report(billed),
    }
    report["learned_prices"] = {
        model_id: {
            "input_per_mtok": round(entry.price.input_per_mtok, 6),
            "output_per_mtok": round(entry.price.output_per_mtok, 6),
            "cache_read_per_mtok": _maybe(entry.price.cache_read_per_mtok),
            "cache_write_per_mtok": _maybe(entry.price.cache_write_per_mtok),
            "as_of": entry.as_of,
        }
        for model_id, entry in sorted(learned.items())
    }
    return report


def _maybe(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def unmatched_usd(summary: BillingSummary) -> float:
    return summary.by_model.get(UNMATCHED, 0.0)

"""The billing panel and the billing part of the header: the month-to-date bill beside the
estimates for the same days. Styles live in bedrock_top.tcss (``#billing``)."""

from __future__ import annotations

from datetime import date

from rich.text import Text

from monitor.formatting import format_usd, printable, short_model_id
from monitor.ui.hooks import BillingPanelData, BillingState
from monitor.ui.overview_model import format_age


def billing_header(state: BillingState, text: Text) -> None:
    """Append `` · BILL ok · cache 2h old · $0.04/day`` to the header's account line."""
    text.append(" · BILL ", style="bold")
    text.append(state.state)
    if state.cache_age_s is not None:
        text.append(f" · bill {format_age(state.cache_age_s)} old")
    text.append(f" · refresh {format_usd(state.cost_per_day_usd)}/day")
    if state.message:
        text.append(f" · {printable(state.message)}", style="bold")


def _estimate(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else format_usd(value)


def _days(first: str, through: str | None) -> str:
    """``Dec 1-2``: the days the bill covers (UTC)."""
    if through is None:
        return "no usage yet"
    start, end = date.fromisoformat(first), date.fromisoformat(through)
    if start == end:
        return f"{start:%b} {start.day}"
    if (start.year, start.month) == (end.year, end.month):
        return f"{start:%b} {start.day}-{end.day}"
    return f"{start:%b} {start.day} - {end:%b} {end.day}"


def billing_text(panel: BillingPanelData | None, state: BillingState, width: int) -> Text:
    """A few lines: the bill and the estimates for its days, then the top models billed."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" BILLED ", style="bold reverse")
    if panel is None:
        waiting = "no bill yet" if state.state in ("ok", "starting") else state.state
        text.append(f" Cost Explorer: {waiting}", style="dim")
        if state.message:
            text.append(f" · {printable(state.message)}", style="bold")
        return text
    text.append(f" month to date {format_usd(panel.month_to_date_usd)}", style="bold")
    text.append(f" · {_days(panel.first_day, panel.through)}")
    if panel.estimated:
        text.append(" (Cost Explorer: still estimated)", style="dim")
    if panel.learned_models:
        text.append(f" · {panel.learned_models} model(s) priced from the bill", style="dim")
    text.append("\n  estimates for the same days: ")
    text.append(f"local {_estimate(panel.local_usd)}")
    text.append(" (this host)", style="dim")
    text.append(f" · acct {_estimate(panel.cloudwatch_usd)}")
    if panel.cloudwatch_usd is not None:
        text.append(" (CloudWatch)", style="dim")
        text.append(f" · bill - acct {format_usd(panel.month_to_date_usd - panel.cloudwatch_usd)}")
    name_width = max(20, min(48, width // 3))
    for line in panel.lines:
        text.append("\n")
        if line.name == "unmatched":
            label = f"unmatched ({panel.unmatched_usage_types} usage types)"
            text.append(f"  {label:<{name_width}}", style="dim")
            text.append(f" billed {format_usd(line.billed_usd)}")
            continue
        text.append(f"  {short_model_id(line.name, name_width):<{name_width}}")
        text.append(f" billed {format_usd(line.billed_usd)}")
        text.append(f" · local {_estimate(line.local_usd, '-')}", style="dim")
        text.append(f" · acct {_estimate(line.cloudwatch_usd, '-')}", style="dim")
    return text

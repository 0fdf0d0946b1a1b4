"""The overview's per-app panel: account-wide rates per app from CloudWatch's ``BedrockTop``
namespace (the wrapper's EMF blocks, every host that ships them), one line per app.

These numbers come from CloudWatch, per minute and minutes late; they are shown apart from the
local log's rows and from ``AWS/Bedrock``'s per-model numbers, never added to either.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from monitor.formatting import format_count, format_ms, format_usd
from monitor.ui.hooks import AppMetricsView, AppRate
from monitor.ui.widgets import TextPanel

MAX_APP_ROWS = 6


def _per_min(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.1f}" if value < 10 else format_count(round(value))


def apps_text(rates: Sequence[AppRate], view: AppMetricsView, width: int) -> Text:
    state = view.apps_state()
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" APPS acct ", style="bold")
    text.append("BedrockTop per minute, last 5 min of data (wrapper EMF, all hosts)")
    if state.cost_per_hour_usd is not None:
        text.append(f" · {format_usd(state.cost_per_hour_usd)}/h")
    if state.state != "ok":
        text.append(f" · {state.state}", style="bold")
        if state.message:
            text.append(f": {state.message}", style="bold")
    name_width = max(8, min(24, max((len(rate.app) for rate in rates), default=8)))
    for rate in rates[:MAX_APP_ROWS]:
        text.append("\n ")
        text.append(rate.app[:name_width].ljust(name_width), style="bold")
        text.append(f" {_per_min(rate.requests_per_min):>6} req")
        text.append(f" {_per_min(rate.input_tokens_per_min):>7} in")
        text.append(f" {_per_min(rate.output_tokens_per_min):>7} out")
        text.append(f"  err {rate.errors}", style="bold" if rate.errors else "")
        text.append(f" thr {rate.throttles}", style="bold" if rate.throttles else "")
        text.append(f"  avg {format_ms(rate.latency_avg_ms)}")
        text.append(f"  {rate.models} model{'s' if rate.models != 1 else ''}", style="dim")
    if len(rates) > MAX_APP_ROWS:
        text.append(f"\n +{len(rates) - MAX_APP_ROWS} more apps (see --once --json)", style="dim")
    return text


class AppsPanel(TextPanel):
    """Hidden until the account has ``BedrockTop`` metrics."""

    def on_mount(self) -> None:
        self.display = False

    def update_from(self, view: AppMetricsView, width: int) -> None:
        rates = view.app_rates()
        self.display = bool(rates)
        if rates:
            self.show(apps_text(rates, view, width))

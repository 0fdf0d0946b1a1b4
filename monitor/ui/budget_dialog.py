"""A small dialog to change a budget's limit and save it to the configuration file."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from monitor.formatting import format_count, format_usd, printable
from monitor.ui.hooks import BudgetLimit, BudgetView


def _limit_text(limit: BudgetLimit) -> str:
    return format_usd(limit.limit) if limit.unit == "usd" else f"{format_count(limit.limit)} tok"


def parse_limit(text: str, unit: str) -> float:
    """``12.5``, ``$12.50``, ``2_000_000``, ``2M``, ``500k`` -> a number. Raises ValueError."""
    cleaned = text.strip().replace(",", "").replace("_", "").lstrip("$")
    scale = 1.0
    if cleaned[-1:].lower() in ("k", "m", "g"):
        scale = {"k": 1e3, "m": 1e6, "g": 1e9}[cleaned[-1].lower()]
        cleaned = cleaned[:-1]
    value = float(cleaned) * scale
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("the limit must be a number greater than 0")
    if unit == "tokens" and value != int(value):
        raise ValueError("a token limit is a whole number")
    return value


class BudgetDialog(ModalScreen[str | None]):
    """Pick a budget, type its new limit, enter to save (esc: cancel). Dismisses with the path
    of the file written, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", id="budget-cancel"),
    ]

    def __init__(self, budgets: BudgetView) -> None:
        super().__init__()
        self.budgets = budgets
        self.limits = list(budgets.limits())

    def compose(self) -> ComposeResult:
        with Vertical(id="budget-box"):
            yield Static(
                "Change a budget's limit (saved to the configuration file)", id="budget-title"
            )
            yield OptionList(
                *(
                    # Text, not str: a str prompt is read as markup.
                    Option(
                        Text(printable(f"{limit.name}  ({limit.unit}, now {_limit_text(limit)})")),
                        id=str(i),
                    )
                    for i, limit in enumerate(self.limits)
                ),
                id="budget-list",
            )
            field = Input(placeholder="new limit, e.g. 25 or 2M", id="budget-value")
            field.cursor_blink = False
            yield field
            yield Static("", id="budget-message")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.limits:
            options.highlighted = 0
            self._prefill(0)
        else:
            self.query_one("#budget-message", Static).update("no budgets configured")
        options.focus()

    def _prefill(self, index: int) -> None:
        limit = self.limits[index]
        value = limit.limit if limit.unit == "usd" else int(limit.limit)
        self.query_one(Input).value = f"{value:g}" if limit.unit == "usd" else str(value)

    def on_option_list_option_highlighted(self, message: OptionList.OptionHighlighted) -> None:
        if message.option_index is not None and self.limits:
            self._prefill(message.option_index)

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        index = self.query_one(OptionList).highlighted
        if index is None or not self.limits:
            return
        limit = self.limits[index]
        status = self.query_one("#budget-message", Static)
        try:
            value = parse_limit(message.value, limit.unit)
            written = self.budgets.save_limit(limit.name, value)
        except (ValueError, OSError, IndexError) as err:
            status.update(Text(printable(f"not saved: {err}")))
            return
        self.dismiss(written)

    def action_cancel(self) -> None:
        self.dismiss(None)

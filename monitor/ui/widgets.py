"""Small widgets of the live screen. Styles are in ``bedrock_top.tcss``.

The model table draws its own lines (Textual's line API) instead of using a DataTable: a
DataTable repaints every visible line on any change, while this table repaints only the lines
whose text changed, which is what keeps a 1 s refresh of twenty busy models cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from monitor.formatting import printable, short_model_id
from monitor.ui.overview_model import Cell, Column, ModelRow, fit_columns

CHART_BARS = " ▁▂▃▄▅▆▇█"


_EMPTY_CELL = Cell("")


def printable_text(text: Text) -> Text:
    """A Rich ``Text`` with every line passed through :func:`printable` (styles kept): the
    panels' boundary for untrusted text. Line breaks stay line breaks; a break inside an
    untrusted value must be escaped where the value is put into a multi-line panel."""
    plain = text.plain
    if printable(plain, keep_newlines=True) == plain:
        return text
    out = text.blank_copy()
    cuts = sorted({0, len(plain)} | {o for span in text.spans for o in (span.start, span.end)})
    # Between two cuts every span covers the whole piece, so each piece keeps its styles.
    for piece in text.divide(cuts[1:-1]):
        safe = printable(piece.plain, keep_newlines=True)
        out.append_text(Text(safe, spans=[Span(0, len(safe), s.style) for s in piece.spans]))
    return out


def _fit(text: str, width: int, align: str) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.ljust(width) if align == "left" else text.rjust(width)


class ModelTable(Widget, can_focus=True):
    """One line per model, a header line, a cursor row; columns drop when narrow."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "model-table--header",
        "model-table--cursor",
        "model-table--sorted",
        "model-table--dim",
        "model-table--warn",
        "model-table--error",
        "model-table--spark",
        "model-table--account",
        "model-table--gauge-ok",
        "model-table--gauge-warn",
        "model-table--gauge-error",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "up", show=False),
        Binding("down,j", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "cursor_to(0)", "first", show=False),
        Binding("end", "cursor_to(-1)", "last", show=False),
    ]

    class Opened(Message):
        """A model was chosen (enter or a second click on its row)."""

        def __init__(self, model_id: str, endpoint: str = "runtime") -> None:
            super().__init__()
            self.model_id = model_id
            self.endpoint = endpoint

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._all_columns = list(columns)
        self._columns: list[Column] = []
        self._rows: list[ModelRow] = []
        self._index: dict[str, int] = {}
        self._cursor = 0
        self._top = 0
        self._sort_key = "req"
        self._reverse = False
        self._strips: dict[int, tuple[object, Strip]] = {}
        self._base_style: Style | None = None
        self._layout_width = -1
        self._account_only = False
        self.empty_text = "waiting for records…"

    # -- data ---------------------------------------------------------------------------------
    @property
    def rows(self) -> list[ModelRow]:
        return self._rows

    @property
    def columns(self) -> list[Column]:
        """The columns on screen now."""
        return self._columns

    @property
    def cursor_model(self) -> str | None:
        if not self._rows:
            return None
        return self._rows[min(self._cursor, len(self._rows) - 1)].model_id

    def set_key_label(self, label: str) -> None:
        """Name the first column after what the rows are (model, app, caller, ...)."""
        first = self._all_columns[0]
        if first.label == label:
            return
        self._all_columns[0] = replace(first, label=label)
        self._layout_width = -1
        self._relayout()

    def set_account_only(self, on: bool) -> None:
        """Rows of a grouping only CloudWatch makes (region, account) have account-wide figures
        alone: the local columns are left out, so that those fit a narrow terminal."""
        if on == self._account_only:
            return
        self._account_only = on
        self._layout_width = -1
        self._relayout()

    @property
    def cursor_row(self) -> ModelRow | None:
        return self._rows[min(self._cursor, len(self._rows) - 1)] if self._rows else None

    def set_sort(self, key: str, reverse: bool) -> None:
        self._sort_key, self._reverse = key, reverse
        self._strips.clear()
        self.refresh()

    def set_rows(self, rows: list[ModelRow]) -> None:
        """Show ``rows`` (already sorted and filtered). Only lines whose text changed are
        repainted; the cursor stays on the model it was on."""
        current = self.cursor_row
        keep = None if current is None else current.key
        old = self._rows
        self._rows = rows
        self._index = {row.key: index for index, row in enumerate(rows)}
        if keep is not None and keep in self._index:
            self._cursor = self._index[keep]
        else:
            self._cursor = min(self._cursor, max(0, len(rows) - 1))
        top_before = self._top
        self._scroll_to_cursor()
        if self._top != top_before or len(old) != len(rows) or not old:
            self.refresh()
            return
        for index, row in enumerate(rows):
            if old[index] != row:
                self.refresh(Region(0, 1 + index - self._top, self.size.width, 1))

    def move_cursor_to_model(self, model_id: str) -> None:
        if model_id in self._index:
            self._set_cursor(self._index[model_id])

    # -- cursor -------------------------------------------------------------------------------
    def _body_height(self) -> int:
        return max(1, self.size.height - 1)

    def _scroll_to_cursor(self) -> None:
        height = self._body_height()
        if self._cursor < self._top:
            self._top = self._cursor
        elif self._cursor >= self._top + height:
            self._top = self._cursor - height + 1
        self._top = max(0, min(self._top, max(0, len(self._rows) - height)))

    def _set_cursor(self, index: int) -> None:
        if not self._rows:
            return
        before, top_before = self._cursor, self._top
        self._cursor = max(0, min(index, len(self._rows) - 1))
        self._scroll_to_cursor()
        if self._top != top_before:
            self.refresh()
        elif before != self._cursor:
            for row in (before, self._cursor):
                self.refresh(Region(0, 1 + row - self._top, self.size.width, 1))

    def action_cursor(self, delta: int) -> None:
        self._set_cursor(self._cursor + delta)

    def action_page(self, delta: int) -> None:
        self._set_cursor(self._cursor + delta * self._body_height())

    def action_cursor_to(self, index: int) -> None:
        self._set_cursor(index if index >= 0 else len(self._rows) - 1)

    def on_click(self, event: events.Click) -> None:
        index = self._top + event.y - 1
        if event.y < 1 or index >= len(self._rows):
            return
        if index == self._cursor or event.chain > 1:
            row = self._rows[index]
            self.post_message(self.Opened(row.model_id, row.endpoint))
        self._set_cursor(index)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._set_cursor(self._cursor + 3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._set_cursor(self._cursor - 3)

    # -- drawing ------------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        self._relayout()
        self._scroll_to_cursor()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._base_style = None

    @property
    def base_style(self) -> Style:
        """``rich_style``, which walks every ancestor's styles, once per style change rather
        than once per line."""
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def _relayout(self) -> None:
        width = self.size.width
        if width != self._layout_width:
            self._layout_width = width
            columns = [
                column
                for column in self._all_columns
                if not self._account_only or column.key == "model" or column.account
            ]
            self._columns = fit_columns(columns, max(width - 1, 10))
            self._strips.clear()
            self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style
        if y == 0:
            return self._header_strip(width, base)
        index = self._top + y - 1
        if index >= len(self._rows):
            if not self._rows and y == 1:
                dim = self.get_component_rich_style("model-table--dim")
                text = printable(self.empty_text)
                return Strip([Segment(" " + _fit(text, width - 1, "left"), base + dim)])
            return Strip.blank(width, base)
        row = self._rows[index]
        selected = index == self._cursor and self.has_focus
        key = (row, selected, width)
        cached = self._strips.get(index)
        if cached is not None and cached[0] == key:
            return cached[1]
        strip = self._row_strip(row, selected, width, base)
        self._strips[index] = (key, strip)
        return strip

    def _header_strip(self, width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("model-table--header")
        sorted_style = style + self.get_component_rich_style("model-table--sorted")
        segments = [Segment(" ", style)]
        for column in self._columns:
            label = column.label
            if column.key == self._sort_key:
                label += "▲" if self._reverse else "▼"
            segments.append(
                Segment(
                    _fit(label, column.width, column.align) + " ",
                    sorted_style if column.key == self._sort_key else style,
                )
            )
        return Strip(segments).adjust_cell_length(width, style)

    def _row_strip(self, row: ModelRow, selected: bool, width: int, base: Style) -> Strip:
        line_style = base
        if selected:
            line_style = base + self.get_component_rich_style("model-table--cursor")
        # Neighbouring cells in the same style share one segment (and the gaps between cells
        # take the style of the text before them: styles here only colour text, so a space
        # looks the same): a row is a handful of segments instead of two per column, and every
        # later step of drawing it works per segment.
        segments: list[Segment] = []
        pieces = [" "]
        current = line_style
        for column in self._columns:
            cell = row.cells.get(column.key, _EMPTY_CELL)
            text = printable(cell.text)
            if column.key == "model" and row.endpoint != "runtime":
                # The endpoint mark survives a narrow column: the id is shortened, not the mark.
                mark = f" [{row.endpoint}]"
                text = short_model_id(text, column.width - len(mark)) + mark
            elif column.key == "model":
                text = short_model_id(text, column.width)
            style = line_style
            if cell.style and not selected:
                style = line_style + self.get_component_rich_style(f"model-table--{cell.style}")
            if style != current:
                segments.append(Segment("".join(pieces), current))
                pieces, current = [], style
            pieces.append(_fit(text, column.width, column.align))
            pieces.append(" ")
        segments.append(Segment("".join(pieces), current))
        return Strip(segments).adjust_cell_length(width, line_style)

    def on_focus(self) -> None:
        self._strips.clear()
        self._base_style = None
        self.refresh()

    def on_blur(self) -> None:
        self._strips.clear()
        self._base_style = None
        self.refresh()


class TextPanel(Widget):
    """A panel that shows a Rich ``Text`` and repaints only when the text changes."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = Text()

    def show(self, text: Text) -> None:
        text = printable_text(text)
        if text != self._text:
            lines_changed = text.plain.count("\n") != self._text.plain.count("\n")
            self._text = text
            self.refresh(layout=lines_changed)

    @property
    def text(self) -> Text:
        return self._text

    def render(self) -> Text:
        return self._text


def resample(values: Sequence[float | None], width: int, how: str = "mean") -> list[float | None]:
    """Fit a series to ``width`` points: buckets of neighbouring values are summed, averaged or
    maxed; a short series is left as it is."""
    if width <= 0 or not values:
        return list(values)
    if len(values) <= width:
        # Stretch a short series (a few minutes) so that it spans the chart.
        repeat = width // len(values)
        return [value for value in values for _ in range(repeat)]
    out: list[float | None] = []
    step = len(values) / width
    for index in range(width):
        bucket = [
            value
            for value in values[
                int(index * step) : max(int((index + 1) * step), int(index * step) + 1)
            ]
            if value is not None
        ]
        if not bucket:
            out.append(None)
        elif how == "max":
            out.append(max(bucket))
        else:
            out.append(sum(bucket) / len(bucket))
    return out


def chart_lines(values: Sequence[float | None], width: int, height: int) -> list[str]:
    """A bar chart ``height`` rows tall with eighth-block resolution, scaled from 0 to the
    largest value. Returns the rows top first, each ``width`` cells (right-aligned data)."""
    points = resample(values, width)
    top = max((value for value in points if value is not None), default=0.0) or 1.0
    rows = []
    for level in range(height, 0, -1):
        cells = []
        for value in points:
            if value is None or value <= 0:
                cells.append(" ")
                continue
            eighths = value / top * height * 8
            filled = eighths - (level - 1) * 8
            cells.append(CHART_BARS[max(0, min(8, round(filled)))] if filled > 0 else " ")
        rows.append("".join(cells).rjust(width))
    return rows


class Chart(Widget):
    """A titled bar chart of one series; repaints only when its data or size change."""

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="chart")
        self.title = title
        self._values: list[float | None] = []
        self._summary = ""

    def show(self, values: list[float | None], summary: str) -> None:
        if values != self._values or summary != self._summary:
            self._values, self._summary = values, summary
            self.refresh()

    @property
    def summary(self) -> str:
        return self._summary

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        text = Text(no_wrap=True, overflow="crop")
        text.append(self.title, style="bold")
        text.append(f"  {self._summary}")
        for line in chart_lines(self._values, width, max(1, height - 1)):
            text.append("\n")
            text.append(line, style=self.get_component_rich_style("chart--bars"))
        return text

    COMPONENT_CLASSES: ClassVar[set[str]] = {"chart--bars"}

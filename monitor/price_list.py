"""``bedrock-top prices``: the price in force for every model seen, and where it came from.

Sources, in the order they win: the configuration (``[pricing]``), the built-in table, prices
learned from the bill (with ``--billing`` or ``sources.billing``), else unpriced. Models seen are
those in the usage log (the last 24 hours and every budget period; the month with billing on), in
the configuration's ``models``, and in the bill. CloudWatch is not asked (it would cost money).
Never imports Textual.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from monitor.billing import UNMATCHED
from monitor.formatting import short_model_id
from monitor.pricing import PRICES_AS_OF, PriceBook, ResolvedPrice

ORIGIN_LABELS = {
    "config": "configuration",
    "learned": "learned from billing",
    "built-in": "built-in",
}


def price_rows(model_ids: list[str], book: PriceBook) -> list[dict[str, Any]]:
    """One row per model: the price in force (or none) and its origin."""
    rows = []
    for model_id in sorted(dict.fromkeys(model_ids)):
        price = book.price_for(model_id)
        rows.append(_row(model_id, price))
    return rows


def _row(model_id: str, price: ResolvedPrice | None) -> dict[str, Any]:
    if price is None:
        return {
            "model_id": model_id,
            "origin": "unpriced",
            "source": "unpriced",
            "matched_key": None,
            "as_of": None,
            "input_per_mtok": None,
            "output_per_mtok": None,
            "cache_read_per_mtok": None,
            "cache_write_per_mtok": None,
            "multiplier": None,
        }
    as_of = price.as_of if price.origin == "learned" else PRICES_AS_OF
    if price.origin == "config":
        as_of = None
    label = ORIGIN_LABELS[price.origin]
    if as_of:
        label += f" {as_of}"
    return {
        "model_id": model_id,
        "origin": price.origin,
        "source": label,
        "matched_key": price.matched_key,
        "as_of": as_of,
        "input_per_mtok": round(price.input_per_mtok, 6),
        "output_per_mtok": round(price.output_per_mtok, 6),
        "cache_read_per_mtok": _maybe(price.cache_read_per_mtok),
        "cache_write_per_mtok": _maybe(price.cache_write_per_mtok),
        "multiplier": price.multiplier,
    }


def _maybe(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def render_prices(rows: list[dict[str, Any]], width: int = 120) -> str:
    def money(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    model_width = max(24, width - 4 * 9 - 34)
    header = f"{'MODEL':<{model_width}}" + "".join(
        f"{name:>9}" for name in ("IN/M", "OUT/M", "CACHE R", "CACHE W")
    )
    lines = [f"# USD per million tokens; built-in prices dated {PRICES_AS_OF}", header + "  SOURCE"]
    for row in rows:
        cells = (
            row["input_per_mtok"],
            row["output_per_mtok"],
            row["cache_read_per_mtok"],
            row["cache_write_per_mtok"],
        )
        source = row["source"]
        if row["origin"] == "config":
            source += f" ({row['matched_key']})"
        if row["multiplier"] not in (None, 1.0):
            source += f" x{row['multiplier']:g}"
        name = short_model_id(row["model_id"], model_width - 1)
        lines.append(
            f"{name:<{model_width}}" + "".join(f"{money(c):>9}" for c in cells) + f"  {source}"
        )
    if not rows:
        lines.append("(no models seen: no usage log records, no configured models, no bill)")
    return "\n".join(lines) + "\n"


def run_prices(args: argparse.Namespace) -> int:
    """``bedrock-top prices [--json] [--billing] [--log PATH] [--config FILE]``."""
    from monitor.session import SessionError, open_session

    now = time.time()
    try:
        session = open_session(args, now=now)
    except SessionError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    try:
        session.feed.catch_up()
        state = session.billing_once()
        seen = [*session.feed.store.model_ids(), *session.config.models]
        if session.billing_summary is not None:
            seen += [m for m in session.billing_summary.by_model if m != UNMATCHED]
        rows = price_rows(seen, session.price_book)
    finally:
        session.close()
    if state is not None and state.get("state") != "ok":
        print(f"bedrock-top: billing: {state.get('message')}", file=sys.stderr)
    for notice in (state or {}).get("notices") or []:
        print(f"bedrock-top: {notice}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"prices_as_of": PRICES_AS_OF, "models": rows}, indent=2))
    else:
        sys.stdout.write(render_prices(rows))
    return 0

"""The headless report: ``bedrock-top --once`` as a table, JSON or one line.

Never imports Textual. stdout carries the report; diagnostics go to stderr. Local numbers (the
usage log: this host, real time) and account-wide numbers (CloudWatch) sit side by side in
separate objects and are never added together.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.formatting import (
    format_count,
    format_ms,
    format_usd,
    iso_utc,
    printable,
    short_model_id,
)
from monitor.groups import OTHER, GroupIndex
from monitor.store import Percentiles, Store, Tally

QUOTA_MEASURES = ("tpm", "rpm", "tpd")
# USD for a model's tally, or None when the model has no known price.
CostOf = Callable[[str, Tally], float | None]

RATE_WINDOW_S = 60
RATE_WINDOW_LONG_S = 300


@dataclass
class ReportInput:
    """Everything a report is made from, gathered by the caller."""

    now: float
    since: float
    store: Store
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # model_id -> the CloudWatch object for that model (account-wide), when that source ran.
    cloudwatch: dict[str, dict[str, Any]] = field(default_factory=dict)
    cloudwatch_totals: dict[str, Any] | None = None
    # model_id -> the CloudWatch object of its bedrock-mantle traffic (`AWS/BedrockMantle`):
    # rows of their own, marked ``"endpoint": "mantle"``, never added to AWS/Bedrock's.
    mantle: dict[str, dict[str, Any]] = field(default_factory=dict)
    mantle_totals: dict[str, Any] | None = None
    # model_id -> cost in USD of the local tally, or None when unpriced.
    local_cost: Mapping[str, float | None] | None = None
    budgets: list[dict[str, Any]] | None = None
    # model_id -> its ``quota`` object (tpm, rpm, tpd); models missing here get all null.
    quotas: Mapping[str, dict[str, Any]] | None = None
    # The fleet source's own store (CloudWatch Logs), shown beside local, never added to it.
    fleet_store: Store | None = None
    fleet_cost: Mapping[str, float | None] | None = None
    # (source name, its group index) for the top-level apps and callers lists.
    groups: list[tuple[str, GroupIndex]] = field(default_factory=list)
    group_cost: CostOf | None = None


def _percentiles(values: Percentiles) -> dict[str, float | None]:
    return {key: _round(value) for key, value in values.as_dict().items()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def local_object(store: Store, model_id: str | None, now: float) -> dict[str, Any]:
    """The ``local`` object of a model (or of all models when ``model_id`` is None)."""
    tally: Tally = store.since_tally(model_id)
    return {
        "requests": tally.requests,
        "input_tokens": tally.input_tokens,
        "output_tokens": tally.output_tokens,
        "cache_read_input_tokens": tally.cache_read_input_tokens,
        "cache_write_input_tokens": tally.cache_write_input_tokens,
        "errors": tally.errors,
        "client_errors": tally.client_errors,
        "server_errors": tally.server_errors,
        "throttles": tally.throttles,
        "aborted": tally.aborted,
        # Requests whose token counts were estimated by the wrapper, not reported by Bedrock.
        "estimated_requests": tally.estimated,
        "latency_ms": _percentiles(store.since_latency(model_id)),
        "ttft_ms": _percentiles(store.since_ttft(model_id)),
        "rates": store.rates(model_id, now, RATE_WINDOW_S).as_dict(),
        "rates_5m": store.rates(model_id, now, RATE_WINDOW_LONG_S).as_dict(),
    }


def build_report(data: ReportInput) -> dict[str, Any]:
    """The JSON report (field names are a contract: see docs/report.md)."""
    store = data.store
    fleet = data.fleet_store
    model_ids = set(store.model_ids()) | set(data.cloudwatch)
    if fleet is not None:
        model_ids |= set(fleet.model_ids())
    models: list[dict[str, Any]] = []
    for model_id in model_ids:
        entry: dict[str, Any] = {"model_id": model_id}
        if model_id in store:
            entry["local"] = local_object(store, model_id, data.now)
            if data.local_cost is not None:
                entry["local"]["cost_usd"] = _money(data.local_cost.get(model_id))
        else:
            entry["local"] = None
        if model_id in data.cloudwatch:
            entry["cloudwatch"] = data.cloudwatch[model_id]
        entry["quota"] = (data.quotas or {}).get(model_id) or dict.fromkeys(QUOTA_MEASURES)
        if fleet is not None:
            entry["fleet"] = None
            if model_id in fleet:
                entry["fleet"] = local_object(fleet, model_id, data.now)
                if data.fleet_cost is not None:
                    entry["fleet"]["cost_usd"] = _money(data.fleet_cost.get(model_id))
        models.append(entry)
    models.sort(key=_sort_key)
    models.extend(mantle_rows(data.mantle))
    totals: dict[str, Any] = {"local": local_object(store, None, data.now)}
    if data.local_cost is not None:
        priced = [cost for cost in data.local_cost.values() if cost is not None]
        totals["local"]["cost_usd"] = _money(sum(priced)) if priced else None
    if data.cloudwatch_totals is not None:
        totals["cloudwatch"] = data.cloudwatch_totals
    if fleet is not None:
        totals["fleet"] = local_object(fleet, None, data.now)
        if data.fleet_cost is not None:
            priced = [cost for cost in data.fleet_cost.values() if cost is not None]
            totals["fleet"]["cost_usd"] = _money(sum(priced)) if priced else None
    if data.mantle_totals is not None:
        totals["mantle"] = data.mantle_totals
    report: dict[str, Any] = {
        "generated_at": iso_utc(data.now),
        "since": iso_utc(data.since),
        "sources": data.sources,
        "totals": totals,
        "models": models,
    }
    if data.budgets is not None:
        report["budgets"] = data.budgets
    if data.groups:
        for dimension, field_name in (("app", "apps"), ("caller", "callers")):
            report[field_name] = [
                entry
                for source, index in data.groups
                for entry in group_objects(index, dimension, source, data.group_cost)
            ]
    return report


def group_objects(
    index: GroupIndex, dimension: str, source: str, cost: CostOf | None
) -> list[dict[str, Any]]:
    """One object per group of a dimension (``app``, ``caller``, ...) since the report window's
    start, largest first: the shape of the report's ``apps`` and ``callers`` lists. ``cost_usd``
    sums the priced models (None when none is priced); ``unpriced_models`` names the rest."""
    entries: list[dict[str, Any]] = []
    for name in index.group_names(dimension):
        tally = index.since_tally(dimension, name)
        if not tally.requests:
            continue
        model_entries: list[dict[str, Any]] = []
        priced: list[float] = []
        unpriced: list[str] = []
        for model_id, share in index.model_tallies(dimension, name).items():
            model_cost = cost(model_id, share) if cost is not None else None
            if model_cost is not None:
                priced.append(model_cost)
            elif share.total_tokens:
                unpriced.append(model_id)
            model_entries.append(
                {
                    "model_id": model_id,
                    "requests": share.requests,
                    "input_tokens": share.input_tokens,
                    "output_tokens": share.output_tokens,
                    "cost_usd": _money(model_cost),
                }
            )
        model_entries.sort(key=lambda m: (-(m["input_tokens"] + m["output_tokens"]), m["model_id"]))
        entry: dict[str, Any] = {
            dimension: name,
            "source": source,
            "requests": tally.requests,
            "input_tokens": tally.input_tokens,
            "output_tokens": tally.output_tokens,
            "cache_read_input_tokens": tally.cache_read_input_tokens,
            "cache_write_input_tokens": tally.cache_write_input_tokens,
            "errors": tally.errors,
            "throttles": tally.throttles,
            "cost_usd": _money(sum(priced)) if priced else None,
            "unpriced_models": sorted(unpriced),
            "models": model_entries,
        }
        if name == OTHER:
            entry["folded_groups"] = index.folded(dimension)[0]
        entries.append(entry)
    entries.sort(key=lambda e: (-(e["input_tokens"] + e["output_tokens"]), e[dimension]))
    return entries


def mantle_rows(mantle: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """bedrock-mantle's rows: no local side (the wrapper instruments bedrock-runtime only)."""
    rows = [
        {"model_id": model_id, "endpoint": "mantle", "local": None, "cloudwatch": cloudwatch}
        for model_id, cloudwatch in mantle.items()
    ]
    rows.sort(key=_sort_key)
    return rows


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _sort_key(entry: dict[str, Any]) -> tuple[int, str]:
    side = entry.get("local") or entry.get("cloudwatch") or {}
    tokens = int(side.get("input_tokens") or 0) + int(side.get("output_tokens") or 0)
    return (-tokens, entry["model_id"])


def render_json(report: dict[str, Any]) -> str:
    """Strict JSON: a value that is not a finite number (an endpoint's overflowing sum, a
    division by an empty window) is written as null, never as NaN or Infinity, which most JSON
    parsers refuse."""
    return json.dumps(finite(report), indent=2, sort_keys=False, allow_nan=False)


def finite(value: Any) -> Any:
    """``value`` with every float that is NaN or infinite replaced by None (dicts and lists
    walked; everything else as it is)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def render_table(report: dict[str, Any], width: int = 120) -> str:
    """A ``top -b``-style table: one row per model, local numbers, CloudWatch beside them."""
    lines = [f"bedrock-top  {report['generated_at']}  since {report['since']}"]
    for name, state in report["sources"].items():
        lines.append(f"  {name}: {_source_summary(name, state)}")
    columns = ("REQ", "IN", "OUT", "ERR", "THR", "P50", "P99", "REQ/MIN", "IN/s", "OUT/s", "COST")
    model_width = max(20, width - 6 * len(columns) - 12)
    header = f"{'MODEL (local: this host)':<{model_width}}" + "".join(f"{c:>9}" for c in columns)
    lines += ["", header]
    rows = [(entry["model_id"], entry["local"]) for entry in report["models"] if entry["local"]]
    rows.append(("TOTAL", report["totals"]["local"]))
    for model_id, local in rows:
        rates = local["rates"]
        cells = (
            format_count(local["requests"]),
            format_count(local["input_tokens"]),
            format_count(local["output_tokens"]),
            str(local["errors"]),
            str(local["throttles"]),
            format_ms(local["latency_ms"]["p50"]),
            format_ms(local["latency_ms"]["p99"]),
            f"{rates['requests_per_min']:.1f}",
            format_count(round(rates["input_tokens_per_s"], 1)),
            format_count(round(rates["output_tokens_per_s"], 1)),
            format_usd(local["cost_usd"]) if "cost_usd" in local else "",
        )
        name = short_model_id(model_id, model_width - 1)
        estimated = "~" if local.get("estimated_requests") else ""
        lines.append(f"{name + estimated:<{model_width}}" + "".join(f"{c:>9}" for c in cells))
    for endpoint, title in (
        (None, "MODEL (CloudWatch: account-wide)"),
        ("mantle", "MODEL (mantle: account-wide)"),
    ):
        lines += _cloud_section(report, endpoint, title, model_width)
    fleet_rows = [
        (entry["model_id"], entry["fleet"]) for entry in report["models"] if entry.get("fleet")
    ]
    if fleet_rows:
        lines += [
            "",
            f"{'MODEL (fleet: invocation logs)':<{model_width}}"
            + "".join(f"{c:>9}" for c in ("REQ", "IN", "OUT", "ERR", "THR", "COST")),
        ]
        for model_id, side in [*fleet_rows, ("TOTAL", report["totals"].get("fleet") or {})]:
            fleet_cells = (
                format_count(side.get("requests") or 0),
                format_count(side.get("input_tokens") or 0),
                format_count(side.get("output_tokens") or 0),
                str(side.get("errors") or 0),
                str(side.get("throttles") or 0),
                format_usd(side.get("cost_usd")) if "cost_usd" in side else "",
            )
            name = short_model_id(model_id, model_width - 1)
            lines.append(f"{name:<{model_width}}" + "".join(f"{c:>9}" for c in fleet_cells))
    for field_name, dimension in (("apps", "app"), ("callers", "caller")):
        groups = report.get(field_name) or []
        if not groups:
            continue
        lines += [
            "",
            f"{dimension.upper() + ' (source)':<{model_width}}"
            + "".join(f"{c:>9}" for c in ("REQ", "IN", "OUT", "ERR", "THR", "COST")),
        ]
        for group in groups:
            group_cells = (
                format_count(group["requests"]),
                format_count(group["input_tokens"]),
                format_count(group["output_tokens"]),
                str(group["errors"]),
                str(group["throttles"]),
                format_usd(group["cost_usd"]),
            )
            label = f"{group[dimension]} ({group['source']})"[: model_width - 1]
            lines.append(f"{label:<{model_width}}" + "".join(f"{c:>9}" for c in group_cells))
    if any(local.get("estimated_requests") for _, local in rows):
        lines += ["", "~ token counts of some requests are estimates (the response had no count)"]
    for budget in report.get("budgets") or []:
        fraction = budget.get("fraction")
        shown = "-" if fraction is None else f"{fraction:.0%}"
        lines.append(f"budget {budget['name']}: {shown} of {budget['period']}")
    quota_lines = [
        f"quota {entry['model_id']}: {_quota_text(measure, quota)}"
        for entry in report["models"]
        if (found := tightest_quota(entry)) is not None
        for measure, quota in (found,)
    ]
    if quota_lines:
        lines += ["", *quota_lines]
    lines += _billing_lines(report.get("billing"))
    # The terminal boundary: each line was built as one line, so a break or an escape sequence
    # inside a model id, a path or a message is shown, never obeyed.
    return "\n".join(printable(line) for line in lines) + "\n"


def tightest_quota(entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A model entry's quota measure closest to its limit, as ``(measure, object)``."""
    quota = entry.get("quota") or {}
    # Several regions add ``regions`` beside the measures: the measures are the tightest's.
    quotas = [(m, q) for m, q in quota.items() if q is not None and m in QUOTA_MEASURES]
    return max(quotas, key=lambda item: item[1]["fraction"], default=None)


def _quota_text(measure: str, quota: Mapping[str, Any]) -> str:
    estimate = "~" if quota["source"] == "local-estimate" else ""
    used = quota["used_today"] if measure == "tpd" else quota["used_peak_5m"]
    return (
        f"{measure} {estimate}{quota['fraction']:.0%} ({format_count(used)} of "
        f"{format_count(quota['limit'])}, {quota['source']}"
        + (f", {quota['quota_code']})" if quota.get("quota_code") else ")")
    )


def _billing_lines(billing: dict[str, Any] | None) -> list[str]:
    """The bill and the estimates for the same days (never added together)."""
    if not billing:
        return []
    estimates = billing.get("estimates") or {}
    parts = []
    for name, label in (("local", "local"), ("cloudwatch", "CloudWatch")):
        found = estimates.get(name)
        if found is not None:
            parts.append(f"{label} est. {format_usd(found['usd'])}")
    lines = [
        "",
        f"billed month to date {format_usd(billing['month_to_date_usd'])} through "
        f"{billing['through'] or '-'} (Cost Explorer)"
        + (f"; same days: {', '.join(parts)}" if parts else ""),
    ]
    for model_id, usd in billing["by_model"].items():
        if usd:
            lines.append(f"  {short_model_id(model_id, 60):<60} {format_usd(usd):>10}")
    return lines


def _cloud_section(
    report: dict[str, Any], endpoint: str | None, title: str, model_width: int
) -> list[str]:
    """The account-wide rows of one endpoint; with several regions, one line per region under
    each model."""
    cloud = [
        (entry["model_id"], entry["cloudwatch"])
        for entry in report["models"]
        if entry.get("cloudwatch") and entry.get("endpoint") == endpoint
    ]
    lines: list[str] = []
    if cloud:
        lines += [
            "",
            f"{title:<{model_width}}"
            + "".join(f"{c:>9}" for c in ("REQ", "IN", "OUT", "ERR", "THR", "AVG", "MAX")),
        ]
        several = any(len(cw.get("regions") or {}) > 1 for _, cw in cloud)
        for model_id, cw in cloud:
            name = short_model_id(model_id, model_width - 1)
            lines.append(f"{name:<{model_width}}" + "".join(f"{c:>9}" for c in _cloud_cells(cw)))
            if several:
                for region, part in (cw.get("regions") or {}).items():
                    lines.append(
                        f"{'  ' + region:<{model_width}}"
                        + "".join(f"{c:>9}" for c in _cloud_cells(part))
                    )
    return lines


def _cloud_cells(cw: dict[str, Any]) -> tuple[str, ...]:
    latency = cw.get("latency_ms") or {}
    return (
        format_count(cw.get("requests") or 0),
        format_count(cw.get("input_tokens") or 0),
        format_count(cw.get("output_tokens") or 0),
        str(cw.get("errors") or 0),
        str(cw.get("throttles") or 0),
        format_ms(latency.get("avg")),
        format_ms(latency.get("max")),
    )


def _source_summary(name: str, state: dict[str, Any]) -> str:
    if state.get("kind") == "log":
        files = ", ".join(state.get("files") or []) or ", ".join(state.get("patterns") or [])
        text = f"{files} — {state['records']} records"
        if state.get("rejected"):
            reasons = ", ".join(f"{r} x{n}" for r, n in state["rejected_by_reason"].items())
            text += f", {state['rejected']} rejected ({reasons})"
        if state.get("waiting_for"):
            text += f", waiting for {', '.join(state['waiting_for'])}"
        for path, error in (state.get("errors") or {}).items():
            text += f"; error reading {path}: {error}"
        return text
    if name == "billing":
        text = f"Cost Explorer — {state.get('state')}"
        if state.get("message"):
            text += f": {state['message']}"
        age = state.get("cache_age_s")
        if age is not None:
            text += f" (bill {age / 3600:.1f} h old, {state.get('requests', 0)} requests now)"
        return text
    if state.get("kind") == "fleet":
        groups = ", ".join(state.get("log_groups") or []) or "no log group"
        text = f"{state.get('region') or 'no region'} {groups} — {state.get('state')}"
        if state.get("message"):
            text += f": {state['message']}"
        text += f" ({state.get('requests', 0)} requests"
        if state.get("live_tail"):
            text += f", live tail {state.get('live_tail_minutes', 0)} min"
        if state.get("rejected"):
            reasons = ", ".join(f"{r} x{n}" for r, n in state["rejected_by_reason"].items())
            text += f", {state['rejected']} rejected ({reasons})"
        return text + ")"
    if name == "cloudwatch" and len(state.get("regions") or {}) > 1:
        parts = [
            f"{region} {part.get('state')}"
            + (f" ({part['message']})" if part.get("message") and part.get("state") != "ok" else "")
            for region, part in state["regions"].items()
        ]
        return (
            " · ".join(parts) + f" ({state.get('calls', 0)} calls, "
            f"{state.get('metrics_requested', 0)} metrics, "
            f"{format_usd(state.get('estimated_cost_usd'))})"
        )
    if name == "cloudwatch":
        text = f"{state.get('region') or 'no region'} — {state.get('state')}"
        if state.get("message"):
            text += f": {state['message']}"
        if state.get("calls"):
            text += (
                f" ({state['calls']} calls, {state.get('metrics_requested', 0)} metrics, "
                f"{format_usd(state.get('estimated_cost_usd'))})"
            )
        return text
    scalars = {key: value for key, value in state.items() if not isinstance(value, dict | list)}
    return ", ".join(f"{key}={value}" for key, value in scalars.items())


def render_line(report: dict[str, Any], top: int = 2) -> str:
    """One line for a tmux status bar or a prompt: local totals, top models, spend, budget."""
    local = report["totals"]["local"]
    rates = local["rates"]
    parts = [
        f"{rates['requests_per_min']:.0f} req/min",
        f"in {format_count(round(rates['input_tokens_per_s'], 1))}/s",
        f"out {format_count(round(rates['output_tokens_per_s'], 1))}/s",
    ]
    if "cost_usd" in local:
        parts.append(format_usd(local["cost_usd"]))
    ranked = [entry for entry in report["models"] if entry.get("local")]
    ranked.sort(key=lambda entry: -entry["local"]["rates"]["output_tokens_per_s"])
    for entry in ranked[:top]:
        out = entry["local"]["rates"]["output_tokens_per_s"]
        parts.append(f"{short_model_id(entry['model_id'], 24)} {format_count(round(out, 1))}/s")
    quotas = [(e["model_id"], q) for e in report["models"] if (q := tightest_quota(e))]
    if quotas:
        model_id, (measure, quota) = max(quotas, key=lambda item: item[1][1]["fraction"])
        estimate = "~" if quota["source"] == "local-estimate" else ""
        parts.append(
            f"quota {short_model_id(model_id, 24)} {measure} {estimate}{quota['fraction']:.0%}"
        )
    budgets = [b for b in report.get("budgets") or [] if b.get("fraction") is not None]
    if budgets:
        tightest = max(budgets, key=lambda budget: budget["fraction"])
        parts.append(f"{tightest['name']} {tightest['fraction']:.0%}")
    return printable("bedrock " + " | ".join(parts))

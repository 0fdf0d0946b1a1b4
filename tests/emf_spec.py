"""An independent check of CloudWatch's Embedded Metric Format specification, for tests.

Written from the specification (CloudWatch user guide, "Specification: Embedded metric format"),
not from bedrock-top's builder: the root is one JSON object; ``_aws`` holds an integer
millisecond ``Timestamp`` and ``CloudWatchMetrics``, a list of directives, each with a
``Namespace``, ``Dimensions`` (a list of dimension sets, at most 30 names each, every name a
root member holding a string) and ``Metrics`` (at most 100 definitions, each with a ``Name``
that is a root member holding a number or at most 100 numbers, an optional valid ``Unit`` and
an optional ``StorageResolution`` of 1 or 60). An event is at most 1 MB.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_EVENT_BYTES = 1024 * 1024
MAX_METRICS_PER_DIRECTIVE = 100
MAX_DIMENSIONS_PER_SET = 30
MAX_VALUES_PER_METRIC = 100
MAX_DIMENSION_VALUE_CHARS = 1024
# Two weeks in the past, two hours in the future: CloudWatch rejects timestamps beyond these.
MAX_PAST_MS = 14 * 86400 * 1000
MAX_FUTURE_MS = 2 * 3600 * 1000
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)


def emf_problems(line: bytes, now_ms: int | None = None) -> list[str]:
    """Everything in ``line`` that breaks the specification (empty: a valid EMF event)."""
    problems: list[str] = []
    if len(line) > MAX_EVENT_BYTES:
        problems.append(f"event of {len(line)} bytes is over 1 MB")
    try:
        root = json.loads(line)
    except ValueError as err:
        return [f"not one JSON document: {err}"]
    if not isinstance(root, dict):
        return ["root is not a JSON object"]
    meta = root.get("_aws")
    if not isinstance(meta, dict):
        return ["no _aws metadata object"]
    timestamp = meta.get("Timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        problems.append(f"Timestamp {timestamp!r} is not an integer of milliseconds")
    elif now_ms is not None and not now_ms - MAX_PAST_MS <= timestamp <= now_ms + MAX_FUTURE_MS:
        problems.append(f"Timestamp {timestamp} is outside what CloudWatch accepts")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "CloudWatchMetrics is not a non-empty list"]
    for index, directive in enumerate(directives):
        problems.extend(_directive_problems(root, directive, f"directive {index}"))
    return problems


def _directive_problems(root: dict[str, Any], directive: Any, where: str) -> list[str]:
    if not isinstance(directive, dict):
        return [f"{where} is not an object"]
    problems = []
    extra = set(directive) - {"Namespace", "Dimensions", "Metrics"}
    if extra:
        problems.append(f"{where} has unknown members {sorted(extra)}")
    namespace = directive.get("Namespace")
    if not isinstance(namespace, str) or not 1 <= len(namespace) <= 1024:
        problems.append(f"{where}: Namespace {namespace!r} is not a string of 1-1024 characters")
    elif namespace.startswith("AWS/"):
        problems.append(f"{where}: Namespace {namespace!r} is reserved for AWS")
    dimension_sets = directive.get("Dimensions")
    if not isinstance(dimension_sets, list):
        problems.append(f"{where}: Dimensions is not a list")
        dimension_sets = []
    for dims in dimension_sets:
        if not isinstance(dims, list) or len(dims) > MAX_DIMENSIONS_PER_SET:
            problems.append(f"{where}: dimension set {dims!r} is not a list of at most 30")
            continue
        for name in dims:
            value = root.get(name)
            if not isinstance(value, str):
                problems.append(f"{where}: dimension {name!r} is not a string root member")
            elif not (
                1 <= len(value) <= MAX_DIMENSION_VALUE_CHARS
                and value.isascii()
                and value.isprintable()
                and not value.isspace()
            ):
                problems.append(f"{where}: dimension {name!r} value {value[:40]!r} is invalid")
    metrics = directive.get("Metrics")
    if not isinstance(metrics, list) or len(metrics) > MAX_METRICS_PER_DIRECTIVE:
        problems.append(f"{where}: Metrics is not a list of at most 100")
        metrics = []
    names = [m.get("Name") for m in metrics if isinstance(m, dict)]
    if len(names) != len(set(names)):
        problems.append(f"{where}: a metric is defined twice")
    for metric in metrics:
        if not isinstance(metric, dict):
            problems.append(f"{where}: metric definition {metric!r} is not an object")
            continue
        extra = set(metric) - {"Name", "Unit", "StorageResolution"}
        if extra:
            problems.append(f"{where}: metric {metric!r} has unknown members")
        name = metric.get("Name")
        if "Unit" in metric and metric["Unit"] not in UNITS:
            problems.append(f"{where}: metric {name!r} has unit {metric['Unit']!r}")
        if "StorageResolution" in metric and metric["StorageResolution"] not in (1, 60):
            problems.append(f"{where}: metric {name!r} storage resolution is not 1 or 60")
        value = root.get(name) if isinstance(name, str) else None
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_VALUES_PER_METRIC:
            problems.append(f"{where}: metric {name!r} has more than 100 values")
        for item in values:
            if (
                not isinstance(item, int | float)
                or isinstance(item, bool)
                or not math.isfinite(item)
            ):
                problems.append(f"{where}: metric {name!r} value {item!r} is not a number")
    return problems


def extract_metric_data(line: bytes) -> list[tuple[str, list[dict[str, Any]]]]:
    """What CloudWatch Logs makes of one EMF event, as PutMetricData arguments: per directive,
    one datum per dimension set and metric (the tests' stand-in for CloudWatch, since moto
    does not extract EMF)."""
    import datetime as dt

    root = json.loads(line)
    meta = root["_aws"]
    timestamp = dt.datetime.fromtimestamp(meta["Timestamp"] / 1000, tz=dt.UTC)
    extracted = []
    for directive in meta["CloudWatchMetrics"]:
        data = []
        for dims in directive["Dimensions"]:
            for metric in directive["Metrics"]:
                value = root[metric["Name"]]
                datum: dict[str, Any] = {
                    "MetricName": metric["Name"],
                    "Dimensions": [{"Name": name, "Value": root[name]} for name in dims],
                    "Timestamp": timestamp,
                    "Unit": metric.get("Unit", "None"),
                }
                if isinstance(value, list):
                    datum["Values"] = value
                else:
                    datum["Value"] = value
                data.append(datum)
        extracted.append((directive["Namespace"], data))
    return extracted

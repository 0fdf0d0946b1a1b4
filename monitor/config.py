"""Configuration: find, read (tomllib), validate, show and write (tomli-w) the TOML file.

Layers, lowest first: built-in defaults, the file, the environment, command-line flags. Every
effective value remembers which layer it came from (:attr:`Config.provenance`), which is what
``bedrock-top config show`` prints. Every key is documented in ``config.example.toml`` and
``docs/configuration.md``.

An invalid value raises :class:`ConfigError`, whose one-line message names the file, the line
(where it can be found), the key path and what is expected; the CLI exits with status 2 on it.
An unknown key is not an error: it is reported in :attr:`Config.warnings` and ignored.

This module must not import Textual: the headless report uses it.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from platformdirs import user_config_dir, user_data_dir

from monitor.budgets import BUDGET_SOURCES, DEFAULT_WARN_AT, PERIODS, BudgetSpec
from monitor.config_write import EditError, set_budget_limit, write_text_atomically
from monitor.paths import APP_NAME, CONFIG_ENV, LOG_ENV, default_config_path
from monitor.pricing import PRICES_AS_OF, Price, glob_problem, prefix_problem
from monitor.quotas import DEFAULT_BURNDOWN, MEASURES, Measure, QuotaOverride

OriginKind = Literal["default", "file", "environment", "flag"]

DEFAULT_INTERVAL_S = 60.0
MIN_INTERVAL_S = 10.0
# Same values as monitor.sources.app_metrics (not imported: that module loads aiobotocore's
# helpers, and the configuration must stay light).
DEFAULT_APP_METRICS_INTERVAL_S = 300.0
MIN_APP_METRICS_INTERVAL_S = 60.0
DEFAULT_FLEET_INTERVAL_S = 10.0  # FilterLogEvents polls (free requests; see docs/fleet.md)
MIN_FLEET_INTERVAL_S = 2.0
DEFAULT_REFRESH_S = 1.0
MIN_REFRESH_S = 0.1
MAX_REFRESH_S = 60.0
DEFAULT_THEME = "bedrock-dark"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_BILLING_REFRESH_H = 6.0
MIN_BILLING_REFRESH_H = 1.0
DEFAULT_PROMETHEUS_HOST = "127.0.0.1"
_MAX_SECONDS = 24 * 3600.0

STARTER_HEADER = (
    "# bedrock-top configuration, written by `bedrock-top init-config`.\n"
    "# Every key, budgets and prices included, is described in config.example.toml and\n"
    "# docs/configuration.md. Check the effective values with `bedrock-top config show`.\n\n"
)


STARTER_FOOTER = """
# A budget: uncomment and adjust (see docs/configuration.md for every key).
# [[budgets]]
# name = "daily spend"
# period = "day"                 # day | week | month, in `timezone`
# limit_usd = 20.0               # or limit_tokens = 5_000_000 (input + output)
# source = "auto"                # local | cloudwatch | auto
# warn_at = [0.5, 0.8, 1.0]
#
# A price the built-in table lacks (USD per million tokens; keys may be globs):
# [pricing."meta.llama3-3-70b-instruct-v1:0"]
# input_per_mtok = 0.72
# output_per_mtok = 0.72
"""


class ConfigError(Exception):
    """An invalid configuration. ``str()`` is one line: where, which key, what is expected."""

    def __init__(
        self,
        *,
        path: Path | None,
        key_path: str,
        expected: str,
        got: str | None = None,
        line: int | None = None,
        where: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key_path = key_path
        self.expected = expected
        self.got = got
        place = where or (str(path) if path is not None else "configuration")
        if line is not None:
            place += f", line {line}"
        message = f"{place}: {key_path or '(document)'}: expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an effective value came from."""

    kind: OriginKind
    detail: str = ""  # the file and line, the variable's name or the flag

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


@dataclass(frozen=True)
class SourcesConfig:
    logs: list[str]
    cloudwatch: bool = True  # on when credentials resolve; the source says when they do not
    region: str | None = None  # the first of `regions` (sources that read one region)
    profile: str | None = None
    endpoint_url: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    # Polls of the BedrockTop namespace (the wrapper's EMF, per app): slower, each costs money.
    app_metrics_interval_s: float = DEFAULT_APP_METRICS_INTERVAL_S
    quotas: bool = True  # Service Quotas, with the same account as CloudWatch
    # Cost Explorer's month-to-date bill: off by default (each request costs $0.01).
    billing: bool = False
    billing_refresh_h: float = DEFAULT_BILLING_REFRESH_H
    # The fleet source (CloudWatch Logs): on with CloudWatch; log groups to read (empty: the
    # invocation-logging group Bedrock is configured with), its poll interval, Live Tail.
    fleet: bool = True
    log_groups: list[str] = field(default_factory=list)
    fleet_interval_s: float = DEFAULT_FLEET_INTERVAL_S
    live_tail: bool = False
    # Several regions (sources.regions, or --region a,b); every Bedrock region with metrics
    # (--all-regions); the bedrock-mantle namespace; linked accounts (--linked-accounts).
    regions: tuple[str, ...] = ()
    all_regions: bool = False
    mantle: bool = True
    linked_accounts: bool = False


@dataclass(frozen=True)
class UIConfig:
    refresh_s: float = DEFAULT_REFRESH_S
    theme: str = DEFAULT_THEME


@dataclass(frozen=True)
class ExportConfig:
    """The Prometheus endpoint (``--prometheus``): off unless a port is given."""

    prometheus_port: int | None = None
    prometheus_host: str = DEFAULT_PROMETHEUS_HOST


@dataclass(frozen=True)
class Config:
    sources: SourcesConfig
    ui: UIConfig = field(default_factory=UIConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key(s), for set_keymap
    tokenizer: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    pricing: dict[str, Price] = field(default_factory=dict)  # model id or glob -> price
    profile_multipliers: dict[str, float] = field(default_factory=dict)  # "us." -> 1.1
    budgets: list[BudgetSpec] = field(default_factory=list)
    on_threshold: list[str] | None = None  # argv
    models: list[str] = field(default_factory=list)  # always shown and polled
    # [quotas."<model id or glob>"]: limits or quota codes set by hand (win over the match).
    quotas: list[QuotaOverride] = field(default_factory=list)
    # Output-token burndown per model glob, over the defaults.
    burndown: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BURNDOWN))
    # [billing.usage_types]: a Cost Explorer usage type (or glob) -> the model id it bills.
    billing_usage_types: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the file read, if any
    path_origin: Origin = field(default_factory=lambda: Origin("default"))
    warnings: list[str] = field(default_factory=list)
    provenance: Mapping[str, Origin] = field(default_factory=dict)  # key path -> origin


def default_log_location() -> str:
    """The wrapper's default log, before ``BEDROCK_TOP_LOG`` is applied."""
    return str(Path(user_data_dir(APP_NAME)) / "usage.jsonl")


# --- key paths and source lines -------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_path(*parts: str | int) -> str:
    """``budgets[0].period``, ``pricing."anthropic.claude-*".input_per_mtok``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            text += f".{shown}" if text else shown
    return text


def _parse_dotted_key(text: str) -> tuple[list[str], str] | None:
    """Split ``a."b.c".d = ...`` into ``(["a", "b.c", "d"], rest)``; ``None`` if not a key."""
    parts: list[str] = []
    index = 0
    while True:
        while index < len(text) and text[index] in " \t":
            index += 1
        if index >= len(text):
            return None
        char = text[index]
        if char in "\"'":
            close = text.find(char, index + 1)
            if close == -1:
                return None
            raw = text[index + 1 : close]
            try:
                parts.append(json.loads(f'"{raw}"') if char == '"' else raw)
            except ValueError:
                parts.append(raw)
            index = close + 1
        else:
            bare = _BARE_KEY.match(text, index)
            if not bare:
                return None
            parts.append(bare.group())
            index = bare.end()
        while index < len(text) and text[index] in " \t":
            index += 1
        if index < len(text) and text[index] == ".":
            index += 1
            continue
        return parts, text[index:]


def _scan_keys(text: str) -> Iterator[tuple[str, int]]:
    """Best effort: ``(key path, 1-based line)`` of each table header and key in a TOML text.

    Used only to point error messages at a line; tomllib does not report where a value was.
    """
    current: list[str | int] = []
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            parsed = _parse_dotted_key(line[2:])
            if parsed and parsed[1].lstrip().startswith("]]"):
                names = tuple(parsed[0])
                index = array_counts.get(names, 0)
                array_counts[names] = index + 1
                current = [*names, index]
                yield key_path(*current), number
            continue
        if line.startswith("["):
            parsed = _parse_dotted_key(line[1:])
            if parsed and parsed[1].lstrip().startswith("]"):
                current = list(parsed[0])
                yield key_path(*current), number
            continue
        parsed = _parse_dotted_key(line)
        if parsed and parsed[1].startswith("="):
            yield key_path(*current, *parsed[0]), number
            for quote in ('"""', "'''"):
                if parsed[1].count(quote) % 2 == 1:
                    in_multiline = quote


def source_lines(text: str) -> dict[str, int]:
    """The line where each key path is first written in a TOML text (see :func:`_scan_keys`)."""
    lines: dict[str, int] = {}
    for name, number in _scan_keys(text):
        lines.setdefault(name, number)
    return lines


def _line_of(lines: Mapping[str, int], parts: tuple[str | int, ...]) -> int | None:
    """The line of the key, else of the nearest enclosing key or table that has one."""
    for end in range(len(parts), 0, -1):
        found = lines.get(key_path(*parts[:end]))
        if found is not None:
            return found
    return None


# --- validation -----------------------------------------------------------------------------


class _Checker:
    """Validates values from one layer, raising ConfigError that point into that layer."""

    def __init__(
        self, path: Path | None, lines: Mapping[str, int], where: str | None = None
    ) -> None:
        self.path = path
        self.lines = lines
        self.where = where
        self.warnings: list[str] = []

    def fail(
        self,
        parts: tuple[str | int, ...],
        expected: str,
        got: object = None,
        *,
        got_text: str | None = None,
    ) -> ConfigError:
        shown = got_text if got is None else _show_got(got)
        return ConfigError(
            path=self.path,
            key_path=key_path(*parts),
            expected=expected,
            got=shown,
            line=_line_of(self.lines, parts),
            where=self.where,
        )

    def warn_unknown(
        self, table: Mapping[str, Any], known: tuple[str, ...], parts: tuple[str | int, ...]
    ) -> None:
        for name in table:
            if name not in known:
                full = (*parts, name)
                line = _line_of(self.lines, full)
                place = str(self.path) + (f", line {line}" if line else "")
                self.warnings.append(
                    f"{place}: unknown key {key_path(*full)!r} ignored"
                    f" (known here: {', '.join(known)})"
                )

    def table(self, value: object, parts: tuple[str | int, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(parts, "a table", value)
        return value

    def string(self, value: object, parts: tuple[str | int, ...], what: str = "a string") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(parts, f"{what} (non-empty)", value)
        return value

    def boolean(self, value: object, parts: tuple[str | int, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(parts, "true or false", value)
        return value

    def number(
        self,
        value: object,
        parts: tuple[str | int, ...],
        *,
        minimum: float,
        maximum: float = math.inf,
        exclusive_minimum: bool = False,
        unit: str = "",
    ) -> float:
        low = f"greater than {minimum:g}" if exclusive_minimum else f"at least {minimum:g}"
        bounds = low + (f" and at most {maximum:g}" if maximum < math.inf else "")
        expected = f"a number {bounds}{unit}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(parts, expected, value)
        try:
            number = float(value)
        except OverflowError:  # an integer too large for any float
            raise self.fail(parts, f"{expected}, and finite", value) from None
        # nan, inf and 1e309 (which TOML reads as inf) are never a price, a limit or a time.
        if not math.isfinite(number):
            raise self.fail(parts, f"{expected}, and finite", value)
        too_low = number <= minimum if exclusive_minimum else number < minimum
        if too_low or number > maximum:
            raise self.fail(parts, expected, value)
        return number

    def port(self, value: object, parts: tuple[str | int, ...]) -> int:
        expected = "a TCP port from 1 to 65535 (0 picks a free one)"
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise self.fail(parts, expected, value)
        return value

    def string_list(
        self, value: object, parts: tuple[str | int, ...], what: str, *, glob: bool = False
    ) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(parts, f"an array of {what}", value)
        items: list[str] = []
        for index, item in enumerate(value):
            text = self.string(item, (*parts, index), what.rstrip("s"))
            if glob:
                problem = glob_problem(text)
                if problem:
                    raise self.fail((*parts, index), f"a model id or glob without {problem}", text)
            items.append(text)
        return items

    def regions(self, value: object, parts: tuple[str | int, ...]) -> list[str]:
        """One region name, several separated by commas, or an array of them."""
        from monitor.sources.cloudwatch_regions import parse_regions

        expected = 'AWS region names such as "us-east-1" (a string, comma-separated, or an array)'
        if isinstance(value, list):
            names = self.string_list(value, parts, "AWS region names")
        else:
            names = [self.string(value, parts, expected)]
        try:
            return parse_regions(names if isinstance(value, list) else names[0])
        except ValueError as err:
            raise self.fail(parts, expected, got_text=str(err)) from None

    def timezone(self, value: object, parts: tuple[str | int, ...]) -> str:
        expected = 'an IANA timezone name such as "UTC" or "Europe/Berlin"'
        name = self.string(value, parts, expected)
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(parts, expected, name) from None
        return name

    def price(self, value: object, parts: tuple[str | int, ...]) -> Price:
        table = self.table(value, parts)
        known = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
        self.warn_unknown(table, known, parts)
        amounts: dict[str, float | None] = {}
        for name in known:
            if name not in table:
                if name in ("input_per_mtok", "output_per_mtok"):
                    raise self.fail((*parts, name), "a price in USD per million tokens (required)")
                amounts[name] = None
                continue
            amounts[name] = self.number(
                table[name], (*parts, name), minimum=0, unit=" (USD per million tokens)"
            )
        return Price(
            input_per_mtok=cast(float, amounts["input_per_mtok"]),
            output_per_mtok=cast(float, amounts["output_per_mtok"]),
            cache_read_per_mtok=amounts["cache_read_per_mtok"],
            cache_write_per_mtok=amounts["cache_write_per_mtok"],
        )

    def budget(self, value: object, parts: tuple[str | int, ...]) -> BudgetSpec:
        table = self.table(value, parts)
        known = ("name", "models", "period", "limit_usd", "limit_tokens", "source", "warn_at")
        self.warn_unknown(table, known, parts)
        if "name" not in table:
            raise self.fail((*parts, "name"), "a budget name (required)")
        name = self.string(table["name"], (*parts, "name"))
        models = None
        if "models" in table:
            models = tuple(
                self.string_list(table["models"], (*parts, "models"), "model globs", glob=True)
            )
            if not models:
                raise self.fail(
                    (*parts, "models"), "at least one model glob (omit the key for all models)"
                )
        period = table.get("period")
        if period not in PERIODS:
            required = "" if "period" in table else " (required)"
            raise self.fail((*parts, "period"), "one of " + ", ".join(PERIODS) + required, period)
        has_usd, has_tokens = "limit_usd" in table, "limit_tokens" in table
        if has_usd == has_tokens:
            raise self.fail(
                (*parts, "limit_usd") if has_usd else parts,
                "exactly one of limit_usd or limit_tokens",
                got_text="both" if has_usd else "neither",
            )
        limit_usd = limit_tokens = None
        if has_usd:
            limit_usd = self.number(
                table["limit_usd"],
                (*parts, "limit_usd"),
                minimum=0,
                exclusive_minimum=True,
                unit=" (USD)",
            )
        else:
            raw = table["limit_tokens"]
            if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                raise self.fail(
                    (*parts, "limit_tokens"), "a whole number of tokens greater than 0", raw
                )
            limit_tokens = raw
        source = table.get("source", "auto")
        if source not in BUDGET_SOURCES:
            raise self.fail((*parts, "source"), "one of " + ", ".join(BUDGET_SOURCES), source)
        warn_at = DEFAULT_WARN_AT
        if "warn_at" in table:
            raw_levels = table["warn_at"]
            if not isinstance(raw_levels, list):
                raise self.fail(
                    (*parts, "warn_at"), "an array of fractions such as [0.5, 0.8, 1.0]", raw_levels
                )
            warn_at = tuple(
                sorted(
                    {
                        self.number(
                            level,
                            (*parts, "warn_at", index),
                            minimum=0,
                            maximum=10,
                            exclusive_minimum=True,
                            unit=" (a fraction of the limit)",
                        )
                        for index, level in enumerate(raw_levels)
                    }
                )
            )
        return BudgetSpec(
            name=name,
            period=period,
            limit_usd=limit_usd,
            limit_tokens=limit_tokens,
            models=models,
            source=source,
            warn_at=warn_at,
        )


def _effective_regions(
    values: Mapping[str, object], provenance: Mapping[str, Origin]
) -> tuple[str, ...]:
    """The regions to poll: --region (one or a comma-separated list) wins; else the file's
    ``sources.regions``; else its ``sources.region`` (which may hold a comma-separated list)."""
    region = cast("str | None", values.get("sources.region"))
    listed = cast(list[str], values.get("sources.regions") or [])
    origin = provenance.get("sources.region")
    if region and ((origin is not None and origin.kind == "flag") or not listed):
        return tuple(region.split(","))
    return tuple(listed)


def _show_got(value: object) -> str:
    if isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Settings that are one value each (and may come from any layer), with their validators.
_SCALARS: dict[str, Callable[[_Checker, object, tuple[str | int, ...]], object]] = {
    "sources.logs": lambda c, v, p: c.string_list(v, p, "paths or globs"),
    "sources.cloudwatch": lambda c, v, p: c.boolean(v, p),
    "sources.quotas": lambda c, v, p: c.boolean(v, p),
    "sources.region": lambda c, v, p: ",".join(c.regions(v, p)) or None,
    "sources.regions": lambda c, v, p: c.regions(v, p),
    "sources.all_regions": lambda c, v, p: c.boolean(v, p),
    "sources.mantle": lambda c, v, p: c.boolean(v, p),
    "sources.linked_accounts": lambda c, v, p: c.boolean(v, p),
    "sources.profile": lambda c, v, p: c.string(v, p, "an AWS profile name"),
    "sources.endpoint_url": lambda c, v, p: c.string(v, p, "a URL"),
    "sources.interval_s": lambda c, v, p: c.number(
        v, p, minimum=MIN_INTERVAL_S, maximum=_MAX_SECONDS, unit=" (seconds)"
    ),
    "sources.app_metrics_interval_s": lambda c, v, p: c.number(
        v, p, minimum=MIN_APP_METRICS_INTERVAL_S, maximum=_MAX_SECONDS, unit=" (seconds)"
    ),
    "sources.billing": lambda c, v, p: c.boolean(v, p),
    "sources.billing_refresh_h": lambda c, v, p: c.number(
        v, p, minimum=MIN_BILLING_REFRESH_H, maximum=31 * 24, unit=" (hours)"
    ),
    "sources.fleet": lambda c, v, p: c.boolean(v, p),
    "sources.log_groups": lambda c, v, p: c.string_list(v, p, "CloudWatch Logs group names"),
    "sources.fleet_interval_s": lambda c, v, p: c.number(
        v, p, minimum=MIN_FLEET_INTERVAL_S, maximum=_MAX_SECONDS, unit=" (seconds)"
    ),
    "sources.live_tail": lambda c, v, p: c.boolean(v, p),
    "ui.refresh_s": lambda c, v, p: c.number(
        v, p, minimum=MIN_REFRESH_S, maximum=MAX_REFRESH_S, unit=" (seconds)"
    ),
    "ui.theme": lambda c, v, p: c.string(v, p, "a theme name"),
    "tokenizer": lambda c, v, p: c.string(v, p, "a tokenizer name or tokenizer.json path"),
    "timezone": lambda c, v, p: c.timezone(v, p),
    "models": lambda c, v, p: c.string_list(v, p, "model ids"),
    "on_threshold": lambda c, v, p: c.string_list(v, p, "command arguments (argv)"),
    "export.prometheus_port": lambda c, v, p: c.port(v, p),
    "export.prometheus_host": lambda c, v, p: c.string(v, p, "a host name or IP address"),
}
_SCALAR_DEFAULTS: dict[str, object] = {
    "sources.cloudwatch": True,
    "sources.quotas": True,
    "sources.region": None,
    "sources.regions": [],
    "sources.all_regions": False,
    "sources.mantle": True,
    "sources.linked_accounts": False,
    "sources.profile": None,
    "sources.endpoint_url": None,
    "sources.interval_s": DEFAULT_INTERVAL_S,
    "sources.app_metrics_interval_s": DEFAULT_APP_METRICS_INTERVAL_S,
    "sources.billing": False,
    "sources.billing_refresh_h": DEFAULT_BILLING_REFRESH_H,
    "sources.fleet": True,
    "sources.log_groups": [],
    "sources.fleet_interval_s": DEFAULT_FLEET_INTERVAL_S,
    "sources.live_tail": False,
    "ui.refresh_s": DEFAULT_REFRESH_S,
    "ui.theme": DEFAULT_THEME,
    "tokenizer": None,
    "timezone": DEFAULT_TIMEZONE,
    "models": [],
    "on_threshold": None,
    "export.prometheus_port": None,
    "export.prometheus_host": DEFAULT_PROMETHEUS_HOST,
}
_TABLES = ("sources", "ui", "export")
_TOP_LEVEL = (
    "sources",
    "ui",
    "export",
    "keys",
    "tokenizer",
    "timezone",
    "pricing",
    "profile_multipliers",
    "budgets",
    "on_threshold",
    "models",
    "quotas",
    "burndown",
    "billing",
)
# Flags the CLI may pass in ``cli_overrides`` (key path -> the flag, named in messages and in
# ``config show``).
CLI_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "sources.logs": "--log",
        "sources.cloudwatch": "--no-cloudwatch",
        "sources.quotas": "--no-quotas",
        "sources.region": "--region",
        "sources.all_regions": "--all-regions",
        "sources.linked_accounts": "--linked-accounts",
        "sources.profile": "--profile",
        "sources.endpoint_url": "--endpoint-url",
        "sources.interval_s": "--poll-interval",
        "sources.billing": "--billing",
        "sources.fleet": "--no-fleet",
        "sources.log_groups": "--log-group",
        "sources.live_tail": "--live-tail",
        "ui.refresh_s": "--interval",
        "ui.theme": "--theme",
        "export.prometheus_port": "--prometheus",
        "export.prometheus_host": "--prometheus",
    }
)


@dataclass
class _Document:
    """The validated content of one file."""

    scalars: dict[str, object] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    pricing: dict[str, Price] = field(default_factory=dict)
    profile_multipliers: dict[str, float] = field(default_factory=dict)
    budgets: list[BudgetSpec] = field(default_factory=list)
    quotas: list[QuotaOverride] = field(default_factory=list)
    burndown: dict[str, float] = field(default_factory=dict)
    billing_usage_types: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


def _validate_document(data: Mapping[str, Any], checker: _Checker, base_dir: Path) -> _Document:
    doc = _Document(lines=dict(checker.lines))
    checker.warn_unknown(data, _TOP_LEVEL, ())
    for section in _TABLES:
        if section in data:
            table = checker.table(data[section], (section,))
            known = tuple(k.split(".", 1)[1] for k in _SCALARS if k.startswith(section + "."))
            checker.warn_unknown(table, known, (section,))
    for name, validate in _SCALARS.items():
        parts = tuple(name.split("."))
        container: Any = data
        for part in parts[:-1]:
            container = container.get(part, {})
        if parts[-1] in container:
            doc.scalars[name] = validate(checker, container[parts[-1]], parts)
    if "sources.logs" in doc.scalars:
        # A relative log path in a file is relative to that file, not to the current directory.
        doc.scalars["sources.logs"] = [
            str(base_dir / Path(entry).expanduser())
            if not Path(entry).expanduser().is_absolute()
            else str(Path(entry).expanduser())
            for entry in cast(list[str], doc.scalars["sources.logs"])
        ]
    if "keys" in data:
        keys = checker.table(data["keys"], ("keys",))
        for binding, key in keys.items():
            text = checker.string(key, ("keys", binding), 'a key such as "q" or "ctrl+r"')
            if any(ch.isspace() for ch in text):
                raise checker.fail(
                    ("keys", binding),
                    'key names without spaces, comma-separated ("q,escape")',
                    text,
                )
            doc.keys[binding] = text
    if "pricing" in data:
        pricing = checker.table(data["pricing"], ("pricing",))
        for pattern, price in pricing.items():
            problem = glob_problem(pattern)
            if problem:
                raise checker.fail(
                    ("pricing", pattern), f"a model id or glob as the key, without {problem}"
                )
            doc.pricing[pattern] = checker.price(price, ("pricing", pattern))
    if "profile_multipliers" in data:
        table = checker.table(data["profile_multipliers"], ("profile_multipliers",))
        for prefix, multiplier in table.items():
            problem = prefix_problem(prefix)
            if problem:
                raise checker.fail(("profile_multipliers", prefix), problem)
            doc.profile_multipliers[prefix] = checker.number(
                multiplier, ("profile_multipliers", prefix), minimum=0, exclusive_minimum=True
            )
    if "billing" in data:
        billing = checker.table(data["billing"], ("billing",))
        checker.warn_unknown(billing, ("usage_types",), ("billing",))
        if "usage_types" in billing:
            table = checker.table(billing["usage_types"], ("billing", "usage_types"))
            for usage_type, model_id in table.items():
                parts = ("billing", "usage_types", usage_type)
                problem = glob_problem(usage_type)
                if problem:
                    raise checker.fail(parts, f"a usage type or glob as the key, without {problem}")
                doc.billing_usage_types[usage_type] = checker.string(
                    model_id, parts, "the model id this usage type bills"
                )
    if "budgets" in data:
        budgets = data["budgets"]
        if not isinstance(budgets, list):
            raise checker.fail(("budgets",), "an array of tables ([[budgets]])", budgets)
        seen: set[str] = set()
        for index, entry in enumerate(budgets):
            spec = checker.budget(entry, ("budgets", index))
            if spec.name in seen:
                raise checker.fail(
                    ("budgets", index, "name"), "a name no other budget has", spec.name
                )
            seen.add(spec.name)
            doc.budgets.append(spec)
    _validate_quotas(data, checker, doc)
    return doc


_QUOTA_KEYS: tuple[str, ...] = (*MEASURES, *(f"{measure}_quota_code" for measure in MEASURES))


def _validate_quotas(data: Mapping[str, Any], checker: _Checker, doc: _Document) -> None:
    """``[quotas."<model id or glob>"]`` (tpm, rpm, tpd, *_quota_code) and ``[burndown]``."""
    if "quotas" in data:
        table = checker.table(data["quotas"], ("quotas",))
        for pattern, entry in table.items():
            parts: tuple[str | int, ...] = ("quotas", pattern)
            problem = glob_problem(pattern)
            if problem:
                raise checker.fail(parts, f"a model id or glob as the key, without {problem}")
            values = checker.table(entry, parts)
            checker.warn_unknown(values, _QUOTA_KEYS, parts)
            limits: dict[Measure, int] = {}
            codes: dict[Measure, str] = {}
            for measure in MEASURES:
                if measure in values:
                    raw = values[measure]
                    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                        raise checker.fail(
                            (*parts, measure),
                            "a whole number greater than 0 (per minute or day)",
                            raw,
                        )
                    limits[measure] = raw
                code_key = f"{measure}_quota_code"
                if code_key in values:
                    codes[measure] = checker.string(
                        values[code_key], (*parts, code_key), 'a quota code such as "L-8CE99163"'
                    )
            doc.quotas.append(QuotaOverride(pattern, limits, codes))
    if "burndown" in data:
        table = checker.table(data["burndown"], ("burndown",))
        for pattern, factor in table.items():
            problem = glob_problem(pattern)
            if problem:
                raise checker.fail(
                    ("burndown", pattern), f"a model id or glob as the key, without {problem}"
                )
            doc.burndown[pattern] = checker.number(
                factor, ("burndown", pattern), minimum=1, maximum=100, unit=" (output multiplier)"
            )


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            path=path, key_path="", expected="a readable TOML file", got=err.strerror or str(err)
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            path=path,
            key_path="",
            expected="UTF-8 text",
            got=f"a byte that is not UTF-8 ({err.reason})",
            line=raw[: err.start].count(b"\n") + 1,
        ) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(found.group(1)) if found else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        if found:
            reason += f" at column {found.group(2)}"
        key = ""
        if line is not None:
            # Name the key being written on the failing line when the text gets that far.
            on_line = [name for name, number in _scan_keys(text) if number == line]
            key = on_line[-1] if on_line else ""
        raise ConfigError(
            path=path, key_path=key, expected="valid TOML", got=reason, line=line
        ) from None


def resolve_config_path(explicit: Path | None, env: Mapping[str, str]) -> tuple[Path, Origin, bool]:
    """``(path, where it was named, must it exist)``: ``--config``, else ``$BEDROCK_TOP_CONFIG``,
    else the per-user default (which may be missing)."""
    if explicit is not None:
        return Path(explicit).expanduser(), Origin("flag", "--config"), True
    named = env.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser(), Origin("environment", CONFIG_ENV), True
    # default_config_path() reads the process environment; ``env`` may be another mapping.
    if CONFIG_ENV in os.environ:
        return Path(user_config_dir(APP_NAME)) / "config.toml", Origin("default"), False
    return default_config_path(), Origin("default"), False


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    cli_overrides: Mapping[str, object] = MappingProxyType({}),
) -> Config:
    """The effective configuration: defaults < file < environment < flags.

    ``cli_overrides`` maps key paths from :data:`CLI_FLAGS` to values; ``None`` means "flag not
    given". Raises :class:`ConfigError`.
    """
    file_path, path_origin, required = resolve_config_path(path, env)
    doc = _Document()
    warnings: list[str] = []
    loaded_from: Path | None = None
    if file_path.is_file() or required:
        if required and not file_path.exists():
            raise ConfigError(
                path=file_path,
                key_path="",
                expected=f"an existing configuration file (named by {path_origin.detail};"
                " `bedrock-top init-config` writes one)",
                got="no such file",
            )
        data, text = _read_toml(file_path)
        checker = _Checker(file_path, source_lines(text))
        doc = _validate_document(data, checker, file_path.parent)
        warnings = checker.warnings
        loaded_from = file_path

    values: dict[str, object] = dict(_SCALAR_DEFAULTS)
    values["sources.logs"] = [default_log_location()]
    provenance: dict[str, Origin] = {name: Origin("default") for name in _SCALARS}

    for name, value in doc.scalars.items():
        values[name] = value
        line = doc.lines.get(name)
        provenance[name] = Origin("file", f"{file_path}" + (f":{line}" if line else ""))

    log_env = env.get(LOG_ENV)
    # "-" sends the wrapper's records to standard output: there is no file here to follow.
    if log_env and log_env.strip() != "-":
        values["sources.logs"] = [str(Path(log_env).expanduser())]
        provenance["sources.logs"] = Origin("environment", LOG_ENV)

    for name, value in cli_overrides.items():
        if name not in CLI_FLAGS:
            raise ValueError(f"unknown configuration override {name!r}")
        if value is None:
            continue
        flag = CLI_FLAGS[name]
        checker = _Checker(None, {}, where=f"command line {flag}")
        values[name] = _SCALARS[name](checker, value, tuple(name.split(".")))
        provenance[name] = Origin("flag", flag)

    def from_file(*parts: str | int) -> Origin:
        line = _line_of(doc.lines, parts)
        return Origin("file", f"{file_path}" + (f":{line}" if line else ""))

    for binding in doc.keys:
        provenance[key_path("keys", binding)] = from_file("keys", binding)
    for pattern in doc.pricing:
        provenance[key_path("pricing", pattern)] = from_file("pricing", pattern)
    for prefix in doc.profile_multipliers:
        provenance[key_path("profile_multipliers", prefix)] = from_file(
            "profile_multipliers", prefix
        )
    for index, _spec in enumerate(doc.budgets):
        provenance[key_path("budgets", index)] = from_file("budgets", index)
    for usage_type in doc.billing_usage_types:
        name = key_path("billing", "usage_types", usage_type)
        provenance[name] = from_file("billing", "usage_types", usage_type)

    regions = _effective_regions(values, provenance)
    sources = SourcesConfig(
        logs=cast(list[str], values["sources.logs"]),
        cloudwatch=cast(bool, values["sources.cloudwatch"]),
        # The first region polled: what every source that reads one region reads.
        region=regions[0] if regions else None,
        profile=cast("str | None", values["sources.profile"]),
        endpoint_url=cast("str | None", values["sources.endpoint_url"]),
        interval_s=cast(float, values["sources.interval_s"]),
        app_metrics_interval_s=cast(float, values["sources.app_metrics_interval_s"]),
        quotas=cast(bool, values["sources.quotas"]),
        billing=cast(bool, values["sources.billing"]),
        billing_refresh_h=cast(float, values["sources.billing_refresh_h"]),
        fleet=cast(bool, values["sources.fleet"]),
        log_groups=list(cast(list[str], values["sources.log_groups"])),
        fleet_interval_s=cast(float, values["sources.fleet_interval_s"]),
        live_tail=cast(bool, values["sources.live_tail"]),
        regions=regions,
        all_regions=cast(bool, values["sources.all_regions"]),
        mantle=cast(bool, values["sources.mantle"]),
        linked_accounts=cast(bool, values["sources.linked_accounts"]),
    )
    for quota in doc.quotas:
        provenance[key_path("quotas", quota.pattern)] = from_file("quotas", quota.pattern)
    for pattern in doc.burndown:
        provenance[key_path("burndown", pattern)] = from_file("burndown", pattern)
    return Config(
        sources=sources,
        ui=UIConfig(
            refresh_s=cast(float, values["ui.refresh_s"]), theme=cast(str, values["ui.theme"])
        ),
        export=ExportConfig(
            prometheus_port=cast("int | None", values["export.prometheus_port"]),
            prometheus_host=cast(str, values["export.prometheus_host"]),
        ),
        keys=doc.keys,
        tokenizer=cast("str | None", values["tokenizer"]),
        timezone=cast(str, values["timezone"]),
        pricing=doc.pricing,
        profile_multipliers=doc.profile_multipliers,
        budgets=doc.budgets,
        on_threshold=cast("list[str] | None", values["on_threshold"]),
        models=cast(list[str], values["models"]),
        quotas=doc.quotas,
        burndown={**DEFAULT_BURNDOWN, **doc.burndown},
        billing_usage_types=doc.billing_usage_types,
        path=loaded_from,
        path_origin=path_origin,
        warnings=warnings,
        provenance=MappingProxyType(provenance),
    )


# --- writing --------------------------------------------------------------------------------


def write_config(
    path: Path, data: Mapping[str, Any], *, header: str = "", footer: str = ""
) -> None:
    """Write ``data`` as a fresh TOML file with tomli-w, atomically, following a symlink and
    keeping the file's permissions (see :mod:`monitor.config_write`). ``header`` and
    ``footer`` are comment lines placed around it."""
    write_text_atomically(path, header + tomli_w.dumps(dict(data)) + footer)


def starter_config() -> dict[str, Any]:
    """What ``bedrock-top init-config`` writes: the defaults, spelled out, ready to edit."""
    return {
        "timezone": DEFAULT_TIMEZONE,
        "sources": {
            "logs": [default_log_location()],
            "cloudwatch": True,
            "interval_s": DEFAULT_INTERVAL_S,
        },
        "ui": {"refresh_s": DEFAULT_REFRESH_S, "theme": DEFAULT_THEME},
    }


def save_budget_limit(
    path: Path,
    budget_name: str,
    *,
    limit_usd: float | None = None,
    limit_tokens: int | None = None,
) -> Path:
    """Set one budget's limit in the file at ``path`` (the screen's edit dialog).

    Exactly one of ``limit_usd`` and ``limit_tokens`` is given; the other kind is removed from
    that budget. The edit keeps the file's comments, order and formatting (tomlkit); the whole
    document is validated before it is written, so a bad value raises :class:`ConfigError` and
    leaves the file as it was. The previous text is kept beside the file as ``<name>.bak``.
    Returns the file written (the target of a symlinked configuration).
    """
    if (limit_usd is None) == (limit_tokens is None):
        raise ValueError("give exactly one of limit_usd, limit_tokens")
    _data, text = _read_toml(path)
    key, value = (
        ("limit_usd", float(limit_usd)) if limit_usd is not None else ("limit_tokens", limit_tokens)
    )
    try:
        new_text = set_budget_limit(text, budget_name, key, cast(float, value))
    except EditError as err:
        raise ConfigError(
            path=path, key_path=err.key_path, expected=err.expected, got="none"
        ) from None
    # Validate what will be written, pointing errors at the budget being edited.
    _validate_document(tomllib.loads(new_text), _Checker(path, source_lines(new_text)), path.parent)
    return write_text_atomically(path, new_text, backup=text)


# --- commands -------------------------------------------------------------------------------


def cmd_init_config(force: bool, path: Path | None) -> int:
    """``bedrock-top init-config [--force]``: write :func:`starter_config` to ``path`` (default:
    the per-user location). Refuses to overwrite an existing file without ``force`` (status 1)."""
    target = Path(path).expanduser() if path is not None else default_config_path()
    if target.exists() and not force:
        print(
            f"bedrock-top: {target} already exists; not overwriting it (use --force to replace)",
            file=sys.stderr,
        )
        return 1
    try:
        write_config(target, starter_config(), header=STARTER_HEADER, footer=STARTER_FOOTER)
    except OSError as err:
        print(f"bedrock-top: cannot write {target}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0


def effective_settings(config: Config) -> list[tuple[str, object, Origin]]:
    """Every effective value with its origin, in a stable order, as ``config show`` lists it."""
    prov = config.provenance
    default = Origin("default")
    rows: list[tuple[str, object, Origin]] = [
        ("timezone", config.timezone, prov.get("timezone", default)),
        ("tokenizer", config.tokenizer, prov.get("tokenizer", default)),
        ("models", list(config.models), prov.get("models", default)),
        ("on_threshold", config.on_threshold, prov.get("on_threshold", default)),
    ]
    for name in (
        "logs",
        "cloudwatch",
        "quotas",
        "region",
        "regions",
        "all_regions",
        "mantle",
        "linked_accounts",
        "profile",
        "endpoint_url",
        "interval_s",
        "app_metrics_interval_s",
        "billing",
        "billing_refresh_h",
        "fleet",
        "log_groups",
        "fleet_interval_s",
        "live_tail",
    ):
        rows.append(
            (f"sources.{name}", getattr(config.sources, name), prov.get(f"sources.{name}", default))
        )
    for name in ("refresh_s", "theme"):
        rows.append((f"ui.{name}", getattr(config.ui, name), prov.get(f"ui.{name}", default)))
    for name in ("prometheus_port", "prometheus_host"):
        rows.append(
            (f"export.{name}", getattr(config.export, name), prov.get(f"export.{name}", default))
        )
    for binding, key in sorted(config.keys.items()):
        rows.append((key_path("keys", binding), key, prov[key_path("keys", binding)]))
    for prefix, multiplier in sorted(config.profile_multipliers.items()):
        name = key_path("profile_multipliers", prefix)
        rows.append((name, multiplier, prov[name]))
    for pattern, price in sorted(config.pricing.items()):
        name = key_path("pricing", pattern)
        shown = {k: v for k, v in vars_of(price).items() if v is not None}
        rows.append((name, shown, prov[name]))
    for index, spec in enumerate(config.budgets):
        name = key_path("budgets", index)
        rows.append((name, budget_to_toml(spec), prov[name]))
    for quota in config.quotas:
        name = key_path("quotas", quota.pattern)
        table: dict[str, object] = {str(m): limit for m, limit in quota.limits.items()}
        table.update({f"{m}_quota_code": code for m, code in quota.quota_codes.items()})
        rows.append((name, table, prov.get(name, default)))
    for pattern, factor in sorted(config.burndown.items()):
        name = key_path("burndown", pattern)
        rows.append((name, factor, prov.get(name, default)))
    for usage_type, model_id in sorted(config.billing_usage_types.items()):
        name = key_path("billing", "usage_types", usage_type)
        rows.append((name, model_id, prov[name]))
    return rows


def vars_of(price: Price) -> dict[str, float | None]:
    return {
        "input_per_mtok": price.input_per_mtok,
        "output_per_mtok": price.output_per_mtok,
        "cache_read_per_mtok": price.cache_read_per_mtok,
        "cache_write_per_mtok": price.cache_write_per_mtok,
    }


def budget_to_toml(spec: BudgetSpec) -> dict[str, Any]:
    """A budget as its ``[[budgets]]`` table."""
    table: dict[str, Any] = {"name": spec.name}
    if spec.models is not None:
        table["models"] = list(spec.models)
    table["period"] = spec.period
    if spec.limit_usd is not None:
        table["limit_usd"] = spec.limit_usd
    else:
        table["limit_tokens"] = spec.limit_tokens
    table["source"] = spec.source
    table["warn_at"] = list(spec.warn_at)
    return table


def _inline(value: object) -> str:
    """A value as TOML-like inline text for ``config show`` (``(not set)`` for none)."""
    if value is None:
        return "(not set)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key_path(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def cmd_config_show(config_path: Path | None, as_json: bool = False) -> int:
    """``bedrock-top config show [--json]``: each effective value and where it came from.

    Exit status 2, with the error on stderr, when the configuration is invalid."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(f"bedrock-top: invalid configuration: {err}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"bedrock-top: warning: {warning}", file=sys.stderr)
    rows = effective_settings(config)
    if as_json:
        document = {
            "file": None if config.path is None else str(config.path),
            "file_named_by": str(config.path_origin),
            "prices_as_of": PRICES_AS_OF,
            "warnings": list(config.warnings),
            "settings": {
                name: {"value": value, "source": origin.kind, "detail": origin.detail}
                for name, value, origin in rows
            },
        }
        print(json.dumps(document, indent=2))
        return 0
    if config.path is None:
        looked_at = resolve_config_path(config_path, os.environ)[0]
        print(f"# no configuration file (looked for {looked_at})")
    else:
        named_by = config.path_origin.detail or "the default location"
        print(f"# file: {config.path} (named by {named_by})")
    print(f"# built-in prices dated {PRICES_AS_OF}; see docs/pricing.md")
    shown = [(name, _inline(value), str(origin)) for name, value, origin in rows]
    width = min(60, max(len(name) + 3 + len(text) for name, text, _ in shown))
    for name, text, origin in shown:
        print(f"{f'{name} = {text}':<{width}}  # {origin}")
    return 0


def subcommand_main(name: str, argv: list[str]) -> int:
    """``bedrock-top init-config [--force] [--config FILE]`` and
    ``bedrock-top config show [--json] [--config FILE]``; status 2 on bad arguments."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            print(f"bedrock-top {name}: {message}", file=sys.stderr)
            raise SystemExit(2)

    parser = _Parser(prog=f"bedrock-top {name}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    if name == "init-config":
        parser.add_argument("--force", action="store_true", help="replace an existing file")
    elif name == "config":
        parser.add_argument("action", choices=("show",))
        parser.add_argument("--json", action="store_true", help="as JSON")
    else:
        raise ValueError(f"not a configuration sub-command: {name!r}")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    if name == "init-config":
        return cmd_init_config(args.force, args.config)
    return cmd_config_show(args.config, as_json=args.json)

"""The bill: Cost Explorer's daily Bedrock lines, read as models, token kinds and prices. Pure.

Cost Explorer groups Amazon Bedrock's cost by usage type, such as
``USE1-Claude3Haiku-input-tokens``: a region code, the model as AWS names it, and a token kind.
:func:`parse_usage_type` splits one into those parts; the model part is mapped to a model id
bedrock-top sees by the configuration's ``[billing.usage_types]`` table first, else by the one
matcher of AWS's model names (:func:`monitor.model_names.match_model`). Unmatched usage types are
kept under ``unmatched``, never dropped: the month-to-date sum is always every line's cost.

From cost and quantity per usage type, :func:`learned_prices` works out the account's effective
price per million tokens of each token kind of each matched model.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, NamedTuple

from monitor.formatting import iso_utc
from monitor.model_names import match_model, match_names
from monitor.pricing import Price

TokenKind = Literal["input", "output", "cache_read", "cache_write", "other"]
TOKEN_KINDS: Final[tuple[TokenKind, ...]] = ("input", "output", "cache_read", "cache_write")
UNMATCHED: Final = "unmatched"

# AWS's billing region codes: USE1, USW2, EUC1, APN1, APS2, CAN1, SAE1, UGW1, ... (all capitals
# and digits, which no model part is).
_REGION: Final = re.compile(r"^(?P<region>[A-Z]{2,4}[0-9]{0,2})-(?P<rest>.+)$")
# Token kinds at the end of a usage type; a tier or variant may follow (mantle: "-tokens-<tier>").
_KINDS: Final[tuple[tuple[re.Pattern[str], TokenKind], ...]] = (
    (re.compile(r"-cache-read-input-token-count(?P<tail>-.*)?$", re.I), "cache_read"),
    (re.compile(r"-cache-write-input-token-count(?P<tail>-.*)?$", re.I), "cache_write"),
    (re.compile(r"-input-tokens?(?P<tail>-.*)?$", re.I), "input"),
    (re.compile(r"-output-tokens?(?P<tail>-.*)?$", re.I), "output"),
)
_MANTLE: Final = re.compile(r"-mantle$", re.I)


@dataclass(frozen=True, slots=True)
class UsageType:
    """One usage type, split: ``USE1-Claude3Haiku-input-tokens`` -> region ``USE1``, model part
    ``Claude3Haiku``, kind ``input``."""

    usage_type: str
    region_code: str | None
    model_part: str | None  # None for "other" kinds, whose model part cannot be told apart
    kind: TokenKind
    mantle: bool = False
    variant: str | None = None  # what follows the token kind (a service tier), if anything


def parse_usage_type(usage_type: str) -> UsageType:
    """Split a usage type into region code, model part and token kind.

    >>> parse_usage_type("USE1-Claude3Haiku-cache-read-input-token-count").kind
    'cache_read'
    >>> parse_usage_type("EUC1-ProvisionedThroughput-Hours").kind
    'other'
    """
    text = usage_type.strip()
    region: str | None = None
    rest = text
    found = _REGION.match(text)
    if found:
        region, rest = found.group("region"), found.group("rest")
    for pattern, kind in _KINDS:
        match = pattern.search(rest)
        if match is None or match.start() == 0:
            continue
        model_part = rest[: match.start()]
        mantle = bool(_MANTLE.search(model_part))
        if mantle:
            model_part = _MANTLE.sub("", model_part)
        tail = (match.group("tail") or "").lstrip("-") or None
        if not model_part:
            break
        return UsageType(text, region, model_part, kind, mantle, tail)
    return UsageType(text, region, None, "other")


class BillingRow(NamedTuple):
    """One usage type on one day, as Cost Explorer reports it. A tuple: a month of an account
    with many usage types is tens of thousands of them, built at each start from the cache."""

    day: str  # ISO date (UTC), the start of the day's TimePeriod
    usage_type: str
    usd: float  # UnblendedCost
    quantity: float  # UsageQuantity, in ``unit``
    unit: str = ""


@dataclass(frozen=True, slots=True)
class BillingData:
    """What one fetch returned (or the cache kept): every row of the days it covered."""

    fetched_at: float  # POSIX time of the fetch
    start: str  # ISO date, inclusive
    end: str  # ISO date, exclusive
    rows: tuple[BillingRow, ...]
    pages: int = 1  # requests the fetch took (each is billed)
    estimated_days: tuple[str, ...] = ()  # days Cost Explorer marked as still estimated

    def as_json(self) -> dict[str, Any]:
        return {
            "fetched_at": self.fetched_at,
            "start": self.start,
            "end": self.end,
            "pages": self.pages,
            "estimated_days": list(self.estimated_days),
            "rows": [[r.day, r.usage_type, r.usd, r.quantity, r.unit] for r in self.rows],
        }


@functools.lru_cache(maxsize=256)
def tokens_per_unit(unit: str) -> float:
    """Tokens in one unit of UsageQuantity. Bedrock reports token usage types in tokens; a unit
    that names thousands or millions is scaled, so a learned price is always per token."""
    text = unit.strip().lower().replace(",", "")
    if re.search(r"(^|[^a-z])(1m|million|mtok)", text):
        return 1_000_000.0
    if re.search(r"(^|[^a-z])(1k|1000|thousand|k-?tokens?|ktok)", text):
        return 1_000.0
    return 1.0


@dataclass(frozen=True, slots=True)
class UsageTypeLine:
    """One usage type over the fetched days: the report's ``usage_types`` entries."""

    usage_type: str
    model_id: str | None
    kind: TokenKind
    usd: float
    quantity: float
    unit: str
    region_code: str | None

    @property
    def tokens(self) -> float:
        return self.quantity * tokens_per_unit(self.unit) if self.kind != "other" else 0.0


class UsageTypeMap:
    """Usage type -> model id: the configuration's table (exact keys, then globs in the order
    written), else the shared matcher over the model ids bedrock-top sees."""

    def __init__(self, model_ids: Iterable[str], configured: Mapping[str, str] | None = None):
        self._ids = list(dict.fromkeys(model_ids))
        self._configured = dict(configured or {})
        self._cache: dict[str, str | None] = {}
        self._parts: dict[str, str] | None = None

    def prepare(self, model_parts: Iterable[str]) -> None:
        """Match every model part of the bill at once, both ways (``match_names``): a usage type
        of a model not seen does not take the id of a neighbour that is."""
        self._parts = match_names(model_parts, self._ids)
        self._cache.clear()

    def model_for(self, parsed: UsageType) -> str | None:
        name = parsed.usage_type
        if name in self._cache:
            return self._cache[name]
        found = self._configured.get(name)
        if found is None:
            found = next(
                (model for key, model in self._configured.items() if fnmatchcase(name, key)), None
            )
        if found is None and parsed.model_part is not None:
            if self._parts is not None and parsed.model_part in self._parts:
                found = self._parts[parsed.model_part]
            elif self._parts is None:
                found = match_model(parsed.model_part, self._ids)
        self._cache[name] = found
        return found


@dataclass(frozen=True, slots=True)
class BillingSummary:
    """The bill for the days fetched, read as models."""

    fetched_at: float
    start: str  # ISO date, the first day fetched
    through: str | None  # the last day with any cost or usage
    month_to_date_usd: float  # every usage type's cost, matched or not
    by_model: dict[str, float]  # model id -> USD, plus UNMATCHED
    lines: tuple[UsageTypeLine, ...]  # one per usage type, most expensive first
    daily: dict[str, dict[str | None, tuple[float, float]]]  # day -> model -> (usd, in+out tok)
    estimated_days: tuple[str, ...] = ()

    @property
    def unmatched(self) -> tuple[UsageTypeLine, ...]:
        return tuple(line for line in self.lines if line.model_id is None)

    def as_report(self) -> dict[str, Any]:
        """The report's ``billing`` object (field names are a contract: docs/report.md)."""
        return {
            "month_to_date_usd": round(self.month_to_date_usd, 6),
            "through": self.through,
            "fetched_at": iso_utc(self.fetched_at),
            "by_model": {model: round(usd, 6) for model, usd in self.by_model.items()},
            "usage_types": [
                {
                    "usage_type": line.usage_type,
                    "model_id": line.model_id,
                    "kind": line.kind,
                    "usd": round(line.usd, 6),
                    "quantity": line.quantity,
                }
                for line in self.lines
            ],
        }


def summarize(data: BillingData, mapping: UsageTypeMap) -> BillingSummary:
    """Per usage type and per model over every day fetched."""
    per_type: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    daily: dict[str, dict[str | None, tuple[float, float]]] = {}
    through: str | None = None
    parsed_cache: dict[str, UsageType] = {}
    # Per usage type, once: its model and whether its quantity counts as input + output tokens.
    read_as: dict[str, tuple[str | None, bool]] = {}
    for usage_type in dict.fromkeys(row.usage_type for row in data.rows):
        parsed_cache[usage_type] = parse_usage_type(usage_type)
    mapping.prepare(
        parsed.model_part for parsed in parsed_cache.values() if parsed.model_part is not None
    )
    for row in data.rows:
        known = read_as.get(row.usage_type)
        if known is None:
            parsed = parsed_cache[row.usage_type]
            known = read_as[row.usage_type] = (
                mapping.model_for(parsed),
                parsed.kind in ("input", "output"),
            )
            per_type[row.usage_type] = [0.0, 0.0]
            units[row.usage_type] = row.unit
        model, counts_tokens = known
        totals = per_type[row.usage_type]
        totals[0] += row.usd
        totals[1] += row.quantity
        if (row.usd or row.quantity) and (through is None or row.day > through):
            through = row.day
        tokens = row.quantity * tokens_per_unit(row.unit) if counts_tokens else 0.0
        day = daily.setdefault(row.day, {})
        usd, tok = day.get(model, (0.0, 0.0))
        day[model] = (usd + row.usd, tok + tokens)
    lines = []
    by_model: dict[str, float] = {}
    for usage_type, (usd, quantity) in per_type.items():
        parsed = parsed_cache[usage_type]
        model = mapping.model_for(parsed)
        lines.append(
            UsageTypeLine(
                usage_type, model, parsed.kind, usd, quantity, units[usage_type], parsed.region_code
            )
        )
        key = UNMATCHED if model is None else model
        by_model[key] = by_model.get(key, 0.0) + usd
    lines.sort(key=lambda line: (-line.usd, line.usage_type))
    ordered = dict(sorted(by_model.items(), key=lambda item: (item[0] == UNMATCHED, -item[1])))
    ordered.setdefault(UNMATCHED, 0.0)
    return BillingSummary(
        fetched_at=data.fetched_at,
        start=data.start,
        through=through,
        month_to_date_usd=sum(row.usd for row in data.rows),
        by_model=ordered,
        lines=tuple(lines),
        daily=daily,
        estimated_days=data.estimated_days,
    )


@dataclass(frozen=True, slots=True)
class LearnedPrice:
    """A model's effective prices from the bill, USD per million tokens, with their date."""

    model_id: str
    price: Price
    as_of: str  # the last day of the bill they were learned from
    usage_types: tuple[str, ...]


def learned_prices(summary: BillingSummary) -> dict[str, LearnedPrice]:
    """Cost / tokens per token kind of each matched model. A model is learned only when both its
    input and output prices are (a price needs both); cache prices where the bill has them."""
    sums: dict[str, dict[TokenKind, list[float]]] = {}
    names: dict[str, list[str]] = {}
    for line in summary.lines:
        if line.model_id is None or line.kind == "other" or line.tokens <= 0:
            continue
        kinds = sums.setdefault(line.model_id, {})
        usd_tokens = kinds.setdefault(line.kind, [0.0, 0.0])
        usd_tokens[0] += line.usd
        usd_tokens[1] += line.tokens
        names.setdefault(line.model_id, []).append(line.usage_type)
    learned: dict[str, LearnedPrice] = {}
    as_of = summary.through or summary.start
    for model_id, kinds in sums.items():

        def per_mtok(kind: TokenKind, kinds: dict[TokenKind, list[float]] = kinds) -> float | None:
            usd_tokens = kinds.get(kind)
            if usd_tokens is None or usd_tokens[1] <= 0:
                return None
            return usd_tokens[0] / usd_tokens[1] * 1_000_000

        input_price, output_price = per_mtok("input"), per_mtok("output")
        if input_price is None or output_price is None:
            continue
        price = Price(input_price, output_price, per_mtok("cache_read"), per_mtok("cache_write"))
        learned[model_id] = LearnedPrice(
            model_id, price, as_of, tuple(sorted(set(names[model_id])))
        )
    return learned

"""Quota headroom: Bedrock's per-model quotas matched to model ids, and usage against them.

Pure: no I/O and no clock reads. The Service Quotas source (``monitor/sources/service_quotas.py``)
fetches the quotas; this module reads what they mean and measures each model's use from the
stores.

A Bedrock runtime quota is per model, region, measure and kind of endpoint. Its name carries all
of that: "Cross-region model inference tokens per minute for Anthropic Claude Haiku 4.5" is the
tokens-per-minute quota of the cross-region profiles (``us.``, ``eu.``, ...) of Claude Haiku 4.5.
The kind and the measure are read here; the model's part goes to the one name matcher
(:func:`monitor.model_names.match_names`) against the base ids of the models seen with that kind.

Usage, per model and minute (``docs/quotas.md``):

* from CloudWatch (account-wide): ``EstimatedTPMQuotaUsage`` for tokens (burndown and cache writes
  included), ``Invocations + InvocationThrottles`` for requests;
* from the usage log (this host only, an estimate): input + cache-write + output x burndown for
  tokens, every call for requests.

The two are never added: each measure of each model says which one it shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final, Literal

from monitor.budgets import LevelTracker
from monitor.cloudwatch_store import (
    INVOCATIONS,
    SUM,
    THROTTLES,
    TPM_QUOTA_USAGE,
    CloudWatchStore,
)
from monitor.model_names import match_names, name_words
from monitor.pricing import split_model_id
from monitor.store import CACHE_WRITE, INPUT, OUTPUT, REQUESTS, Store

Measure = Literal["tpm", "rpm", "tpd"]
Kind = Literal["on-demand", "cross-region", "global"]
LimitOrigin = Literal["applied", "default", "config"]
UsageSource = Literal["cloudwatch", "local-estimate"]

MEASURES: Final[tuple[Measure, ...]] = ("tpm", "rpm", "tpd")
MEASURE_WORDS: Final[Mapping[Measure, str]] = {
    "tpm": "tokens per minute",
    "rpm": "requests per minute",
    "tpd": "tokens per day",
}
SERVICE_CODE: Final = "bedrock"
# The gauge's colours; crossing the last two rings the bell.
GAUGE_LEVELS: Final = (0.5, 0.8, 1.0)
ALARM_LEVELS: Final = (0.8, 1.0)
PEAK_MINUTES: Final = 5
# CloudWatch publishes minutes late: its newest minute is looked for this far back.
CLOUDWATCH_LOOKBACK_MINUTES: Final = 15
# The quota "day" period the CloudWatch source totals EstimatedTPMQuotaUsage over.
QUOTA_DAY_PERIOD: Final = "day"

# Output tokens count this many times against TPM and TPD (AWS: "token burndown"). 5x for Claude
# Opus 4 / Sonnet 4 and later; 1x for other models. Globs on the base model id; configurable
# (``[burndown]``), since AWS changes it with new models.
DEFAULT_BURNDOWN: Final[Mapping[str, float]] = {
    "anthropic.claude-opus-4*": 5.0,
    "anthropic.claude-sonnet-4*": 5.0,
    "anthropic.claude-haiku-4*": 5.0,
    "anthropic.claude-3-7-sonnet*": 5.0,
}

_KINDS: Final[tuple[tuple[str, Kind], ...]] = (
    # Longest first: "Global cross-region" must not be read as "cross-region".
    ("global cross-region ", "global"),
    ("cross-region ", "cross-region"),
    ("on-demand ", "on-demand"),
)
_MEASURE_RE: Final = re.compile(
    r"\b(?:max\s+)?(tokens per minute|requests per minute|tokens per day)\b", re.IGNORECASE
)
_MEASURE_OF: Final[Mapping[str, Measure]] = {text: m for m, text in MEASURE_WORDS.items()}
# Words allowed between the kind and the measure. Anything else ("batch", "latency-optimized",
# "provisioned", "concurrent") is another quota that the runtime calls seen here do not spend.
_FILLER_WORDS: Final = frozenset({"model", "inference", "invoke", "converse", "and", "api"})


@dataclass(frozen=True, slots=True)
class ServiceQuota:
    """One quota as Service Quotas lists it."""

    code: str  # QuotaCode, e.g. "L-8CE99163"
    name: str  # QuotaName
    value: float
    applied: bool = True  # from ListServiceQuotas (False: AWS's default value)


@dataclass(frozen=True, slots=True)
class QuotaName:
    """What a quota's name says."""

    kind: Kind
    measure: Measure
    model_name: str  # the model's part, e.g. "Anthropic Claude Haiku 4.5"


def parse_quota_name(name: str) -> QuotaName | None:
    """The kind, measure and model of a runtime quota's name; None for any other quota.

    >>> parse_quota_name("On-demand model inference tokens per minute for Anthropic Claude 3 Haiku")
    QuotaName(kind='on-demand', measure='tpm', model_name='Anthropic Claude 3 Haiku')
    """
    text = " ".join(name.split())
    lowered = text.lower()
    kind: Kind | None = None
    rest = ""
    for prefix, candidate in _KINDS:
        if lowered.startswith(prefix):
            kind, rest = candidate, text[len(prefix) :]
            break
    if kind is None:
        return None
    measure = _MEASURE_RE.search(rest)
    if measure is None:
        return None
    between = name_words(rest[: measure.start()])
    if not between <= _FILLER_WORDS:
        return None
    tail = rest[measure.end() :].strip()
    if not tail.lower().startswith("for "):
        return None
    model_name = tail[4:].strip()
    if not model_name:
        return None
    return QuotaName(kind, _MEASURE_OF[measure.group(1).lower()], model_name)


def model_kind(model_id: str) -> tuple[Kind, str]:
    """``(kind of endpoint, base model id)`` of an id as callers pass it."""
    prefix, base = split_model_id(model_id)
    if not prefix:
        return "on-demand", base
    if prefix == "global.":
        return "global", base
    return "cross-region", base


@dataclass(frozen=True, slots=True)
class QuotaOverride:
    """A ``[quotas."<model id or glob>"]`` table: limits or quota codes set by hand."""

    pattern: str
    limits: Mapping[Measure, int] = field(default_factory=dict)
    quota_codes: Mapping[Measure, str] = field(default_factory=dict)

    def applies_to(self, model_id: str) -> bool:
        return model_id == self.pattern or fnmatchcase(model_id, self.pattern)


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """One model's limit for one measure, and where it came from."""

    measure: Measure
    limit: float
    kind: Kind
    quota_code: str | None = None
    quota_name: str | None = None
    origin: LimitOrigin = "applied"


def merge_quotas(
    applied: Iterable[ServiceQuota], defaults: Iterable[ServiceQuota]
) -> list[ServiceQuota]:
    """The applied value of every quota, AWS's default where no value is applied."""
    merged: dict[str, ServiceQuota] = {}
    for quota in defaults:
        merged[quota.code] = ServiceQuota(quota.code, quota.name, quota.value, applied=False)
    for quota in applied:
        if quota.value is not None and math.isfinite(quota.value):
            merged[quota.code] = quota
    return sorted(merged.values(), key=lambda quota: quota.code)


def assign_quotas(
    quotas: Sequence[ServiceQuota],
    model_ids: Iterable[str],
    overrides: Sequence[QuotaOverride] = (),
) -> dict[str, dict[Measure, QuotaLimit]]:
    """Per model id seen: its limit per measure. Configured overrides win over the match; a
    quota named by its code in an override is taken whatever its name says."""
    ids = list(dict.fromkeys(model_ids))
    by_code = {quota.code: quota for quota in quotas}
    # (kind, measure) -> model words -> the quota for them (the lowest value if AWS lists the
    # same model twice, as it does while renaming quotas: the stricter limit is the safe one).
    groups: dict[tuple[Kind, Measure], dict[frozenset[str], tuple[ServiceQuota, str]]] = {}
    for quota in quotas:
        parsed = parse_quota_name(quota.name)
        if parsed is None:
            continue
        words = name_words(parsed.model_name)
        slot = groups.setdefault((parsed.kind, parsed.measure), {})
        held = slot.get(words)
        if held is None or quota.value < held[0].value:
            slot[words] = (quota, parsed.model_name)
    kinds = {model_id: model_kind(model_id) for model_id in ids}
    result: dict[str, dict[Measure, QuotaLimit]] = {model_id: {} for model_id in ids}
    for (kind, measure), named in groups.items():
        bases = [base for k, base in kinds.values() if k == kind]
        if not bases:
            continue
        names = {model_name: quota for quota, model_name in named.values()}
        for model_name, base in match_names(names, bases).items():
            quota = names[model_name]
            for model_id, (k, b) in kinds.items():
                if k == kind and b == base:
                    result[model_id][measure] = _limit_of(quota, measure, kind)
    for model_id in ids:
        kind = kinds[model_id][0]
        for measure in MEASURES:
            override = _override_for(overrides, model_id, measure)
            if override is None:
                continue
            code = override.quota_codes.get(measure)
            coded = by_code.get(code) if code else None
            if measure in override.limits:
                result[model_id][measure] = QuotaLimit(
                    measure, float(override.limits[measure]), kind, code, None, "config"
                )
            elif coded is not None:
                result[model_id][measure] = _limit_of(coded, measure, kind)
            elif code:
                # The code names no quota that was fetched: no limit rather than a wrong one.
                result[model_id].pop(measure, None)
    return {model_id: limits for model_id, limits in result.items() if limits}


def _limit_of(quota: ServiceQuota, measure: Measure, kind: Kind) -> QuotaLimit:
    return QuotaLimit(
        measure,
        float(quota.value),
        kind,
        quota.code,
        quota.name,
        "applied" if quota.applied else "default",
    )


def _override_for(
    overrides: Sequence[QuotaOverride], model_id: str, measure: Measure
) -> QuotaOverride | None:
    """The override that sets ``measure`` for ``model_id``: an exact id first, else the first
    matching glob in the file's order."""
    fitting = [
        override
        for override in overrides
        if override.applies_to(model_id)
        and (measure in override.limits or measure in override.quota_codes)
    ]
    exact = [override for override in fitting if override.pattern == model_id]
    chosen = exact or fitting
    return chosen[0] if chosen else None


def burndown_for(model_id: str, table: Mapping[str, float]) -> float:
    """Output-token burndown of a model: the most specific glob of ``table`` that matches the
    full id or its base id; 1 where none does."""
    base = model_kind(model_id)[1]
    best: tuple[int, float] | None = None
    for pattern, factor in table.items():
        if fnmatchcase(model_id, pattern) or fnmatchcase(base, pattern):
            specificity = sum(1 for ch in pattern if ch not in "*?[]")
            if best is None or specificity > best[0]:
                best = (specificity, float(factor))
    return 1.0 if best is None else best[1]


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """One measure of one model against its limit."""

    limit: QuotaLimit
    used_last_minute: float  # the newest complete minute (tokens or requests)
    used_peak_5m: float  # the largest minute of the five ending at that minute
    source: UsageSource
    used_today: float | None = None  # tpd only: the day so far
    minute_start: float | None = None  # epoch seconds of the newest complete minute

    @property
    def fraction(self) -> float:
        used = self.used_today if self.limit.measure == "tpd" else self.used_peak_5m
        return (used or 0.0) / self.limit.limit if self.limit.limit > 0 else 0.0

    @property
    def level(self) -> int:
        """How many gauge levels are reached (0: under half)."""
        return sum(1 for threshold in GAUGE_LEVELS if self.fraction >= threshold)

    def as_report(self) -> dict[str, Any]:
        """The report's ``quota.<measure>`` object (see docs/report.md)."""
        report: dict[str, Any] = {
            "limit": _number(self.limit.limit),
            "quota_code": self.limit.quota_code,
            "kind": self.limit.kind,
            "used_last_minute": _number(self.used_last_minute),
            "used_peak_5m": _number(self.used_peak_5m),
            "fraction": round(self.fraction, 6),
            "source": self.source,
            "limit_from": self.limit.origin,
        }
        if self.limit.measure == "tpd":
            report["used_today"] = _number(self.used_today or 0.0)
        return report


@dataclass(frozen=True, slots=True)
class ModelQuotas:
    """Every measure of one model; None where no limit is known."""

    model_id: str
    uses: Mapping[Measure, QuotaUse | None]
    burndown: float = 1.0
    # Several regions: region -> that region's quotas; ``uses`` is then the tightest region's.
    regions: Mapping[str, ModelQuotas] = field(default_factory=dict)

    @property
    def tightest(self) -> QuotaUse | None:
        known = [use for use in self.uses.values() if use is not None]
        return max(known, key=lambda use: use.fraction, default=None)

    def as_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            measure: None if (use := self.uses.get(measure)) is None else use.as_report()
            for measure in MEASURES
        }
        if self.regions:
            report["regions"] = {name: q.as_report() for name, q in self.regions.items()}
        return report


def tightest_region(per_region: Mapping[str, Mapping[str, ModelQuotas]]) -> dict[str, ModelQuotas]:
    """Several regions' quotas as one entry per model: for each measure, the region whose use
    is closest to its limit (the one that throttles first; limits of different regions never
    add up), with every region's own figures in ``regions``."""
    merged: dict[str, ModelQuotas] = {}
    model_ids = dict.fromkeys(m for quotas in per_region.values() for m in quotas)
    for model_id in model_ids:
        regions = {
            region: quotas[model_id] for region, quotas in per_region.items() if model_id in quotas
        }
        uses: dict[Measure, QuotaUse | None] = {}
        for measure in MEASURES:
            known = [q.uses.get(measure) for q in regions.values()]
            found = [use for use in known if use is not None]
            uses[measure] = max(found, key=lambda use: use.fraction, default=None)
        burndown = next(iter(regions.values())).burndown
        merged[model_id] = ModelQuotas(model_id, uses, burndown, regions)
    return merged


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 3)


@dataclass(frozen=True, slots=True)
class UsageInputs:
    """What quota usage is measured from, at ``now``."""

    now: float
    day_start: float  # the current day's start, in the configured timezone
    store: Store
    cloudwatch: CloudWatchStore | None = None
    burndown: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BURNDOWN))


def evaluate_model(
    model_id: str, limits: Mapping[Measure, QuotaLimit], inputs: UsageInputs
) -> ModelQuotas:
    """Usage of each measure with a limit: CloudWatch's account-wide figures where it has the
    model's metric, else the usage log's estimate."""
    factor = burndown_for(model_id, inputs.burndown)
    uses: dict[Measure, QuotaUse | None] = dict.fromkeys(MEASURES)
    for measure, limit in limits.items():
        uses[measure] = _use(model_id, limit, factor, inputs)
    return ModelQuotas(model_id, uses, factor)


def evaluate_all(
    assigned: Mapping[str, Mapping[Measure, QuotaLimit]],
    model_ids: Iterable[str],
    inputs: UsageInputs,
) -> dict[str, ModelQuotas]:
    """:func:`evaluate_model` for every model id (those without limits get all None)."""
    return {
        model_id: evaluate_model(model_id, assigned.get(model_id, {}), inputs)
        for model_id in dict.fromkeys(model_ids)
    }


def _use(model_id: str, limit: QuotaLimit, factor: float, inputs: UsageInputs) -> QuotaUse:
    cloud = inputs.cloudwatch
    measure = limit.measure
    metrics = (INVOCATIONS, THROTTLES) if measure == "rpm" else (TPM_QUOTA_USAGE,)
    if cloud is not None and any(cloud.has_series(model_id, m, SUM) for m in metrics):
        minutes, anchor = _cloudwatch_minutes(cloud, model_id, metrics, inputs.now)
        today = None
        if measure == "tpd":
            total = cloud.period_total(model_id, TPM_QUOTA_USAGE, QUOTA_DAY_PERIOD)
            if total is not None and total.start <= inputs.day_start + 1:
                today = cloud.period_to_date(
                    model_id, TPM_QUOTA_USAGE, QUOTA_DAY_PERIOD, inputs.now
                )
        if measure != "tpd" or today is not None:
            return QuotaUse(limit, minutes[-1], max(minutes), "cloudwatch", today, anchor)
    minutes, anchor = _local_minutes(inputs.store, model_id, measure, factor, inputs.now)
    today = None
    if measure == "tpd":
        tally = inputs.store.tally_between(model_id, inputs.day_start, inputs.now)
        today = tally.input_tokens + tally.cache_write_input_tokens + tally.output_tokens * factor
    return QuotaUse(limit, minutes[-1], max(minutes), "local-estimate", today, anchor)


def _local_minutes(
    store: Store, model_id: str, measure: Measure, factor: float, now: float
) -> tuple[list[float], float]:
    """The last PEAK_MINUTES complete minutes of the usage log, oldest first."""
    last = now - 60  # the minute before the current one: the newest complete minute
    anchor = float((int(last) // 60) * 60)
    if model_id not in store:
        return [0.0] * PEAK_MINUTES, anchor
    if measure == "rpm":
        return store.minute_series(model_id, last, REQUESTS, PEAK_MINUTES), anchor
    spent = [
        store.minute_series(model_id, last, index, PEAK_MINUTES)
        for index in (INPUT, CACHE_WRITE, OUTPUT)
    ]
    return [i + w + o * factor for i, w, o in zip(*spent, strict=True)], anchor


def _cloudwatch_minutes(
    cloud: CloudWatchStore, model_id: str, metrics: Sequence[str], now: float
) -> tuple[list[float], float]:
    """The PEAK_MINUTES minutes ending at CloudWatch's newest complete minute (the newest one
    with a datapoint before the current minute, at most CLOUDWATCH_LOOKBACK_MINUTES back; a
    minute without datapoint is zero)."""
    current = int(now) // 60
    start = (current - CLOUDWATCH_LOOKBACK_MINUTES - PEAK_MINUTES) * 60
    per_minute: dict[int, float] = {}
    for metric in metrics:
        for minute_start, value in cloud.points(model_id, metric, SUM, start, current * 60):
            minute = int(minute_start) // 60
            per_minute[minute] = per_minute.get(minute, 0.0) + value
    recent = [m for m in per_minute if m >= current - CLOUDWATCH_LOOKBACK_MINUTES]
    anchor = max(recent, default=current - 1)
    values = [per_minute.get(anchor - offset, 0.0) for offset in range(PEAK_MINUTES - 1, -1, -1)]
    return values, float(anchor * 60)


def tightest_of(quotas: Iterable[ModelQuotas]) -> tuple[str, QuotaUse] | None:
    """The model and measure closest to its limit."""
    best: tuple[str, QuotaUse] | None = None
    for entry in quotas:
        use = entry.tightest
        if use is not None and (best is None or use.fraction > best[1].fraction):
            best = (entry.model_id, use)
    return best


@dataclass(frozen=True, slots=True)
class Reservation:
    """Requested ``max_tokens`` against output tokens used, over a model's recent calls."""

    calls: int  # recent successful calls that recorded max_tokens
    reserved_output: int  # sum of their max_tokens
    used_output: int  # sum of their output tokens

    @property
    def used_fraction(self) -> float:
        return self.used_output / self.reserved_output if self.reserved_output else 0.0


def reservation(calls: Iterable[tuple[int | None, int, str]]) -> Reservation | None:
    """From ``(max_tokens, output_tokens, status)`` of recent calls; None when none recorded
    ``max_tokens``."""
    count = reserved = used = 0
    for max_tokens, output_tokens, status in calls:
        if max_tokens is None or status != "ok":
            continue
        count += 1
        reserved += max_tokens
        used += output_tokens
    return Reservation(count, reserved, used) if count else None


def reservation_hint(found: Reservation | None, burndown: float) -> str:
    """In words a person can act on, one short line per point: how much of what the calls
    reserve they use, what to change, and the model's burndown."""
    if found is None:
        return (
            "no max_tokens recorded (the wrapper records it from the request)\n"
            "Bedrock reserves input + max_tokens as a call starts; unset, the model's maximum"
        )
    mean_reserved = found.reserved_output / found.calls
    mean_used = found.used_output / found.calls
    lines = [
        f"last {found.calls} calls reserved max_tokens {mean_reserved:,.0f} on average and used "
        f"{mean_used:,.0f} ({found.used_fraction:.0%})"
    ]
    if found.used_fraction < 0.5:
        suggested = max(1, math.ceil(mean_used * 2 / 256) * 256)
        lines.append(
            f"lower max_tokens to about {suggested:,}: the reservation counts against TPM "
            "while a call runs, so more calls start each minute"
        )
    if burndown > 1:
        lines.append(f"output tokens count {burndown:g}x against this model's quota")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class QuotaEvent:
    """A quota measure crossed an alarm level (80%, 100%)."""

    model_id: str
    measure: Measure
    threshold: float
    fraction: float
    used: float
    limit: float
    quota_code: str | None
    source: UsageSource

    def environment(self) -> dict[str, str]:
        """The variables given to the ``on_threshold`` command."""
        return {
            "BEDROCK_TOP_QUOTA": self.measure,
            "BEDROCK_TOP_QUOTA_CODE": self.quota_code or "",
            "BEDROCK_TOP_MODEL": self.model_id,
            "BEDROCK_TOP_THRESHOLD": f"{self.threshold:g}",
            "BEDROCK_TOP_FRACTION": f"{self.fraction:.4f}",
            "BEDROCK_TOP_QUOTA_USED": f"{self.used:.0f}",
            "BEDROCK_TOP_QUOTA_LIMIT": f"{self.limit:.0f}",
            "BEDROCK_TOP_QUOTA_SOURCE": self.source,
        }

    @property
    def message(self) -> str:
        words = MEASURE_WORDS[self.measure]
        return (
            f"{self.model_id}: {self.fraction:.0%} of its {words} quota "
            f"({self.used:,.0f} of {self.limit:,.0f}, {self.source})"
        )


@dataclass
class QuotaTracker:
    """Quota crossings of the alarm levels, through the budgets' level memory: tokens and
    requests per minute ring again after falling back under a level; tokens per day once a day
    (``day_start``)."""

    levels: LevelTracker = field(default_factory=LevelTracker)

    def update(self, quotas: Iterable[ModelQuotas], day_start: float) -> list[QuotaEvent]:
        events: list[QuotaEvent] = []
        for entry in quotas:
            for measure, use in entry.uses.items():
                if use is None:
                    continue
                daily = measure == "tpd"
                reset_key = (day_start if daily else None, use.limit.limit)
                threshold = self.levels.crossed(
                    f"{entry.model_id} {measure}",
                    reset_key,
                    ALARM_LEVELS,
                    use.fraction,
                    rearm=not daily,
                )
                if threshold is None:
                    continue
                used = (use.used_today or 0.0) if daily else use.used_peak_5m
                events.append(
                    QuotaEvent(
                        model_id=entry.model_id,
                        measure=measure,
                        threshold=threshold,
                        fraction=use.fraction,
                        used=used,
                        limit=use.limit.limit,
                        quota_code=use.limit.quota_code,
                        source=use.source,
                    )
                )
        return events

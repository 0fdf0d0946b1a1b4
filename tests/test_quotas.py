"""Quota names read, matched to model ids, overridden by configuration, and usage against them
measured from the stores (hand-calculated values)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from monitor.budgets import period_bounds
from monitor.cloudwatch_store import INVOCATIONS, SUM, THROTTLES, TPM_QUOTA_USAGE, CloudWatchStore
from monitor.quotas import (
    QUOTA_DAY_PERIOD,
    ModelQuotas,
    QuotaLimit,
    QuotaName,
    QuotaOverride,
    QuotaTracker,
    QuotaUse,
    ServiceQuota,
    UsageInputs,
    assign_quotas,
    burndown_for,
    evaluate_model,
    merge_quotas,
    parse_quota_name,
    reservation,
    reservation_hint,
)
from monitor.store import Store
from tests.conftest import record

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU45 = "anthropic.claude-haiku-4-5-20251001-v1:0"

QUOTAS = [
    ServiceQuota(
        "L-8CE99163",
        "On-demand model inference tokens per minute for Anthropic Claude 3 Haiku",
        2_000_000,
    ),
    ServiceQuota(
        "L-A1B2C3D4",
        "On-demand model inference requests per minute for Anthropic Claude 3 Haiku",
        1000,
    ),
    ServiceQuota(
        "L-58BE175A",
        "Cross-region model inference tokens per minute for Anthropic Claude Haiku 4.5",
        4_000_000,
    ),
    ServiceQuota(
        "L-27C57EE8",
        "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        5_000_000,
    ),
    ServiceQuota(
        "L-11111111",
        "Cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        3_000_000,
    ),
    ServiceQuota(
        "L-22222222",
        "On-demand InvokeModel tokens per minute for Anthropic Claude Sonnet 4.5 V1",
        400_000,
    ),
    ServiceQuota(
        "L-33333333",
        "Model invocation max tokens per day for Anthropic Claude Sonnet 4.5 V1 (cross-region x2)",
        1,
    ),
    ServiceQuota(
        "L-44444444",
        "Cross-region model inference tokens per day for Anthropic Claude Sonnet 4.5 V1",
        7_200_000_000,
    ),
    ServiceQuota(
        "L-55555555",
        "On-demand latency-optimized model inference tokens per minute for Anthropic Claude 3 Haiku",  # noqa: E501
        9,
    ),
    ServiceQuota("L-66666666", "Batch inference job size for Anthropic Claude 3 Haiku", 9),
    ServiceQuota("L-77777777", "Cross-Model Max Tokens Per Day", 9),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "On-demand model inference tokens per minute for Anthropic Claude 3 Haiku",
            QuotaName("on-demand", "tpm", "Anthropic Claude 3 Haiku"),
        ),
        (
            "Cross-region model inference requests per minute for Anthropic Claude Haiku 4.5",
            QuotaName("cross-region", "rpm", "Anthropic Claude Haiku 4.5"),
        ),
        (
            "Global cross-region model inference tokens per minute for Anthropic Claude Sonnet 4.5 V1",  # noqa: E501
            QuotaName("global", "tpm", "Anthropic Claude Sonnet 4.5 V1"),
        ),
        (
            "On-demand InvokeModel tokens per minute for Amazon Nova Pro",
            QuotaName("on-demand", "tpm", "Amazon Nova Pro"),
        ),
        (
            "Cross-region model inference max tokens per day for Anthropic Claude Haiku 4.5",
            QuotaName("cross-region", "tpd", "Anthropic Claude Haiku 4.5"),
        ),
        ("On-demand latency-optimized model inference tokens per minute for X", None),
        ("Batch inference job size for Anthropic Claude 3 Haiku", None),
        ("Cross-Model Max Tokens Per Day", None),
        ("On-demand model inference tokens per minute for ", None),
    ],
)
def test_quota_names_give_kind_measure_and_model(name: str, expected: QuotaName | None) -> None:
    assert parse_quota_name(name) == expected


def test_each_kind_of_endpoint_gets_its_own_quota() -> None:
    seen = [
        HAIKU3,
        f"us.{HAIKU45}",
        f"eu.{HAIKU45}",
        f"global.{SONNET}",
        f"us.{SONNET}",
        SONNET,
        "mistral.mistral-large-2407-v1:0",
    ]
    assigned = assign_quotas(QUOTAS, seen)
    assert assigned[HAIKU3]["tpm"] == QuotaLimit(
        "tpm", 2_000_000, "on-demand", "L-8CE99163", QUOTAS[0].name, "applied"
    )
    assert assigned[HAIKU3]["rpm"].quota_code == "L-A1B2C3D4"
    assert "tpd" not in assigned[HAIKU3]
    # Cross-region quotas apply to every geographic profile of the model.
    assert assigned[f"us.{HAIKU45}"]["tpm"].quota_code == "L-58BE175A"
    assert assigned[f"eu.{HAIKU45}"]["tpm"].kind == "cross-region"
    assert assigned[f"global.{SONNET}"]["tpm"].quota_code == "L-27C57EE8"
    assert assigned[f"us.{SONNET}"]["tpm"].quota_code == "L-11111111"
    assert assigned[f"us.{SONNET}"]["tpd"].limit == 7_200_000_000
    assert assigned[SONNET]["tpm"].quota_code == "L-22222222"
    # A model without a quota of its own gets none (not a neighbour's).
    assert "mistral.mistral-large-2407-v1:0" not in assigned


def test_configured_limits_and_codes_win_over_the_match() -> None:
    overrides = [
        QuotaOverride("anthropic.claude-3-haiku*", {"tpm": 50_000}),
        QuotaOverride("us.*", quota_codes={"tpm": "L-8CE99163"}),
        QuotaOverride("mistral.*", {"rpm": 60, "tpd": 1_000_000}),
        QuotaOverride(f"eu.{HAIKU45}", quota_codes={"tpm": "L-NOSUCH"}),
    ]
    seen = [HAIKU3, f"us.{HAIKU45}", f"eu.{HAIKU45}", "mistral.mistral-large-2407-v1:0"]
    assigned = assign_quotas(QUOTAS, seen, overrides)
    assert assigned[HAIKU3]["tpm"] == QuotaLimit("tpm", 50_000, "on-demand", None, None, "config")
    assert assigned[HAIKU3]["rpm"].quota_code == "L-A1B2C3D4"  # not overridden
    # Named by its code: taken whatever its name says.
    assert assigned[f"us.{HAIKU45}"]["tpm"].limit == 2_000_000
    assert assigned[f"us.{HAIKU45}"]["tpm"].kind == "cross-region"
    mistral = assigned["mistral.mistral-large-2407-v1:0"]
    assert (mistral["rpm"].limit, mistral["tpd"].limit, "tpm" in mistral) == (60, 1_000_000, False)
    # A code that names no fetched quota: no limit rather than the matched one.
    assert f"eu.{HAIKU45}" not in assigned


def test_applied_values_win_and_defaults_fill_the_gaps() -> None:
    applied = [ServiceQuota("L-1", "a", 10.0)]
    defaults = [ServiceQuota("L-1", "a", 1.0, applied=False), ServiceQuota("L-2", "b", 2.0, False)]
    assert merge_quotas(applied, defaults) == [
        ServiceQuota("L-1", "a", 10.0, True),
        ServiceQuota("L-2", "b", 2.0, False),
    ]


def test_burndown_defaults_and_configuration() -> None:
    assert burndown_for(f"us.{SONNET}", {"anthropic.claude-sonnet-4*": 5.0}) == 5.0
    assert burndown_for(HAIKU3, {"anthropic.claude-sonnet-4*": 5.0}) == 1.0
    table = {"anthropic.claude-*": 2.0, "anthropic.claude-sonnet-4-5*": 7.0}
    assert burndown_for(f"global.{SONNET}", table) == 7.0  # the most specific pattern


# -- usage against the limits ------------------------------------------------------------------

NOW = 1_780_000_000.0 + 30  # 30 s into a minute
MINUTE = (int(NOW) // 60 - 1) * 60  # start of the newest complete minute


def _inputs(store: Store, cloud: CloudWatchStore | None = None, **kw: object) -> UsageInputs:
    return UsageInputs(
        now=NOW,
        day_start=kw.pop("day_start", NOW - 3600),  # type: ignore[arg-type]
        store=store,
        cloudwatch=cloud,
        burndown={"anthropic.claude-sonnet-4*": 5.0},
    )


def test_local_estimate_is_input_plus_cache_write_plus_burned_down_output() -> None:
    store = Store()
    store.ingest(
        [
            # Newest complete minute: 2 calls of 1000 in, 200 cache write, 300 out (5x), 4000
            # cache read (not counted): 2 * (1000 + 200 + 1500) = 5400.
            record(epoch=MINUTE + 10, model_id=SONNET, input_tokens=1000, output_tokens=300,
                   cache_write_input_tokens=200, cache_read_input_tokens=4000),
            record(epoch=MINUTE + 50, model_id=SONNET, input_tokens=1000, output_tokens=300,
                   cache_write_input_tokens=200),
            # Three minutes earlier: 8000 + 5 * 800 = 12000, the 5-minute peak.
            record(epoch=MINUTE - 170, model_id=SONNET, input_tokens=8000, output_tokens=800),
            # The current, incomplete minute is not a complete minute yet.
            record(epoch=NOW - 5, model_id=SONNET, input_tokens=99_000, output_tokens=0),
            # Six minutes back: outside the 5-minute peak, inside the day.
            record(epoch=MINUTE - 330, model_id=SONNET, input_tokens=20_000, output_tokens=0),
        ],
        NOW,
    )  # fmt: skip
    limits = {
        "tpm": QuotaLimit("tpm", 100_000, "on-demand", "L-22222222"),
        "rpm": QuotaLimit("rpm", 10, "on-demand", "L-R"),
        "tpd": QuotaLimit("tpd", 1_000_000, "on-demand", "L-D"),
    }
    result = evaluate_model(SONNET, limits, _inputs(store))  # type: ignore[arg-type]
    tpm, rpm, tpd = result.uses["tpm"], result.uses["rpm"], result.uses["tpd"]
    assert tpm is not None and rpm is not None and tpd is not None
    assert (tpm.used_last_minute, tpm.used_peak_5m, tpm.source) == (5400, 12000, "local-estimate")
    assert tpm.fraction == pytest.approx(0.12)
    assert (rpm.used_last_minute, rpm.used_peak_5m) == (2, 2)
    assert rpm.fraction == pytest.approx(0.2)
    # The day: every call so far, the current minute included: 5400 + 12000 + 99000 + 20000.
    assert tpd.used_today == 136_400
    assert tpd.fraction == pytest.approx(0.1364)
    assert result.tightest is rpm  # 20% of its requests beats 12% of its tokens
    assert tpm.as_report() == {
        "limit": 100_000,
        "quota_code": "L-22222222",
        "kind": "on-demand",
        "used_last_minute": 5400,
        "used_peak_5m": 12000,
        "fraction": 0.12,
        "source": "local-estimate",
        "limit_from": "applied",
    }


def test_cloudwatch_figures_are_used_where_cloudwatch_has_the_metric() -> None:
    store = Store()
    store.ingest([record(epoch=MINUTE + 1, model_id=SONNET, input_tokens=10)], NOW)
    cloud = CloudWatchStore()
    # CloudWatch is minutes late: its newest minute is three minutes back.
    newest = MINUTE - 120
    cloud.merge(
        SONNET,
        TPM_QUOTA_USAGE,
        SUM,
        [(newest - 240, 50_000), (newest - 60, 80_000), (newest, 30_000), (newest - 600, 999_999)],
    )
    cloud.merge(SONNET, INVOCATIONS, SUM, [(newest, 40), (newest - 60, 10)])
    cloud.merge(SONNET, THROTTLES, SUM, [(newest, 5)])
    cloud.set_period_total(SONNET, TPM_QUOTA_USAGE, QUOTA_DAY_PERIOD, NOW - 3600, newest - 60, 1e6)
    limits = {
        "tpm": QuotaLimit("tpm", 200_000, "on-demand", "L-T"),
        "rpm": QuotaLimit("rpm", 50, "on-demand", "L-R"),
        "tpd": QuotaLimit("tpd", 10_000_000, "on-demand", "L-D"),
    }
    result = evaluate_model(SONNET, limits, _inputs(store, cloud))  # type: ignore[arg-type]
    tpm, rpm, tpd = result.uses["tpm"], result.uses["rpm"], result.uses["tpd"]
    assert tpm is not None and rpm is not None and tpd is not None
    assert (tpm.used_last_minute, tpm.used_peak_5m, tpm.source) == (30_000, 80_000, "cloudwatch")
    assert tpm.minute_start == newest
    assert tpm.fraction == pytest.approx(0.4)
    assert (rpm.used_last_minute, rpm.used_peak_5m, rpm.source) == (45, 45, "cloudwatch")
    # The coarse day total over [day start, newest - 60), brought up to date with the minutes
    # fetched since: newest - 60 and newest.
    assert tpd.used_today == 1_000_000 + 80_000 + 30_000
    assert tpd.source == "cloudwatch"


def test_tokens_per_day_start_at_midnight_in_the_configured_timezone() -> None:
    zone = "America/New_York"
    now = datetime(2026, 6, 2, 0, 10, tzinfo=ZoneInfo(zone)).timestamp()
    store = Store()
    store.ingest(
        [
            record(epoch=now - 20 * 60, model_id=HAIKU3, input_tokens=7000, output_tokens=0),
            record(epoch=now - 5 * 60, model_id=HAIKU3, input_tokens=300, output_tokens=100),
        ],
        now,
    )
    limits = {"tpd": QuotaLimit("tpd", 10_000, "on-demand", "L-D")}

    def today(tz: str) -> float | None:
        inputs = UsageInputs(now, period_bounds("day", now, tz)[0], store)
        use = evaluate_model(HAIKU3, limits, inputs).uses["tpd"]  # type: ignore[arg-type]
        assert use is not None
        return use.used_today

    assert today(zone) == 400  # 23:50 was yesterday in New York
    assert today("UTC") == 7400  # both are 04:xx UTC, the same day


def _quotas_at(fraction: float, measure: str = "tpm") -> list[ModelQuotas]:
    limit = QuotaLimit(measure, 100.0, "on-demand", "L-T")  # type: ignore[arg-type]
    used = fraction * 100
    use = QuotaUse(limit, used, used, "cloudwatch", used if measure == "tpd" else None)
    return [ModelQuotas(SONNET, {measure: use})]  # type: ignore[dict-item]


def test_the_alarm_fires_once_per_crossing() -> None:
    tracker = QuotaTracker()
    fired = []
    for fraction in (0.5, 0.85, 0.9, 0.7, 0.82, 1.2, 1.3, 0.95, 1.1):
        fired.append([e.threshold for e in tracker.update(_quotas_at(fraction), day_start=0)])
    assert fired == [[], [0.8], [], [], [0.8], [1.0], [], [], [1.0]]
    event = tracker.update(_quotas_at(0.1), 0) or tracker.update(_quotas_at(0.9), 0)
    env = event[0].environment()
    assert env["BEDROCK_TOP_QUOTA"] == "tpm"
    assert env["BEDROCK_TOP_QUOTA_CODE"] == "L-T"
    assert env["BEDROCK_TOP_MODEL"] == SONNET
    assert env["BEDROCK_TOP_THRESHOLD"] == "0.8"
    assert env["BEDROCK_TOP_FRACTION"] == "0.9000"


def test_tokens_per_day_alarm_once_a_day() -> None:
    tracker = QuotaTracker()
    assert [e.threshold for e in tracker.update(_quotas_at(0.9, "tpd"), 0)] == [0.8]
    assert tracker.update(_quotas_at(0.1, "tpd"), 0) == []
    assert tracker.update(_quotas_at(0.9, "tpd"), 0) == []  # the same day: once
    assert [e.threshold for e in tracker.update(_quotas_at(0.9, "tpd"), 86400)] == [0.8]


def test_the_reservation_hint_says_what_to_change() -> None:
    calls = [(8192, 400, "ok"), (8192, 600, "ok"), (None, 10, "ok"), (8192, 0, "throttled")]
    found = reservation(calls)
    assert found is not None and (found.calls, found.reserved_output, found.used_output) == (
        2,
        16384,
        1000,
    )
    hint = reservation_hint(found, burndown=5.0)
    assert "reserved max_tokens 8,192 on average and used 500 (6%)" in hint
    assert "lower max_tokens to about 1,024" in hint
    assert "output tokens count 5x" in hint
    assert "no max_tokens recorded" in reservation_hint(None, 1.0)

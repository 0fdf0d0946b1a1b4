from __future__ import annotations

import pytest

from monitor.formatting import (
    base_model_id,
    format_count,
    format_ms,
    format_usd,
    parse_duration,
    parse_since,
    short_model_id,
)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_since_accepts_iso_timestamps_and_treats_naive_as_utc() -> None:
    assert parse_since("2026-01-01T00:00:00Z", 0) == 1_767_225_600
    assert parse_since("2026-01-01T00:00:00", 0) == 1_767_225_600
    assert parse_since("2026-01-01T01:00:00+01:00", 0) == 1_767_225_600
    assert parse_since("1h", 10_000) == 6_400
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last tuesday", 0)


def test_unknown_price_is_unpriced_never_zero() -> None:
    assert format_usd(None) == "unpriced"
    assert format_usd(0) == "$0.00"
    assert format_usd(1234.5) == "$1,234"
    assert format_usd(0.0042) == "$0.0042"


def test_counts_and_latencies() -> None:
    assert format_count(999) == "999"
    assert format_count(1234) == "1.2k"
    assert format_count(5_600_000) == "5.6M"
    assert format_ms(None) == "-"
    assert format_ms(830) == "830ms"
    assert format_ms(4200) == "4.2s"


@pytest.mark.parametrize(
    ("model_id", "width", "shown"),
    [
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            60,
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", 34, "us.claude-sonnet-4-5-20250929-v1:0"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", 24, "us.claude-sonnet-4-5"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", 16, "global.claude-h…"),
        ("amazon.nova-lite-v1:0", 12, "nova-lite"),
    ],
)
def test_short_model_ids_keep_the_profile_prefix(model_id: str, width: int, shown: str) -> None:
    assert short_model_id(model_id, width) == shown
    assert len(shown) <= width


def test_base_model_of_profiles_and_arns() -> None:
    assert base_model_id("us-gov.anthropic.claude-3-haiku-20240307-v1:0") == (
        "anthropic.claude-3-haiku-20240307-v1:0"
    )
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0"
    assert base_model_id(arn) == "amazon.nova-pro-v1:0"

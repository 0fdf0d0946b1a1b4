"""Prices: every resolution path, cache prices, and unpriced models (never $0)."""

from __future__ import annotations

import pytest

from monitor.pricing import (
    BUILT_IN_PRICES,
    Price,
    PriceBook,
    glob_problem,
    split_model_id,
)
from monitor.store import Tally

M = 1_000_000
HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def tally(
    input_tokens: int = 0, output_tokens: int = 0, cache_read: int = 0, cache_write: int = 0
) -> Tally:
    return Tally(
        requests=1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
    )


def test_exact_id() -> None:
    book = PriceBook()
    # Nova Lite: $0.06 in, $0.24 out per million -> 0.06 * 1 + 0.24 * 0.5
    assert book.cost_usd("amazon.nova-lite-v1:0", tally(M, M // 2)) == pytest.approx(0.18)
    resolved = book.price_for("amazon.nova-lite-v1:0")
    assert resolved is not None
    assert (resolved.matched_key, resolved.origin) == ("amazon.nova-lite-v1:0", "built-in")


def test_glob() -> None:
    book = PriceBook()
    # Claude 3 Haiku: 2M in * 0.25 + 400k out * 1.25 = 0.5 + 0.5
    assert book.cost_usd(HAIKU3, tally(2 * M, 400_000)) == pytest.approx(1.0)
    resolved = book.price_for(HAIKU3)
    assert resolved is not None and resolved.matched_key == "anthropic.claude-3-haiku-*"
    # The 3.5 Haiku glob must not catch Claude 3 Haiku, nor the other way round.
    assert book.cost_usd("anthropic.claude-3-5-haiku-20241022-v1:0", tally(M, M)) == (
        pytest.approx(4.8)
    )


def test_most_specific_match_wins_and_config_beats_built_in() -> None:
    book = PriceBook(
        {
            "anthropic.claude-*": Price(9.0, 9.0),  # broad fallback
            "anthropic.claude-3-haiku-2024*": Price(0.5, 2.0),  # longer than the built-in glob
            "amazon.nova-lite-v1:0": Price(0.1, 0.1),  # same key as the built-in: replaces it
        }
    )
    assert book.cost_usd(HAIKU3, tally(M)) == pytest.approx(0.5)
    assert book.cost_usd("amazon.nova-lite-v1:0", tally(M)) == pytest.approx(0.1)
    # Built-in globs more specific than the configured fallback still win ...
    assert book.cost_usd(SONNET45, tally(M)) == pytest.approx(3.0)
    # ... and the fallback prices what nothing else covers.
    assert book.cost_usd("anthropic.claude-v2:1", tally(M)) == pytest.approx(9.0)
    # An exact id beats every glob.
    exact = PriceBook(
        {HAIKU3: Price(0.3, 0.3), "anthropic.claude-3-haiku-20240307-v1:*": Price(7, 7)}
    )
    assert exact.cost_usd(HAIKU3, tally(M)) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        # 1M input at $3 * 1.1 plus 100k output at $15 * 1.1
        (f"us.{SONNET45}", 3.3 + 1.65),
        (f"eu.{SONNET45}", 3.3 + 1.65),
        # global. has no multiplier configured
        (f"global.{SONNET45}", 3.0 + 1.5),
        (f"apac.{SONNET45}", 3.0 + 1.5),
        (f"jp.{SONNET45}", 3.0 + 1.5),
        (f"au.{SONNET45}", 3.0 + 1.5),
        (f"us-gov.{SONNET45}", (3.0 + 1.5) * 1.2),
        (SONNET45, 3.0 + 1.5),
    ],
)
def test_inference_profile_prefix_with_multiplier(model_id: str, expected: float) -> None:
    book = PriceBook(profile_multipliers={"us.": 1.1, "eu.": 1.1, "us-gov.": 1.2})
    assert book.cost_usd(model_id, tally(M, 100_000)) == pytest.approx(expected)
    resolved = book.price_for(model_id)
    assert resolved is not None and resolved.base_model_id == SONNET45


def test_a_key_naming_the_profile_id_is_used_as_written() -> None:
    book = PriceBook({f"us.{HAIKU3}": Price(0.3, 1.5)}, profile_multipliers={"us.": 2.0})
    resolved = book.price_for(f"us.{HAIKU3}")
    assert resolved is not None
    assert resolved.multiplier == 1.0 and resolved.origin == "config"
    assert book.cost_usd(f"us.{HAIKU3}", tally(M, M)) == pytest.approx(1.8)
    # Other prefixes still go through the base model and their multiplier (none for eu.).
    assert book.cost_usd(f"eu.{HAIKU3}", tally(M, M)) == pytest.approx(1.5)


def test_arns() -> None:
    book = PriceBook(
        {"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc": Price(1, 2)},
        profile_multipliers={"us.": 1.1},
    )
    foundation = f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU3}"
    assert book.cost_usd(foundation, tally(M)) == pytest.approx(0.25)
    system_profile = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{HAIKU3}"
    assert book.cost_usd(system_profile, tally(M)) == pytest.approx(0.275)
    application = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc"
    assert book.cost_usd(application, tally(M, M)) == pytest.approx(3.0)
    other_app = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/xyz"
    assert book.cost_usd(other_app, tally(M)) is None


def test_claude_cache_prices_default_to_multiples_of_input() -> None:
    book = PriceBook()
    # Claude 3 Haiku: read 0.1 * 0.25 = 0.025, write 1.25 * 0.25 = 0.3125 per million.
    assert book.cost_usd(HAIKU3, tally(cache_read=M)) == pytest.approx(0.025)
    assert book.cost_usd(HAIKU3, tally(cache_write=M)) == pytest.approx(0.3125)
    # Sonnet 4.5 through us. with a multiplier: everything scales.
    scaled = PriceBook(profile_multipliers={"us.": 1.1})
    cost = scaled.cost_usd(f"us.{SONNET45}", tally(M, 0, 2 * M, M))
    assert cost == pytest.approx((3.0 + 2 * 0.3 + 3.75) * 1.1)
    # A configured Claude price without cache prices gets the same multiples of its input.
    override = PriceBook({HAIKU3: Price(1.0, 2.0)})
    assert override.cost_usd(HAIKU3, tally(cache_read=M, cache_write=M)) == pytest.approx(1.35)
    # Configured cache prices are used as given.
    explicit = PriceBook({HAIKU3: Price(1.0, 2.0, cache_read_per_mtok=0.5, cache_write_per_mtok=3)})
    assert explicit.cost_usd(HAIKU3, tally(cache_read=M, cache_write=M)) == pytest.approx(3.5)


def test_cache_tokens_without_a_cache_price_leave_the_model_unpriced() -> None:
    book = PriceBook()
    assert book.cost_usd("amazon.nova-pro-v1:0", tally(M, M)) == pytest.approx(4.0)
    assert book.cost_usd("amazon.nova-pro-v1:0", tally(M, M, cache_read=10)) is None
    assert book.unpriced_tokens("amazon.nova-pro-v1:0", tally(M, M, cache_read=10)) == 2 * M + 10
    priced = PriceBook({"amazon.nova-pro-v1:0": Price(0.8, 3.2, cache_read_per_mtok=0.2)})
    assert priced.cost_usd("amazon.nova-pro-v1:0", tally(M, M, cache_read=M)) == (
        pytest.approx(4.2)
    )


def test_unpriced_is_none_never_zero() -> None:
    book = PriceBook()
    llama = "meta.llama3-3-70b-instruct-v1:0"
    assert book.price_for(llama) is None
    assert book.cost_usd(llama, tally(M, M)) is None
    assert book.cost_usd(llama, Tally()) is None
    assert book.unpriced_tokens(llama, tally(M, 5)) == M + 5
    assert book.unpriced_tokens(HAIKU3, tally(M, 5)) == 0
    # A priced model with no tokens costs exactly 0: that is a price, not a missing one.
    assert book.cost_usd(HAIKU3, Tally()) == 0.0
    # Opus 4.1 is deliberately not priced by the Opus 4.5+ entry.
    assert book.price_for("anthropic.claude-opus-4-1-20250805-v1:0") is None
    assert book.price_for("anthropic.claude-opus-4-5-20251101-v1:0") is not None


def test_summarize_totals_priced_and_unpriced() -> None:
    book = PriceBook()
    summary = book.summarize(
        [
            (HAIKU3, tally(M, M)),  # 1.5
            ("amazon.nova-micro-v1:0", tally(2 * M, M)),  # 0.07 + 0.14
            ("meta.llama3-3-70b-instruct-v1:0", tally(300, 200)),  # unpriced
            ("mistral.unknown", Tally(requests=2)),  # unpriced, but no tokens
        ]
    )
    assert summary.cost_usd == pytest.approx(1.71)
    assert summary.unpriced_tokens == 500
    assert summary.unpriced_models == ("meta.llama3-3-70b-instruct-v1:0",)


def test_split_model_id() -> None:
    assert split_model_id(f"us.{HAIKU3}") == ("us.", HAIKU3)
    assert split_model_id(f"us-gov.{HAIKU3}") == ("us-gov.", HAIKU3)
    assert split_model_id(HAIKU3) == ("", HAIKU3)
    # A bare name that only looks like a prefix is left alone.
    assert split_model_id("global.") == ("", "global.")


def test_built_in_keys_are_valid_globs_and_prices_positive() -> None:
    for key, price in BUILT_IN_PRICES.items():
        assert glob_problem(key) is None, key
        assert price.input_per_mtok > 0 and price.output_per_mtok > 0


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty"),
        ("anthropic.claude-[3-haiku", "unclosed"),
        ("anthropic.claude-[]", "empty '['"),
        ("anthropic.claude-[!]x", "empty '['"),
        ("anthropic.claude]", "unmatched"),
        ("anthropic claude", "whitespace"),
    ],
)
def test_glob_problems(pattern: str, problem: str) -> None:
    found = glob_problem(pattern)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "pattern", ["anthropic.*", "a?c", "anthropic.claude-opus-4-[5-9]*", "x[!a]y"]
)
def test_good_globs(pattern: str) -> None:
    assert glob_problem(pattern) is None

"""The one matcher from AWS's model names (quota names, usage types) to model ids."""

from __future__ import annotations

import pytest

from monitor.model_names import match_model, name_words

IDS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
]


def test_words_split_camel_case_letters_and_numbers() -> None:
    assert name_words("Claude3Haiku") == {"claude", "3", "haiku"}
    assert name_words("Anthropic Claude Haiku 4.5") == {"anthropic", "claude", "haiku", "4", "5"}
    assert name_words("amazon.nova-lite-v1:0") == {"amazon", "nova", "lite", "v", "1", "0"}
    assert name_words("USE1") == {"use", "1"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Anthropic Claude 3 Haiku", "anthropic.claude-3-haiku-20240307-v1:0"),
        ("Claude3Haiku", "anthropic.claude-3-haiku-20240307-v1:0"),
        ("Claude3.5Haiku", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("Anthropic Claude Haiku 4.5", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("Claude4.5Sonnet", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("Claude Sonnet 4", "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("Amazon Nova Lite", "amazon.nova-lite-v1:0"),
        ("NovaPro", "amazon.nova-pro-v1:0"),
        ("Meta Llama 3.1 70B Instruct", "meta.llama3-1-70b-instruct-v1:0"),
    ],
)
def test_names_match_the_id_with_the_fewest_words_left_over(name: str, expected: str) -> None:
    assert match_model(name, IDS) == expected


def test_unknown_names_and_ties_match_nothing() -> None:
    assert match_model("Mistral Large", IDS) is None
    assert match_model("", IDS) is None
    # Both ids have exactly one word the name lacks: a tie is no match.
    assert match_model("Amazon Nova", ["amazon.nova-lite", "amazon.nova-pro"]) is None


def test_a_profile_prefix_is_a_word_left_over() -> None:
    ids = ["us.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"]
    assert match_model("Claude3Haiku", ids) == "anthropic.claude-3-haiku-20240307-v1:0"


# -- Service Quotas' names, three generations of them (REFERENCE: quota names drift) ------------

QUOTA_IDS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-opus-4-1-20250805-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "amazon.nova-micro-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "meta.llama3-1-8b-instruct-v1:0",
    "mistral.mistral-large-2407-v1:0",
]
# The model part of each quota's name (what follows "... per minute for ").
QUOTA_CORPUS = {
    # Generation 1: "On-demand model inference tokens per minute for ..."
    "Anthropic Claude 3 Haiku": "anthropic.claude-3-haiku-20240307-v1:0",
    "Anthropic Claude 3.5 Haiku": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "Anthropic Claude 3.5 Sonnet": "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "Anthropic Claude 3.5 Sonnet V2": "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "Amazon Nova Lite": "amazon.nova-lite-v1:0",
    "Amazon Nova Pro": "amazon.nova-pro-v1:0",
    "Amazon Nova Micro": "amazon.nova-micro-v1:0",
    "Meta Llama 3.1 70B Instruct": "meta.llama3-1-70b-instruct-v1:0",
    "Meta Llama 3.1 8B Instruct": "meta.llama3-1-8b-instruct-v1:0",
    # Generation 2: "Cross-region model inference tokens per minute for ..."
    "Anthropic Claude Haiku 4.5": "anthropic.claude-haiku-4-5-20251001-v1:0",
    "Anthropic Claude Sonnet 4": "anthropic.claude-sonnet-4-20250514-v1:0",
    "Anthropic Claude Opus 4.1": "anthropic.claude-opus-4-1-20250805-v1:0",
    # Generation 3: "Global cross-region model inference tokens per minute for ... V1"
    "Anthropic Claude Sonnet 4.5 V1": "anthropic.claude-sonnet-4-5-20250929-v1:0",
    # Names no id fits stay unmatched rather than land on a neighbour.
    "Mistral Large 2 (24.07)": None,
    "Anthropic Claude 3 Opus": None,
    "Cohere Command R": None,
}


def test_the_quota_corpus_matches_both_ways() -> None:
    from monitor.model_names import match_names

    matched = match_names(QUOTA_CORPUS, QUOTA_IDS)
    assert {name: matched.get(name) for name in QUOTA_CORPUS} == QUOTA_CORPUS


def test_a_quota_for_an_unseen_model_does_not_take_its_neighbour() -> None:
    from monitor.model_names import match_names

    # Only Claude 3.5 Haiku is seen: "Claude 3 Haiku" fits its words too, but the 3.5 quota
    # fits better and keeps it; the 3 Haiku quota stays unmatched.
    seen = ["anthropic.claude-3-5-haiku-20241022-v1:0"]
    names = ["Anthropic Claude 3 Haiku", "Anthropic Claude 3.5 Haiku"]
    assert match_names(names, seen) == {"Anthropic Claude 3.5 Haiku": seen[0]}
    # Alone, the one-way matcher would have taken it: the reason for the check both ways.
    assert match_model("Anthropic Claude 3 Haiku", seen) == seen[0]


# -- Cost Explorer usage types: region code and token kind are parsed by monitor.billing, the
# model part goes through the same matcher as quota names.

USAGE_TYPE_IDS = [
    *IDS,
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "openai.gpt-oss-120b-1:0",
    "amazon.nova-micro-v1:0",
]


@pytest.mark.parametrize(
    ("usage_type", "region", "kind", "expected"),
    [
        ("USE1-Claude3Haiku-input-tokens", "USE1", "input", IDS[0]),
        ("USW2-Claude3.5Haiku-output-tokens", "USW2", "output", IDS[1]),
        ("EUC1-Claude4.5Haiku-cache-read-input-token-count", "EUC1", "cache_read", IDS[2]),
        ("APN1-Claude4.5Sonnet-cache-write-input-token-count", "APN1", "cache_write", IDS[3]),
        ("USE1-ClaudeSonnet4-input-tokens", "USE1", "input", IDS[4]),
        ("USE1-Claude4.6Sonnet-input-tokens", "USE1", "input", None),  # no such id seen
        ("USE2-NovaLite-input-tokens", "USE2", "input", "amazon.nova-lite-v1:0"),
        ("CAN1-NovaMicro-output-tokens", "CAN1", "output", "amazon.nova-micro-v1:0"),
        ("USE1-Llama3.1-70B-Instruct-output-tokens", "USE1", "output", IDS[7]),
        ("USE1-gpt-oss-120b-mantle-input-tokens-standard", "USE1", "input", USAGE_TYPE_IDS[-2]),
        ("USE1-gpt-oss-120b-mantle-output-tokens-standard", "USE1", "output", USAGE_TYPE_IDS[-2]),
        ("Claude3Haiku-input-tokens", None, "input", IDS[0]),  # no region code
        ("USE1-MistralLarge-input-tokens", "USE1", "input", None),
        ("USE1-Nova-input-tokens", "USE1", "input", None),  # Lite, Micro and Pro tie
        ("USE1-ProvisionedThroughput-ModelUnits", "USE1", "other", None),
        ("USE1-KnowledgeBase-Retrieval-Requests", "USE1", "other", None),
    ],
)
def test_usage_types_split_into_region_kind_and_model(
    usage_type: str, region: str | None, kind: str, expected: str | None
) -> None:
    from monitor.billing import UsageTypeMap, parse_usage_type

    parsed = parse_usage_type(usage_type)
    assert (parsed.region_code, parsed.kind) == (region, kind)
    assert UsageTypeMap(USAGE_TYPE_IDS).model_for(parsed) == expected


def test_mantle_usage_types_are_marked_and_keep_their_tier() -> None:
    from monitor.billing import parse_usage_type

    parsed = parse_usage_type("USE1-gpt-oss-120b-mantle-input-tokens-standard")
    assert parsed.mantle and parsed.model_part == "gpt-oss-120b" and parsed.variant == "standard"
    assert not parse_usage_type("USE1-Claude3Haiku-input-tokens").mantle


def test_configured_usage_types_win_over_the_matcher() -> None:
    from monitor.billing import UsageTypeMap, parse_usage_type

    mapping = UsageTypeMap(
        USAGE_TYPE_IDS,
        {"USE1-Nova-input-tokens": "amazon.nova-pro-v1:0", "USE1-Claude3Haiku-*": "my.haiku"},
    )
    assert mapping.model_for(parse_usage_type("USE1-Nova-input-tokens")) == "amazon.nova-pro-v1:0"
    assert mapping.model_for(parse_usage_type("USE1-Claude3Haiku-output-tokens")) == "my.haiku"
    # Anything else still goes through the matcher.
    assert mapping.model_for(parse_usage_type("USE2-NovaLite-input-tokens")) == (
        "amazon.nova-lite-v1:0"
    )

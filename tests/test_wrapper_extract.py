"""Token counts from headers, usage objects and invocation metrics: the plain values Bedrock
sends, and the odd ones a proxy or a new model might, which must be read or refused, never
guessed."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.awsrequest import HeadersDict

from monitor.wrapper.extract import (
    Counts,
    counts_from_body,
    counts_from_converse_usage,
    counts_from_headers,
    counts_from_invocation_metrics,
)


@pytest.mark.parametrize("make", [dict, HeadersDict])
def test_headers(make: Any) -> None:
    headers = make(
        {
            "x-amzn-bedrock-input-token-count": "120",
            "x-amzn-bedrock-output-token-count": "7",
            "x-amzn-bedrock-cache-read-input-token-count": "30",
        }
    )
    assert counts_from_headers(headers) == Counts(120, 7, 30, 0)
    assert counts_from_headers(make({"content-type": "application/json"})) is None
    assert counts_from_headers(make({"x-amzn-bedrock-output-token-count": "3"})) == Counts(0, 3)


def test_headers_that_are_not_plain_numbers() -> None:
    assert counts_from_headers({"x-amzn-bedrock-input-token-count": " 12 "}) == Counts(12)
    for bad in ("-1", "1.5", "many"):
        with pytest.raises(ValueError):
            counts_from_headers({"x-amzn-bedrock-input-token-count": bad})


def test_converse_usage() -> None:
    usage = {"inputTokens": 40, "outputTokens": 12, "totalTokens": 60, "cacheReadInputTokens": 8}
    assert counts_from_converse_usage(usage) == Counts(40, 12, 8, 0)
    # The older spelling of the cache fields.
    assert counts_from_converse_usage(
        {"inputTokens": 1, "outputTokens": 2, "cacheWriteInputTokenCount": 9}
    ) == Counts(1, 2, 0, 9)
    assert counts_from_converse_usage({"outputTokens": 5}) == Counts(0, 5)
    assert counts_from_converse_usage({"inputTokens": None, "outputTokens": 5}) == Counts(0, 5)
    assert counts_from_converse_usage({"totalTokens": 5}) is None
    assert counts_from_converse_usage(None) is None
    assert counts_from_converse_usage([1, 2]) is None


@pytest.mark.parametrize("bad", [-1, 2.5, True, "7x", [3]])
def test_usage_values_that_are_not_counts_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        counts_from_converse_usage({"inputTokens": 1, "outputTokens": bad})
    with pytest.raises((ValueError, TypeError)):
        counts_from_invocation_metrics({"inputTokenCount": bad, "outputTokenCount": 1})


def test_whole_floats_and_numeric_strings_are_read() -> None:
    assert counts_from_converse_usage({"inputTokens": 4.0, "outputTokens": "6"}) == Counts(4, 6)


def test_invocation_metrics() -> None:
    metrics = {
        "inputTokenCount": 50,
        "outputTokenCount": 20,
        "invocationLatency": 812,
        "firstByteLatency": 120,
        "cacheReadInputTokenCount": 10,
        "cacheWriteInputTokenCount": 2,
    }
    assert counts_from_invocation_metrics(metrics) == Counts(50, 20, 10, 2)
    assert counts_from_invocation_metrics({"invocationLatency": 3}) is None
    assert counts_from_invocation_metrics("metrics") is None


def test_body_usage_of_each_provider() -> None:
    assert counts_from_body(
        {"usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 2}}
    ) == Counts(3, 4, 0, 2)
    assert counts_from_body({"usage": {"inputTokens": 5, "outputTokens": 6}}) == Counts(5, 6)
    assert counts_from_body({"usage": {"prompt_tokens": 7, "completion_tokens": 8}}) == Counts(7, 8)
    assert counts_from_body({"prompt_token_count": 9, "generation_token_count": 10}) == Counts(
        9, 10
    )
    assert counts_from_body(
        {"inputTextTokenCount": 11, "results": [{"tokenCount": 4}, {"tokenCount": 5}]}
    ) == Counts(11, 9)
    assert counts_from_body(
        {"meta": {"billed_units": {"input_tokens": 1, "output_tokens": 2}}}
    ) == (Counts(1, 2))
    assert counts_from_body({"generation": "text only"}) is None

"""Token counts as Bedrock reports them: response headers, body ``usage`` fields, stream events.

Pure functions over already-decoded values; each returns ``None`` when its source has no count
rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEADER_INPUT = "x-amzn-bedrock-input-token-count"
HEADER_OUTPUT = "x-amzn-bedrock-output-token-count"
HEADER_CACHE_READ = "x-amzn-bedrock-cache-read-input-token-count"
HEADER_CACHE_WRITE = "x-amzn-bedrock-cache-write-input-token-count"
HEADER_REQUEST_ID = "x-amzn-requestid"

METRICS_KEY = "amazon-bedrock-invocationMetrics"

THROTTLE_CODES = frozenset(
    {"ThrottlingException", "throttlingException", "TooManyRequestsException"}
)


@dataclass(slots=True)
class Counts:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


def _int(value: Any) -> int:
    """A count from JSON or a header; anything else (bool, float, negative) is not a count."""
    if isinstance(value, bool):
        raise ValueError("boolean is not a token count")
    number = int(value)
    if number < 0 or (isinstance(value, float) and number != value):
        raise ValueError(f"not a token count: {value!r}")
    return number


def _opt(mapping: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return _int(value)
    return 0


def _counts(*values: Any) -> Counts:
    """Counts from values that are not all plain non-negative ints: each one checked."""
    return Counts(*(0 if value is None else _int(value) for value in values))


# The three functions below run once per Bedrock call inside the caller's process: the common
# case (plain non-negative numbers) is handled inline, and only anything else goes through the
# checks of _int. A function call per value costs more than the check itself.


def counts_from_headers(headers: Mapping[str, str]) -> Counts | None:
    """InvokeModel's ``x-amzn-bedrock-*`` headers (lower-cased names, or a case-insensitive
    mapping)."""
    input_tokens = headers.get(HEADER_INPUT)
    output_tokens = headers.get(HEADER_OUTPUT)
    if input_tokens is None and output_tokens is None:
        return None
    cache_read = headers.get(HEADER_CACHE_READ) or "0"
    cache_write = headers.get(HEADER_CACHE_WRITE) or "0"
    input_tokens = input_tokens or "0"
    output_tokens = output_tokens or "0"
    if (
        input_tokens.isdecimal()
        and output_tokens.isdecimal()
        and cache_read.isdecimal()
        and cache_write.isdecimal()
    ):
        return Counts(int(input_tokens), int(output_tokens), int(cache_read), int(cache_write))
    return _counts(input_tokens, output_tokens, cache_read, cache_write)


def counts_from_converse_usage(usage: Any) -> Counts | None:
    """Converse ``usage`` and ConverseStream ``metadata.usage`` (inputTokens excludes cache)."""
    if type(usage) is not dict and not isinstance(usage, Mapping):
        return None
    get = usage.get
    input_tokens = get("inputTokens")
    output_tokens = get("outputTokens")
    if input_tokens is None and output_tokens is None:
        return None
    cache_read = get("cacheReadInputTokens")
    if cache_read is None:
        cache_read = get("cacheReadInputTokenCount", 0)
    cache_write = get("cacheWriteInputTokens")
    if cache_write is None:
        cache_write = get("cacheWriteInputTokenCount", 0)
    return _plain_counts(input_tokens, output_tokens, cache_read, cache_write)


def counts_from_invocation_metrics(metrics: Any) -> Counts | None:
    """The ``amazon-bedrock-invocationMetrics`` object of a stream's last chunk."""
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        return None
    get = metrics.get
    input_tokens = get("inputTokenCount")
    output_tokens = get("outputTokenCount")
    if input_tokens is None and output_tokens is None:
        return None
    return _plain_counts(
        input_tokens,
        output_tokens,
        get("cacheReadInputTokenCount", 0),
        get("cacheWriteInputTokenCount", 0),
    )


def _plain_counts(
    input_tokens: Any, output_tokens: Any, cache_read: Any, cache_write: Any
) -> Counts:
    if (
        type(input_tokens) is int
        and type(output_tokens) is int
        and type(cache_read) is int
        and type(cache_write) is int
        and input_tokens >= 0
        and output_tokens >= 0
        and cache_read >= 0
        and cache_write >= 0
    ):
        return Counts(input_tokens, output_tokens, cache_read, cache_write)
    return _counts(input_tokens, output_tokens, cache_read, cache_write)


def counts_from_body(doc: Any) -> Counts | None:
    """An InvokeModel response body's own usage fields, for the providers that have them."""
    if not isinstance(doc, Mapping):
        return None
    usage = doc.get("usage")
    if isinstance(usage, Mapping):
        if "input_tokens" in usage or "output_tokens" in usage:  # Anthropic Messages
            return Counts(
                input_tokens=_opt(usage, "input_tokens"),
                output_tokens=_opt(usage, "output_tokens"),
                cache_read_input_tokens=_opt(usage, "cache_read_input_tokens"),
                cache_write_input_tokens=_opt(usage, "cache_creation_input_tokens"),
            )
        if "inputTokens" in usage or "outputTokens" in usage:  # Amazon Nova
            return counts_from_converse_usage(usage)
        if "prompt_tokens" in usage or "completion_tokens" in usage:  # OpenAI-style, AI21
            return Counts(
                input_tokens=_opt(usage, "prompt_tokens"),
                output_tokens=_opt(usage, "completion_tokens"),
            )
    if "prompt_token_count" in doc or "generation_token_count" in doc:  # Meta Llama
        return Counts(
            input_tokens=_opt(doc, "prompt_token_count"),
            output_tokens=_opt(doc, "generation_token_count"),
        )
    if "inputTextTokenCount" in doc:  # Amazon Titan text and embeddings
        results = doc.get("results")
        output = 0
        if isinstance(results, list):
            output = sum(_opt(r, "tokenCount") for r in results if isinstance(r, Mapping))
        return Counts(input_tokens=_opt(doc, "inputTextTokenCount"), output_tokens=output)
    meta = doc.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("billed_units"), Mapping):  # Cohere
        billed = meta["billed_units"]
        return Counts(
            input_tokens=_opt(billed, "input_tokens"),
            output_tokens=_opt(billed, "output_tokens"),
        )
    return None


def status_for_error(http_status: int, error_code: str | None) -> str:
    """The record status of a failed call."""
    if error_code in THROTTLE_CODES or http_status == 429:
        return "throttled"
    if 400 <= http_status < 500:
        return "client_error"
    return "server_error"


# The request's output-token limit under each provider's name (Anthropic and Mistral
# ``max_tokens``, Nova ``max_new_tokens`` or ``maxTokens``, Titan ``maxTokenCount``, Llama
# ``max_gen_len``, older Claude ``max_tokens_to_sample``), found anywhere in the body. A quoted key
# inside a prompt is escaped (\"max_tokens\") and so not matched.
_MAX_TOKENS_KEY = re.compile(
    rb'"max(?:_tokens|Tokens|_new_tokens|TokenCount|_gen_len|_tokens_to_sample)"\s*:\s*(\d{1,9})\b'
)
# Bodies put the limit next to the prompt, before or after it: a big body is searched only near
# its two ends (a search through a 100 KB prompt costs more than decoding it).
_SEARCH_WHOLE_BYTES = 32 * 1024
_SEARCH_END_BYTES = 4 * 1024


def requested_max_tokens(operation: str, params: Mapping[str, Any]) -> int | None:
    """The output tokens a request asks for at most: Converse's ``inferenceConfig.maxTokens``
    or the InvokeModel body's limit; None when the request sets none (Bedrock then reserves
    the model's maximum), when the body is not at hand (a file object), or when a body over
    32 KB has it neither in its first nor in its last 4 KB."""
    if operation.startswith("Converse"):
        config = params.get("inferenceConfig")
        value = config.get("maxTokens") if isinstance(config, Mapping) else None
        return value if type(value) is int and value >= 0 else None
    body = params.get("body")
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if not isinstance(body, bytes | bytearray):
        return None
    if len(body) <= _SEARCH_WHOLE_BYTES:
        found = _MAX_TOKENS_KEY.search(body)
    else:
        found = _MAX_TOKENS_KEY.search(body, 0, _SEARCH_END_BYTES) or _MAX_TOKENS_KEY.search(
            body, len(body) - _SEARCH_END_BYTES
        )
    return int(found.group(1)) if found else None
